"""MTHDS template shorthands (``$name``, ``@name``, ``@?name``) expanded to durapipe's Jinja2.

The spec expands ``$x`` to ``{{ x|format() }}`` and ``@x`` to ``{{ x|tag("x") }}``, filters that
Pipelex registers. durapipe's template sandbox has neither, and needs none: ``$x`` becomes
``{{ x }}`` (inline) and ``@x`` a block with the variable's name around it, written out as plain
text, so the expanded prompt renders in the same sandbox as every other durapipe prompt.
"""

from __future__ import annotations

import re
from typing import Any

# A shorthand is not preceded by a word character (an e-mail address ``a@b.com`` stays as is), and
# its name starts with a letter or '_' (``$100`` and ``@2.0`` stay as is, as the spec requires).
_SHORTHAND = re.compile(
    r"(?<![\w@$])(?P<sigil>@\?|@|\$)(?P<path>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
)
_JINJA = re.compile(r"(\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\})", re.DOTALL)


# Pipelex's two prompt filters written out in raw Jinja2: `x|format()` is the value itself, and
# `x|tag("name")` the value as a tagged block, as the shorthands expand.
_FORMAT = re.compile(r"\{\{\s*(?P<expr>[^{}|]+?)\s*\|\s*format(?:\(\s*\))?\s*\}\}")
_TAG = re.compile(
    r"\{\{\s*(?P<expr>[^{}|]+?)\s*\|\s*tag(?:\(\s*[\"'](?P<name>[^\"']*)[\"']\s*\))?\s*\}\}"
)
TAG_STYLES = ("square_brackets", "xml", "ticks", "no_tag")
# MTHDS's `templating_style.text_format`: how `format()` (so `$x` and `@x`) writes a value. Plain
# and Markdown write it as it is (plain text is Markdown); HTML escapes it; JSON writes it as JSON.
TEXT_FORMATS = {"plain": "", "markdown": "", "html": " | e", "json": " | tojson"}


def expand(template: str, tag_style: str = "square_brackets", text_format: str = "plain") -> str:
    """The template with every shorthand expanded (raw Jinja2 in it is left untouched, except
    Pipelex's ``format`` and ``tag`` filters, written out the same way).

    ``tag_style`` (MTHDS's ``templating_style.tag_style``) says how an ``@name`` block is marked:
    ``[name]...[/name]`` (default), ``<name>...</name>``, ```` ```name ... ``` ```` or not at all.
    ``text_format`` (``templating_style.text_format``) says how a value is written (`TEXT_FORMATS`).

    Example:
        >>> expand("Write about $topic. Context: @doc")
        'Write about {{ topic }}. Context: \\n[doc]\\n{{ doc }}\\n[/doc]\\n'
    """
    # Split off Jinja2 blocks first so a `$` or `@` inside `{{ ... }}` is never rewritten.
    parts = _JINJA.split(template)
    writes = TEXT_FORMATS[text_format]
    return "".join(
        _filters(part, tag_style, writes) if index % 2 else _expand_text(part, tag_style, writes)
        for index, part in enumerate(parts)
    )


def _block(expr: str, name: str, tag_style: str, writes: str = "") -> str:
    value = "{{ " + expr + writes + " }}"
    if tag_style == "xml":
        return f"\n<{name}>\n{value}\n</{name}>\n"
    if tag_style == "ticks":
        return f"\n{name}:\n```\n{value}\n```\n"
    if tag_style == "no_tag":
        return value
    return f"\n[{name}]\n{value}\n[/{name}]\n"


def _filters(jinja: str, tag_style: str, writes: str = "") -> str:
    jinja = _FORMAT.sub(lambda m: "{{ " + m.group("expr").strip() + writes + " }}", jinja)
    return _TAG.sub(
        lambda m: _block(
            m.group("expr").strip(),
            m.group("name") or m.group("expr").strip(),
            tag_style,
            writes,
        ),
        jinja,
    )


def _expand_text(text: str, tag_style: str, writes: str = "") -> str:
    def replace(match: re.Match[str]) -> str:
        path = match.group("path")
        sigil = match.group("sigil")
        if sigil == "$":
            return "{{ " + path + writes + " }}"
        block = _block(path, path, tag_style, writes)
        if sigil == "@?":
            return "{% if " + path + " %}" + block + "{% endif %}"
        return block

    return _SHORTHAND.sub(replace, text)


