"""Deterministic JSON values from a JSON Schema: what the offline model and the fake provider answer.

Pure code (no litellm), shared by `durapipe.adapters._offline` and `durapipe.testing._fake_provider`.
"""

from __future__ import annotations

import hashlib
import math
import operator
import random
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

_WORD_RE: Final = re.compile(r"[^\W_][\w'-]*")
_MAX_REFS: Final = 64  # $ref expansions on one path; more means recursion without an exit
_DEFAULT_ITEMS: Final = 3
# Values one sample may build. A spec comes from any client, and a schema of a few lines can ask
# for more than any memory holds (list[list[list[text, 1000], 1000], 1000]: a billion strings;
# 40 structures, each with two fields of the next: 2^40 objects) while the sampler holds its
# worker's event loop. A real answer's size is bounded by its output tokens; this one by this.
MAX_VALUES: Final = 100_000


class LargeSample(Exception):
    """A sample went past the smaller limit its caller gave (see `Sampler`): the caller builds it
    elsewhere, off its event loop."""


_STOPWORDS: Final = frozenset(
    (
        *("a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in"),
        *("is", "it", "its", "of", "on", "or", "that", "the", "this", "to", "was", "were", "will"),
        *("with", "you", "your", "i", "we", "our", "their", "them", "they", "he", "she", "his"),
        *("her", "which", "what", "who"),
    )
)
_FORMATS: Final[dict[str, Callable[[random.Random], str]]] = {
    "date-time": lambda rng: f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z",
    "date": lambda rng: f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    "time": lambda rng: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
    "duration": lambda rng: f"PT{rng.randint(1, 59)}M",
    "email": lambda rng: f"offline{rng.randint(1, 99)}@example.com",
    "uri": lambda rng: f"https://example.com/offline/{rng.randint(1, 99)}",
    "url": lambda rng: f"https://example.com/offline/{rng.randint(1, 99)}",
    "hostname": lambda rng: "offline.example.com",
    "ipv4": lambda rng: f"192.0.2.{rng.randint(1, 254)}",
    "ipv6": lambda rng: f"2001:db8::{rng.randint(1, 0xFFFF):x}",
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
}


def sample_from_schema(schema: Mapping[str, Any], seed_text: str) -> Any:
    """A deterministic JSON value that validates against a JSON Schema.

    Every property of every object is filled in. Strings are short readable text built from the
    property name and words of ``seed_text`` (``"claim 1: council approved new bridge"``), unless an
    ``enum``, ``const`` or known ``format`` decides them.

    Supported: ``type`` (single or a list such as ``["string", "null"]``), ``properties``,
    ``required``, ``additionalProperties``, ``enum``, ``const``, ``minLength``/``maxLength``,
    ``format`` (date-time, date, time, duration, email, uri, uuid, ipv4, ipv6, hostname),
    ``minimum``/``maximum``/``exclusiveMinimum``/``exclusiveMaximum``/``multipleOf``, ``items``,
    ``prefixItems``, ``minItems``/``maxItems``/``uniqueItems``, ``$ref`` (JSON pointers into the
    root, e.g. ``#/$defs/Claim`` or ``#/definitions/Claim``), ``anyOf``/``oneOf`` (the first
    non-null branch), ``allOf`` (merged). ``pattern`` is not supported.

    Args:
        schema: The JSON Schema; ``$ref`` pointers resolve against it.
        seed_text: Text the value is derived from: it seeds the choices and supplies the words.

    Returns:
        The sampled value: a dict, list, str, int, float, bool or None.

    Raises:
        ValueError: A ``$ref`` that does not point inside ``schema``.
    """
    return Sampler(schema, rng_for(seed_text), words_of(seed_text)).sample(schema)


