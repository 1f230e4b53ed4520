"""Prompt templates: Jinja2 in a sandbox, with undefined names as errors.

The sandbox keeps a template from reaching Python internals (``__class__``, ``__globals__``, ...) and
the file system (no loader); `StrictUndefined` makes a missing variable an error instead of an empty
string sent to a paid model.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2
import jinja2.exceptions
import jinja2.lexer
import jinja2.meta
import jinja2.nodes
import jinja2.parser
import jinja2.sandbox

# Jinja's default globals (cycler, joiner, lipsum, namespace, ...) are not needed in a prompt and
# are the usual first step of a sandbox escape (``cycler.__init__.__globals__``): only these stay.
_GLOBALS = {"range": range}
_FILE_TAGS = (
    jinja2.nodes.Include,
    jinja2.nodes.Import,
    jinja2.nodes.FromImport,
    jinja2.nodes.Extends,
)


class TemplateError(ValueError):
    """A template does not parse, uses an undefined name, or tried to escape the sandbox."""


@functools.cache
def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        loader=None,
    )
    # Only what templates need: no `lipsum` (it draws random numbers, and condition expressions run
    # inside workflows, which must replay to the same value), no `cycler`/`joiner` objects to poke at.
    env.globals.clear()
    env.globals.update(_GLOBALS)
    return env


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> jinja2.Template:
    try:
        template = _environment().from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"template syntax error on line {err.lineno}: {err.message}") from None
    # Jinja chains the template's globals to the environment's (a ChainMap, walked twice per
    # render); the environment's never change after `_environment`, so a flat copy renders alike.
    template.globals = dict(template.globals)
    return template


def variables(source: str) -> set[str]:
    """The names a template reads from its context.

    Raises:
        TemplateError: the template does not parse.
    """
    try:
        ast = _environment().parse(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"template syntax error on line {err.lineno}: {err.message}") from None
    return set(jinja2.meta.find_undeclared_variables(ast))


def unsafe_constructs(source: str) -> list[str]:
    """What in a template reaches for Python internals or files, one sentence each.

    Refused before anything runs: attributes or keys starting with ``_`` (``__class__``,
    ``__globals__``, ``_TemplateReference__context``) and ``include``/``import``/``extends``, which
    would read files. The sandbox refuses the rest (e.g. ``'{0.__class__}'.format(x)``) at render.
    A template that does not parse yields nothing here: `variables` reports that.
    """
    try:
        ast = _environment().parse(source)
    except jinja2.TemplateSyntaxError:
        return []
    found: list[str] = []
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem, *_FILE_TAGS)):
        if isinstance(node, _FILE_TAGS):
            tag = type(node).__name__.lower().replace("fromimport", "from ... import")
            found.append(f"'{tag}' is not allowed in a template (templates cannot read files)")
            continue
        name = node.attr if isinstance(node, jinja2.nodes.Getattr) else _constant(node.arg)  # type: ignore[attr-defined]
        if isinstance(name, str) and name.startswith("_"):
            found.append(
                f"access to '{name}' is not allowed in a template (names starting with '_' "
                "reach Python internals)"
            )
    return found


def _constant(node: jinja2.nodes.Node) -> object:
    return node.value if isinstance(node, jinja2.nodes.Const) else None


def render(source: str, values: dict[str, Any]) -> str:
    """Render a template with ``values``.

    Raises:
        TemplateError: a name is undefined, or the template tried something the sandbox forbids.
    """
    template = _compile(source)
    try:
        return template.render(values)
    except jinja2.UndefinedError as err:
        raise TemplateError(f"template uses an undefined value: {err.message}") from None
    except jinja2.exceptions.SecurityError as err:
        raise TemplateError(f"template refused by the sandbox: {err}") from None
    except Exception as err:  # include without a loader, a bad format string, ...
        # Whatever a template does wrong fails its step with one sentence, never a traceback.
        raise TemplateError(f"template failed: {type(err).__name__}: {err}") from None


def _parse_expression(source: str) -> jinja2.nodes.Template:
    env = _environment()
    try:
        # How jinja2's own compile_expression parses: the expression inside a variable block.
        parser = jinja2.parser.Parser(env, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise jinja2.TemplateSyntaxError(
                f"unexpected {jinja2.lexer.describe_token(token)}", token.lineno
            )
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"expression syntax error: {err.message}") from None
    template = jinja2.nodes.Template([jinja2.nodes.Output([expr])], lineno=1)
    template.set_environment(env)
    return template


def expression_variables(source: str) -> set[str]:
    """The names an expression (``amount > 1000``, no braces) reads from its context.

    Raises:
        TemplateError: the expression does not parse.
    """
    return set(jinja2.meta.find_undeclared_variables(_parse_expression(source)))


@functools.lru_cache(maxsize=1024)
def _compile_expression(source: str) -> Any:
    _parse_expression(source)  # a clear TemplateError for a syntax error
    return _environment().compile_expression(source, undefined_to_none=False)


def evaluate(source: str, values: dict[str, Any]) -> Any:
    """The value of an expression over ``values``, in the same sandbox as templates.

    Deterministic for the same ``values`` (no clock, no randomness), so a workflow may call it.

    Raises:
        TemplateError: the expression does not parse, reads an undefined name, or tried something
            the sandbox forbids.
    """
    expression = _compile_expression(source)
    try:
        value = expression(**values)
    except jinja2.UndefinedError as err:
        raise TemplateError(f"expression uses an undefined value: {err.message}") from None
    except jinja2.exceptions.SecurityError as err:
        raise TemplateError(f"expression refused by the sandbox: {err}") from None
    if isinstance(value, jinja2.Undefined):
        raise TemplateError("expression has no value (an undefined name or field)")
    return value