# The fields the spec gives native concepts, which durapipe carries as the value itself: a Text is
# a string (`x.text`), a Number a number (`x.number`); a Page is durapipe's `{page, text}`, whose
# `text` is what MTHDS calls `text_and_images.text` (a Text, so `.text` once more).
_NATIVE_FIELDS = {
    "text": re.compile(r"\.text\b(?!\s*\()"),
    "number": re.compile(r"\.number\b(?!\s*\()"),
    "Page": re.compile(r"\.text_and_images\.text(?:\.text)?\b"),
}
# A list's content is `{"items": [...]}` in the CLI contract, and Pipelex's templates loop over
# `xs.items`: durapipe carries the list itself.
_LIST_ITEMS = re.compile(r"\.items\b(?!\s*\()")
_FOR = re.compile(
    r"\{%-?\s*for\s+(?P<item>\w+)\s+in\s+(?P<items>\w+)(?:\.items\b(?!\s*\())?\s*-?%\}"
)


def native_fields(template: str, types: dict[str, str]) -> str:
    """``template`` with the spec's native-concept fields read as durapipe carries them.

    ``types`` holds the durapipe type of each input; a list's ``xs.items`` is the list, and a
    ``{% for x in xs %}`` loop over a list input gives ``x`` the item type. Only Jinja2 parts
    change.

    Example:
        >>> native_fields("{{ tone.text }} / {{ n.number }}", {"tone": "text", "n": "number"})
        '{{ tone }} / {{ n }}'
    """
    known = dict(types)
    for loop in _FOR.finditer(template):
        items = known.get(loop.group("items"), "")
        if items.startswith("list[") and loop.group("item") not in known:
            known[loop.group("item")] = items[5:-1].split(",")[0].strip()
    template = _verdict_words(template, known)
    rewrites = _native_rewrites(known)
    if not rewrites:
        return template
    parts = _JINJA.split(template)
    for index in range(1, len(parts), 2):
        for pattern, replacement in rewrites:
            parts[index] = pattern.sub(replacement, parts[index])
    return "".join(parts)


def construct(fields: dict[str, Any], inputs: dict[str, str]) -> dict[str, Any]:
    """A PipeCompose's ``construct`` table as a compose pipe's ``build``: each template and each
    ``from`` path read as durapipe carries the values (``inputs``: the durapipe type of each)."""
    built: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict) and "template" in value:
            template = native_fields(expand(str(value["template"])), inputs)
            built[name] = {**value, "template": template}
        elif isinstance(value, dict) and "from" in value:
            built[name] = {**value, "from": native_path(str(value["from"]), inputs)}
        elif isinstance(value, dict):
            built[name] = construct(value, inputs)
        else:
            built[name] = value
    return built


def native_path(path: str, types: dict[str, str]) -> str:
    """A construct's ``from`` path with the native-concept fields read as `native_fields` reads
    them in a template (Pipelex resolves such a path on its content objects: ``summary.text``).

    Example:
        >>> native_path("pages.items", {"pages": "list[Page]"})
        'pages'
    """
    for pattern, replacement in _native_rewrites(types):
        path = pattern.sub(replacement, path)
    return path


def _native_rewrites(types: dict[str, str]) -> list[tuple[re.Pattern[str], str]]:
    """For each input with native fields, the pattern of its name and field, and what replaces it."""
    return [
        (
            re.compile(r"(?<![\w.])" + re.escape(name) + field.pattern),
            name + ".text" * (kind == "Page"),
        )
        for name, kind in types.items()
        if (field := _LIST_ITEMS if kind.startswith("list[") else _NATIVE_FIELDS.get(kind))
        is not None
    ]


# How Pipelex renders a verdict native written whole (its YesNoContent, ChoiceContent and
# RatingContent's plain text): not as the structure durapipe carries.
_VERDICT_WORDS = {
    "YesNo": "('yes' if {name}.yes_no else 'no')",
    "Choice": "{name}.choice",
    "Rating": "{name}.level",
}


def _verdict_words(template: str, types: dict[str, str]) -> str:
    """A YesNo, Choice or Rating written whole (``{{ verdict }}``, so ``$verdict`` and
    ``@verdict``) reads "yes" or "no", the option's key, the level's index."""
    for name, kind in types.items():
        if kind not in _VERDICT_WORDS:
            continue
        whole = re.compile(r"\{\{\s*" + re.escape(name) + r"\s*(?P<filters>\|[^{}]*?)?\s*\}\}")
        words = _VERDICT_WORDS[kind].format(name=name)

        def write(match: re.Match[str], words: str = words) -> str:
            filters = match.group("filters")
            return "{{ " + words + (" " + filters if filters else "") + " }}"

        template = whole.sub(write, template)
    return template


def variables(template: str) -> set[str]:
    """Root names a template uses through shorthands (raw Jinja2 variables not included)."""
    parts = _JINJA.split(template)
    return {
        match.group("path").split(".")[0]
        for index, part in enumerate(parts)
        if not index % 2
        for match in _SHORTHAND.finditer(part)
    }