class Sampler:
    """One walk over a schema; holds the root for ``$ref`` and per-label counters for strings.

    ``path`` is the ``$ref`` pointers being expanded above the current node. Once one of them
    repeats, the schema is recursive and the walk is "deep": arrays shrink to ``minItems`` and
    nullable values become null, so every recursive schema that has a finite instance gets one.
    """

    def __init__(
        self,
        root: Mapping[str, Any],
        rng: random.Random,
        words: Sequence[str],
        limit: int = MAX_VALUES,
    ) -> None:
        self._root = root
        self._limit = min(limit, MAX_VALUES)
        self._rng = rng
        self._words = list(words) or ["offline"]
        self._counters: dict[str, int] = {}
        self._values = 0

    def sample(self, schema: Any, label: str = "value", path: tuple[str, ...] = ()) -> Any:
        """A value for ``schema``; ``label`` names it in generated text.

        Raises:
            ValueError: the schema's recursion never ends, or its value would hold more than
                `MAX_VALUES` values.
            LargeSample: its value would hold more than the ``limit`` given, below `MAX_VALUES`.
        """
        self._values += 1
        if self._values > self._limit:
            if self._limit < MAX_VALUES:
                raise LargeSample
            raise ValueError(
                f"a value of this schema holds more than {MAX_VALUES:,} values (lists and "
                "structures nested in each other multiply), more than the offline model builds"
            )
        if not isinstance(schema, Mapping):
            # `true` (or a missing schema) allows anything; `false` allows nothing, so no
            # choice is better than another there.
            return self._text(label, {})
        schema, refs = self._flatten(schema)
        path = (*path, *refs)
        if len(path) > _MAX_REFS:
            raise ValueError("the schema's recursion never ends, so it has no finite instance")
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._rng.choice(schema["enum"])
        deep = len(set(path)) < len(path)
        branches = schema.get("anyOf") or schema.get("oneOf")
        if isinstance(branches, list) and branches:
            return self.sample(_pick_branch(branches, deep=deep), label, path)
        kind = _type_of(schema, deep=deep)
        if kind == "object":
            return self._object(schema, path, deep=deep)
        if kind == "array":
            return self._array(schema, label, path, deep=deep)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self._rng.random() < 0.5
        if kind == "null":
            return None
        return self._text(label, schema)

    def _flatten(self, schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[str]]:
        """The schema with ``$ref`` resolved and ``allOf`` merged in (siblings kept), and the refs."""
        refs: list[str] = []
        while "$ref" in schema or "allOf" in schema:
            merged: Mapping[str, Any] = {
                k: v for k, v in schema.items() if k not in ("$ref", "allOf")
            }
            parts: list[Mapping[str, Any]] = []
            if "$ref" in schema:
                ref = str(schema["$ref"])
                if ref in refs:  # a reference cycle with nothing in between
                    raise ValueError(f"$ref {ref!r} refers to itself")
                refs.append(ref)
                parts.append(self._resolve(ref))
            parts.extend(p for p in schema.get("allOf") or [] if isinstance(p, Mapping))
            for part in parts:
                merged = _merge(part, merged)
            schema = merged
        return schema, refs

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            raise ValueError(f"only local $ref pointers are supported, not {ref!r}")
        node: Any = self._root
        for raw in filter(None, ref[1:].split("/")):
            key = raw.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or key not in node:
                raise ValueError(f"$ref {ref!r} does not point inside the schema")
            node = node[key]
        if not isinstance(node, Mapping):
            raise ValueError(f"$ref {ref!r} does not point to a schema object")
        return node

    def _object(self, schema: Mapping[str, Any], path: tuple[str, ...], *, deep: bool) -> Any:
        props = schema.get("properties") or {}
        result = {name: self.sample(sub, name, path) for name, sub in props.items()}
        extra = schema.get("additionalProperties", True)
        if extra is False:
            return result
        # `required` may name properties it does not describe; they take the extra schema.
        for name in schema.get("required") or []:
            if name not in result:
                result[name] = self.sample(extra, name, path)
        wanted = 2 if not props and isinstance(extra, Mapping) and not deep else 0
        wanted = max(wanted, int(schema.get("minProperties", 0)))
        # A map type (``dict[str, X]``): entries keyed by prompt words.
        i = 0
        while len(result) < wanted:
            i += 1
            result.setdefault(f"{self._word(i)}_{i}", self.sample(extra, "value", path))
        return result

    def _array(
        self, schema: Mapping[str, Any], label: str, path: tuple[str, ...], *, deep: bool
    ) -> list[Any]:
        prefix = list(schema.get("prefixItems") or [])
        items = schema.get("items")
        if isinstance(items, list):  # the draft-4..2019 tuple form
            prefix, items = items, schema.get("additionalItems")
        low = int(schema.get("minItems", 0))
        if prefix:  # a tuple: exactly its positions when the bounds allow
            target = len(prefix)
        elif items is False:
            target = 0
        else:
            target = low if deep else _DEFAULT_ITEMS
        length = max(low, min(int(schema.get("maxItems", target)), target))
        item_label = _singular(label)
        values = [
            self.sample(prefix[i] if i < len(prefix) else items, item_label, path)
            for i in range(length)
        ]
        if schema.get("uniqueItems"):
            values = self._unique(values, items, item_label, path, low)
        return values

    def _unique(
        self, values: list[Any], items: Any, label: str, path: tuple[str, ...], low: int
    ) -> list[Any]:
        unique: list[Any] = []
        for value in values:
            for _ in range(20):  # resample collisions; a small enum may simply run out
                if value not in unique:
                    break
                value = self.sample(items, label, path)
            if value not in unique:
                unique.append(value)
        return unique if len(unique) >= low else values

    def _integer(self, schema: Mapping[str, Any]) -> int:
        low, high = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            return step * self._rng.randint(first, last) if first <= last else int(low)
        return self._rng.randint(int(low), int(high)) if low <= high else int(low)

    def _number(self, schema: Mapping[str, Any]) -> float | int:
        low, high = _bounds(schema, integer=False)
        step = _num(schema, "multipleOf")
        if step is not None and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            # Floating point makes most multiples of e.g. 0.1 fail an exact `x / step` check;
            # try a few and keep the first whose quotient is exactly whole.
            for _ in range(50 if first <= last else 0):
                value = round(self._rng.randint(first, last) * step, 12)
                if (value / step).is_integer() and _within(value, schema):
                    return value
        value = round(self._rng.uniform(low, high), 2)
        return value if _within(value, schema) else (low + high) / 2

    def _text(self, label: str, schema: Mapping[str, Any]) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt](self._rng)
        count = self._counters[label] = self._counters.get(label, 0) + 1
        start = self._rng.randrange(len(self._words))
        size = min(self._rng.randint(3, 6), len(self._words))
        phrase = " ".join(self._words[(start + i) % len(self._words)] for i in range(size))
        readable = label.replace("_", " ").strip() or "value"
        return _fit(f"{readable} {count}: {phrase}", schema, phrase)

    def _word(self, i: int) -> str:
        return re.sub(r"\W", "", self._words[i % len(self._words)]) or "key"


