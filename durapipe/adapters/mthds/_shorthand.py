"""MTHDS template shorthands (``$name``, ``@name``, ``@?name``) expanded to durapipe's Jinja2.

The spec expands ``$x`` to ``{{ x|format() }}`` and ``@x`` to ``{{ x|tag("x") }}``, filters that
Pipelex registers. durapipe's template sandbox has neither, and needs none: ``$x`` becomes
``{{ x }}`` (inline) and ``@x`` a block with the variable's name around it, written out as plain
text, so the expanded prompt renders in the same sandbox as every other durapipe prompt.
"""

from __future__ import annotations

import re

# A shorthand is not preceded by a word character (an e-mail address ``a@b.com`` stays as is), and
# its name starts with a letter or '_' (``$100`` and ``@2.0`` stay as is, as the spec requires).
_SHORTHAND = re.compile(
    r"(?<![\w@$])(?P<sigil>@\?|@|\$)(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
)
_JINJA = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.DOTALL)


def expand(template: str) -> str:
    """The template with every shorthand expanded (raw Jinja2 in it is left untouched).

    Example:
        >>> expand("Write about $topic. Context: @doc")
        'Write about {{ topic }}. Context: \\n[doc]\\n{{ doc }}\\n[/doc]\\n'
    """
    # Split off Jinja2 blocks first so a `$` or `@` inside `{{ ... }}` is never rewritten.
    parts = _JINJA.split(template)
    return "".join(part if index % 2 else _expand_text(part) for index, part in enumerate(parts))


def _expand_text(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        path = match.group("path")
        sigil = match.group("sigil")
        if sigil == "$":
            return "{{ " + path + " }}"
        block = f"\n[{path}]\n{{{{ {path} }}}}\n[/{path}]\n"
        if sigil == "@?":
            return "{% if " + path + " %}" + block + "{% endif %}"
        return block

    return _SHORTHAND.sub(replace, text)


def variables(template: str) -> set[str]:
    """Root names a template uses through shorthands (raw Jinja2 variables not included)."""
    parts = _JINJA.split(template)
    return {
        match.group("path").split(".")[0]
        for index, part in enumerate(parts)
        if not index % 2
        for match in _SHORTHAND.finditer(part)
    }
