"""Prompt templates: Jinja2 in a bounded sandbox, with undefined names as errors.

The sandbox keeps a template from reaching Python internals (``__class__``, ``__globals__``, ...) and
the file system (no loader), and bounds the work, memory and time a render takes (see
`durapipe.spec._sandbox`); `StrictUndefined` makes a missing variable an error instead of an empty
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

from durapipe.spec._sandbox import (
    MAX_OUTPUT,
    TOO_DEEP,
    BoundedEnvironment,
    TemplateError,
    bounded_call,
    bounded_render,
    check_nesting,
    environment,
)

__all__ = [
    "TemplateError",
    "evaluate",
    "expression_variables",
    "paths",
    "render",
    "unsafe_constructs",
    "variables",
]

_FILE_TAGS = (
    jinja2.nodes.Include,
    jinja2.nodes.Import,
    jinja2.nodes.FromImport,
    jinja2.nodes.Extends,
)


@functools.cache
def _environment() -> BoundedEnvironment:
    return environment()


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
    return set(jinja2.meta.find_undeclared_variables(_parse(source)))


def _parse(source: str) -> jinja2.nodes.Template:
    try:
        return _environment().parse(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"template syntax error on line {err.lineno}: {err.message}") from None


def paths(source: str) -> set[str]:
    """The dotted paths a template reads from its context, each as far as it goes: ``{{ doc.cover
    }}`` reads ``doc.cover`` (not ``doc``), ``{{ photo | e }}`` reads ``photo``.

    Raises:
        TemplateError: the template does not parse.
    """
    found: set[str] = set()
    _collect_paths(_parse(source), found)
    return found


def _collect_paths(node: jinja2.nodes.Node, found: set[str]) -> None:
    attributes: list[str] = []
    while isinstance(node, jinja2.nodes.Getattr):
        attributes.append(node.attr)
        node = node.node
    if isinstance(node, jinja2.nodes.Name):
        if node.ctx == "load":
            found.add(".".join([node.name, *reversed(attributes)]))
        return
    for child in node.iter_child_nodes():
        _collect_paths(child, found)


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


def render(source: str, values: dict[str, Any], *, seconds: float | None = None) -> str:
    """Render a template with ``values``, within the sandbox's bounds.

    ``seconds`` adds a wall-clock budget; leave it None inside a workflow (the operation budget
    alone is deterministic, so a replay renders alike).

    Raises:
        TemplateError: a name is undefined, the template went past a bound, or it tried something
            the sandbox forbids.
    """
    text = _plain_render(source, values)
    if text is not None:
        return text
    template = _compile(source)
    try:
        return bounded_render(template, values, seconds)
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("template recursed too deeply") from None
    except MemoryError:
        raise TemplateError("template ran out of memory") from None
    except jinja2.UndefinedError as err:
        raise TemplateError(f"template uses an undefined value: {err.message}") from None
    except jinja2.exceptions.SecurityError as err:
        raise TemplateError(f"template refused by the sandbox: {err}") from None
    except Exception as err:  # include without a loader, a bad format string, ...
        # Whatever a template does wrong fails its step with one sentence, never a traceback.
        raise TemplateError(f"template failed: {type(err).__name__}: {err}") from None


# A piece of a plain template: literal text, or the name of a value put in as it is.
_Piece = tuple[bool, str]


@functools.lru_cache(maxsize=1024)
def _plain_pieces(source: str) -> tuple[_Piece, ...] | None:
    """A template made only of literal text and ``{{ name }}`` outputs, as ``(is_name, text)``
    pieces; None for any other template (filters, tags, expressions) or one that does not parse.

    The pieces are what the compiled template yields, in order (the parser has already applied
    whitespace control, raw blocks, comments and the trailing newline).
    """
    try:
        tree = _environment().parse(source)
    except jinja2.TemplateSyntaxError:
        return None
    pieces: list[_Piece] = []
    for node in tree.body:
        if not isinstance(node, jinja2.nodes.Output):
            return None
        for child in node.nodes:
            if isinstance(child, jinja2.nodes.TemplateData):
                pieces.append((False, child.data))
            elif (
                isinstance(child, jinja2.nodes.Name)
                and child.ctx == "load"
                and child.name != "self"  # Jinja's reference to the template, not a value
            ):
                pieces.append((True, child.name))
            else:
                return None
    # Past a few pieces the full render's operation budget (one per piece) may apply: it decides.
    return tuple(pieces) if len(pieces) <= MAX_PLAIN_PIECES else None


# Pieces a plain template may have and skip the full render: far below `MAX_OPERATIONS`, whose
# bound (one operation per output piece) the full render then enforces.
MAX_PLAIN_PIECES = 1000


def _plain_render(source: str, values: dict[str, Any]) -> str | None:
    """What rendering ``source`` gives when it is plain text and names of string values, without
    running the template (a Jinja context, a generator, the sandbox's budget: most of a render's
    cost, for the most common prompt); None when it is anything else, to render it in full.

    The same text as the sandbox: a name reads ``values`` first, and Jinja outputs ``str(value)``,
    the value itself for a ``str``. A name with another type of value, or none (an error to word),
    output past `MAX_OUTPUT`, or keys Jinja would refuse take the full render.
    """
    pieces = _plain_pieces(source)
    if pieces is None or not all(isinstance(key, str) for key in values):
        return None
    parts = []
    produced = 0
    for is_name, text in pieces:
        if is_name:
            value = values.get(text)
            if type(value) is not str:
                return None
            text = value
        produced += len(text)
        if produced > MAX_OUTPUT:
            return None  # the full render stops there, and words it: nothing is joined
        parts.append(text)
    return "".join(parts)


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
        check_nesting(expr)
    except RecursionError:
        raise TemplateError(f"expression syntax error: {TOO_DEEP}") from None
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
    try:
        return _environment().compile_expression(source, undefined_to_none=False)
    except jinja2.TemplateSyntaxError as err:  # nested past what Python compiles
        raise TemplateError(f"expression syntax error: {err.message}") from None


def evaluate(source: str, values: dict[str, Any]) -> Any:
    """The value of an expression over ``values``, in the same sandbox as templates.

    Deterministic for the same ``values`` (no clock, no randomness), so a workflow may call it.

    Raises:
        TemplateError: the expression does not parse, reads an undefined name, or tried something
            the sandbox forbids.
    """
    expression = _compile_expression(source)
    try:
        value = bounded_call(lambda: expression(**values))
    except TemplateError:
        raise
    except RecursionError:
        raise TemplateError("expression recursed too deeply") from None
    except jinja2.UndefinedError as err:
        raise TemplateError(f"expression uses an undefined value: {err.message}") from None
    except jinja2.exceptions.SecurityError as err:
        raise TemplateError(f"expression refused by the sandbox: {err}") from None
    except Exception as err:  # a bad operand, a division by zero, ...
        raise TemplateError(f"expression failed: {type(err).__name__}: {err}") from None
    if isinstance(value, jinja2.Undefined):
        raise TemplateError("expression has no value (an undefined name or field)")
    return value