def _pick_branch(branches: list[Any], *, deep: bool) -> Any:
    """The ``anyOf``/``oneOf`` branch to follow: the first non-null one, or null to end recursion."""
    nulls = [b for b in branches if isinstance(b, Mapping) and b.get("type") == "null"]
    others = [b for b in branches if b not in nulls]
    if deep and nulls:
        return nulls[0]
    return others[0] if others else branches[0]


def _type_of(schema: Mapping[str, Any], *, deep: bool) -> str:
    """The one JSON type to produce for ``schema``."""
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [t for t in declared if t != "null"]
        # Deep in a recursive schema, null (when allowed) ends the recursion.
        if deep and "null" in declared:
            return "null"
        return str(non_null[0]) if non_null else "null"
    if isinstance(declared, str):
        return declared
    # Untyped schemas: infer from the keywords they use.
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` and ``extra`` combined; properties and required lists are unioned."""
    merged = {**base, **extra}
    if "properties" in base and "properties" in extra:
        merged["properties"] = {**base["properties"], **extra["properties"]}
    if "required" in base and "required" in extra:
        merged["required"] = list(dict.fromkeys([*base["required"], *extra["required"]]))
    return merged


def _bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[float, float]:
    """The inclusive ``[low, high]`` range allowed by the numeric keywords (default 1..100)."""
    low, high = _num(schema, "minimum"), _num(schema, "maximum")
    gap = 1 if integer else 0.01  # how far inside an exclusive bound to step
    exclusive_min, exclusive_max = (
        _num(schema, "exclusiveMinimum"),
        _num(schema, "exclusiveMaximum"),
    )
    if exclusive_min is not None:
        low = exclusive_min + gap if low is None else max(low, exclusive_min + gap)
    elif schema.get("exclusiveMinimum") is True and low is not None:  # draft 4: a flag
        low += gap
    if exclusive_max is not None:
        high = exclusive_max - gap if high is None else min(high, exclusive_max - gap)
    elif schema.get("exclusiveMaximum") is True and high is not None:
        high -= gap
    if integer:
        low = None if low is None else math.ceil(low)
        high = None if high is None else math.floor(high)
    # Open ends default to the range 1..100, or to 100 wide when the bound lies outside it.
    if low is None:
        low = 1 if high is None or high >= 1 else high - 100
    if high is None:
        high = 100 if low <= 100 else low + 100
    return low, high


def _within(value: float, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` meets the schema's numeric bounds (the numeric, draft-6+ spelling)."""
    checks: tuple[tuple[str, Callable[[float, float], bool]], ...] = (
        ("minimum", operator.ge),
        ("maximum", operator.le),
        ("exclusiveMinimum", operator.gt),
        ("exclusiveMaximum", operator.lt),
    )
    return all((bound := _num(schema, key)) is None or ok(value, bound) for key, ok in checks)


def _num(schema: Mapping[str, Any], key: str) -> float | None:
    """``schema[key]`` if it is a number (not a bool), else None."""
    value = schema.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def _fit(text: str, schema: Mapping[str, Any], filler: str) -> str:
    """``text`` padded to ``minLength`` and cut to ``maxLength``."""
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if isinstance(low, int):
        while len(text) < low:
            text = f"{text} {filler}"
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
        stripped = text.rstrip(" :")
        text = stripped if len(stripped) >= (low if isinstance(low, int) else 0) else text
    return text


def _singular(label: str) -> str:
    """A rough singular for an array's property name: ``claims`` -> ``claim``."""
    if label.endswith("ies") and len(label) > 4:
        return label[:-3] + "y"
    if label.endswith("s") and not label.endswith("ss") and len(label) > 3:
        return label[:-1]
    return "item" if label == "value" else label


def rng_for(seed_text: str) -> random.Random:
    # Our own generator: global `random` state would make answers depend on what else ran.
    return random.Random(int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "big"))


def words_of(text: str) -> list[str]:
    words = _WORD_RE.findall(text)
    content = [w.lower() for w in words if w.lower() not in _STOPWORDS]
    return content or [w.lower() for w in words]
