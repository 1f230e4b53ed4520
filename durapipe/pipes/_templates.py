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
import jinja2.meta
import jinja2.sandbox


class TemplateError(ValueError):
    """A template does not parse, uses an undefined name, or tried to escape the sandbox."""


@functools.cache
def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    return jinja2.sandbox.ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        loader=None,
    )


@functools.lru_cache(maxsize=1024)
def _compile(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"template syntax error on line {err.lineno}: {err.message}") from None


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
