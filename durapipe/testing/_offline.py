"""An embedded offline LLM: ``durapipe/offline``, a litellm custom provider that never leaves the process.

It answers every chat completion locally and deterministically, so pipelines, examples and tests
run with no network, no API key and no cost::

    from durapipe.testing._offline import register_offline_model

    register_offline_model()
    response = await litellm.acompletion(
        model="durapipe/offline",
        messages=[{"role": "user", "content": "Summarise the council meeting."}],
        num_retries=0,
    )
    response.choices[0].message.content  # "Offline answer: Summarise the council meeting."

What it answers:
    * No ``response_format`` (or ``{"type": "text"}``): ``"Offline answer: "`` followed by the first
      dozen words of the last user message.
    * ``{"type": "json_schema", "json_schema": {"schema": ...}}``: JSON text of an instance that
      validates against the schema, built by `sample_from_schema`.
    * ``{"type": "json_object"}``: a small JSON object.

    The same messages and ``response_format`` always give the same answer: the only randomness is a
    ``random.Random`` seeded from the SHA-256 of both. ``stream=True`` works too: the whole answer
    arrives as one chunk.

Usage and cost:
    ``usage`` counts tokens as words and punctuation marks (``\\w+|[^\\w\\s]``) over all message
    contents (prompt) and over the answer (completion), at least 1 each. The model is registered
    with a price of zero, so ``litellm.completion_cost(response)`` is ``0.0``.

Scripted delay:
    Pass ``offline_delay=<seconds>`` to ``litellm.acompletion``/``litellm.completion`` and the model
    waits that long before answering (``asyncio.sleep`` in the async path, so it can be cancelled).
    litellm hands keyword arguments it does not know to a custom provider in ``optional_params``,
    so that is where the handler reads it (even with ``litellm.drop_params = True``). The
    environment variable ``DURAPIPE_OFFLINE_DELAY`` is the default when the argument is absent.

Call ledger:
    When the environment variable ``DURAPIPE_OFFLINE_LEDGER`` names a file, every call appends one
    JSON line to it -- ``ts``, ``pid``, ``model``, ``last_user`` (first 200 characters) and
    ``metadata`` (the ``metadata=`` dict given to litellm, which litellm passes to the handler in
    ``litellm_params``) -- with a single ``os.write`` on an ``O_APPEND`` descriptor, so calls from
    concurrent processes never interleave. The line is written when the call arrives, before any
    delay, so a call cut short by a killed worker still counts, as it would at a real provider.
    Read it back with `read_offline_ledger`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import operator
import os
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

# litellm fetches its price list from the internet at import time unless told to use the local copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import litellm
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, HTTPHandler
from litellm.llms.custom_llm import CustomLLM
from litellm.types.utils import GenericStreamingChunk

__all__ = [
    "DELAY_ENV",
    "LEDGER_ENV",
    "OFFLINE_MODEL",
    "PROVIDER",
    "OfflineModel",
    "read_offline_ledger",
    "register_offline_model",
    "sample_from_schema",
]

OFFLINE_MODEL: Final = "durapipe/offline"
"""The model string to pass to litellm."""

PROVIDER: Final = "durapipe"
"""The litellm provider name: the part of the model string before the slash."""
DELAY_ENV: Final = "DURAPIPE_OFFLINE_DELAY"
"""Environment variable: default delay in seconds before every offline answer."""
LEDGER_ENV: Final = "DURAPIPE_OFFLINE_LEDGER"
"""Environment variable: path of a JSON-lines file that records every offline call."""

_PRICING: Final[dict[str, Any]] = {
    "input_cost_per_token": 0.0,
    "output_cost_per_token": 0.0,
    # Explicit cache prices keep litellm from warning that they default to 0 for an unknown model.
    "cache_creation_input_token_cost": 0.0,
    "cache_read_input_token_cost": 0.0,
    "litellm_provider": PROVIDER,
    "mode": "chat",
    "max_tokens": 8192,
    "max_input_tokens": 128000,
    "max_output_tokens": 8192,
}
_TOKEN_RE: Final = re.compile(r"\w+|[^\w\s]")
_WORD_RE: Final = re.compile(r"[^\W_][\w'-]*")
_PLAIN_WORDS: Final = 12
_MAX_REFS: Final = 64  # $ref expansions on one path; more means recursion without an exit
_DEFAULT_ITEMS: Final = 3
_LEDGER_TEXT: Final = 200
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


# --------------------------------------------------------------------------------------------------
# Schema sampling (pure: no litellm)
# --------------------------------------------------------------------------------------------------


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
    return _Sampler(schema, _rng_for(seed_text), _words_of(seed_text)).sample(schema)


class _Sampler:
    """One walk over a schema; holds the root for ``$ref`` and per-label counters for strings.

    ``path`` is the ``$ref`` pointers being expanded above the current node. Once one of them
    repeats, the schema is recursive and the walk is "deep": arrays shrink to ``minItems`` and
    nullable values become null, so every recursive schema that has a finite instance gets one.
    """

    def __init__(self, root: Mapping[str, Any], rng: random.Random, words: Sequence[str]) -> None:
        self._root = root
        self._rng = rng
        self._words = list(words) or ["offline"]
        self._counters: dict[str, int] = {}

    def sample(self, schema: Any, label: str = "value", path: tuple[str, ...] = ()) -> Any:
        """A value for ``schema``; ``label`` names it in generated text."""
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


def _rng_for(seed_text: str) -> random.Random:
    # Our own generator: global `random` state would make answers depend on what else ran.
    return random.Random(int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "big"))


def _words_of(text: str) -> list[str]:
    words = _WORD_RE.findall(text)
    content = [w.lower() for w in words if w.lower() not in _STOPWORDS]
    return content or [w.lower() for w in words]


# --------------------------------------------------------------------------------------------------
# The litellm provider
# --------------------------------------------------------------------------------------------------


class OfflineModel(CustomLLM):
    """The ``durapipe`` litellm custom provider: deterministic local answers, zero cost.

    Register it with `register_offline_model` and call it as ``model="durapipe/offline"``
    (litellm strips the provider prefix, so the handler sees ``model == "offline"``; any other
    name after ``durapipe/`` is answered the same way but has no registered price).
    See the module docstring for the answers, the delay and the ledger.
    """

    def completion(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: litellm.ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: HTTPHandler | None = None,
    ) -> litellm.ModelResponse:
        """Answer synchronously (``litellm.completion``); a scripted delay blocks the thread."""
        delay = _arrive(model, messages, optional_params, litellm_params)
        if delay > 0:
            time.sleep(delay)
        return _answer(messages, optional_params, model_response)

    async def acompletion(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: litellm.ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: AsyncHTTPHandler | None = None,
    ) -> litellm.ModelResponse:
        """Answer asynchronously (``litellm.acompletion``); a scripted delay is cancellable."""
        delay = _arrive(model, messages, optional_params, litellm_params)
        if delay > 0:
            await asyncio.sleep(delay)
        return _answer(messages, optional_params, model_response)

    def streaming(
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: litellm.ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: HTTPHandler | None = None,
    ) -> Iterator[GenericStreamingChunk]:
        """Stream the answer (``stream=True``) as a single final chunk."""
        delay = _arrive(model, messages, optional_params, litellm_params)
        if delay > 0:
            time.sleep(delay)
        yield _chunk(messages, optional_params)

    # litellm iterates what astreaming returns, so it must be an async generator; the base class
    # declares a coroutine returning an iterator, hence the override ignore.
    async def astreaming(  # type: ignore[override, misc]
        self,
        model: str,
        messages: list[Any],
        api_base: str,
        custom_prompt_dict: dict[str, Any],
        model_response: litellm.ModelResponse,
        print_verbose: Callable[..., Any],
        encoding: Any,
        api_key: Any,
        logging_obj: Any,
        optional_params: dict[str, Any],
        acompletion: Any = None,
        litellm_params: Any = None,
        logger_fn: Any = None,
        headers: Any = None,
        timeout: float | httpx.Timeout | None = None,
        client: AsyncHTTPHandler | None = None,
    ) -> AsyncIterator[GenericStreamingChunk]:
        """Stream the answer (``stream=True``) as a single final chunk."""
        delay = _arrive(model, messages, optional_params, litellm_params)
        if delay > 0:
            await asyncio.sleep(delay)
        yield _chunk(messages, optional_params)


def register_offline_model() -> None:
    """Make ``durapipe/offline`` callable through litellm, priced at zero.

    Idempotent and cheap to call again: it adds the handler to ``litellm.custom_provider_map`` and
    the price to ``litellm.model_cost`` only when they are missing (e.g. after a test reset them).
    """
    if not any(
        entry.get("provider") == PROVIDER and isinstance(entry.get("custom_handler"), OfflineModel)
        for entry in litellm.custom_provider_map
    ):
        litellm.custom_provider_map.append({"provider": PROVIDER, "custom_handler": OfflineModel()})
    if OFFLINE_MODEL not in litellm.model_cost:
        litellm.register_model({OFFLINE_MODEL: dict(_PRICING)})


def read_offline_ledger(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The calls recorded in a ledger file (see ``DURAPIPE_OFFLINE_LEDGER``), oldest first.

    Args:
        path: The ledger file.

    Returns:
        One dict per call with ``ts``, ``pid``, ``model``, ``last_user`` and ``metadata``; an empty
        list when the file does not exist yet. A trailing line without its newline (a write still
        in progress) is left out.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def _arrive(
    model: str, messages: Sequence[Any], optional_params: Mapping[str, Any], litellm_params: Any
) -> float:
    """Record the call in the ledger (if enabled) and return the scripted delay in seconds."""
    params: Mapping[str, Any] = litellm_params if isinstance(litellm_params, Mapping) else {}
    ledger = os.environ.get(LEDGER_ENV)
    if ledger:
        metadata = optional_params.get("metadata") or params.get("metadata")
        _append_ledger(
            ledger,
            {
                "ts": time.time(),
                "pid": os.getpid(),
                "model": f"{PROVIDER}/{model}",
                "last_user": _last_user(messages)[:_LEDGER_TEXT],
                "metadata": metadata if isinstance(metadata, dict) else None,
            },
        )
    return _delay(optional_params)


def _delay(optional_params: Mapping[str, Any]) -> float:
    raw = optional_params.get("offline_delay")
    if raw is None:
        raw = os.environ.get(DELAY_ENV) or 0
    try:
        return max(0.0, float(raw))
    except (TypeError, ValueError):
        raise ValueError(f"offline_delay / {DELAY_ENV} must be seconds, got {raw!r}") from None


def _append_ledger(path: str, record: Mapping[str, Any]) -> None:
    line = (json.dumps(record, default=str) + "\n").encode()
    # One write on an O_APPEND descriptor: the kernel appends it whole, so lines from concurrent
    # processes never interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _answer(
    messages: Sequence[Any],
    optional_params: Mapping[str, Any],
    model_response: litellm.ModelResponse,
) -> litellm.ModelResponse:
    text, usage = _reply(messages, optional_params)
    _set_content(model_response, text)
    model_response.usage = litellm.Usage(**usage)
    model_response.model = OFFLINE_MODEL
    return model_response


def _chunk(messages: Sequence[Any], optional_params: Mapping[str, Any]) -> GenericStreamingChunk:
    """The whole answer as the one and final chunk of a stream."""
    text, usage = _reply(messages, optional_params)
    return {
        "text": text,
        "tool_use": None,
        "is_finished": True,
        "finish_reason": "stop",
        "usage": {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"],
        },
        "index": 0,
    }


def _reply(
    messages: Sequence[Any], optional_params: Mapping[str, Any]
) -> tuple[str, dict[str, int]]:
    """The answer text and its token usage."""
    text = _reply_text(messages, optional_params.get("response_format"))
    prompt_tokens = max(1, sum(_count_tokens(_content_text(m)) for m in messages))
    completion_tokens = max(1, _count_tokens(text))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return text, usage


def _reply_text(messages: Sequence[Any], response_format: Any) -> str:
    """The answer text for a conversation and a ``response_format``."""
    last_user = _last_user(messages)
    kind = _format_kind(response_format)
    if kind == "json_schema":
        schema = response_format["json_schema"].get("schema") or {}
        sampler = _Sampler(schema, _rng_for(_seed(messages, response_format)), _words_of(last_user))
        return json.dumps(sampler.sample(schema))
    if kind == "json_object":
        words = last_user.split()[:_PLAIN_WORDS]
        return json.dumps({"answer": " ".join(words) or "offline", "offline": True})
    words = last_user.split()[:_PLAIN_WORDS]
    return f"Offline answer: {' '.join(words)}" if words else "Offline answer."


def _format_kind(response_format: Any) -> str:
    if isinstance(response_format, Mapping):
        kind = response_format.get("type")
        if kind == "json_schema" and isinstance(response_format.get("json_schema"), Mapping):
            return "json_schema"
        if kind == "json_object":
            return "json_object"
    return "text"


def _seed(messages: Sequence[Any], response_format: Any) -> str:
    """A stable digest of the conversation and the format: the seed of every choice."""
    conversation = [[_role(m), _content_text(m)] for m in messages]
    blob = json.dumps([conversation, response_format], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _set_content(model_response: litellm.ModelResponse, text: str) -> None:
    choices = model_response.choices
    if choices and isinstance(choices[0], litellm.Choices):
        choices[0].message.content = text
        choices[0].finish_reason = "stop"
    else:
        model_response.choices = [
            litellm.Choices(index=0, finish_reason="stop", message=litellm.Message(content=text))
        ]


def _last_user(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if _role(message) == "user":
            return _content_text(message)
    return ""


def _role(message: Any) -> str:
    role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", "")
    return str(role or "")


def _content_text(message: Any) -> str:
    """The text of a message; multimodal content keeps only its text parts."""
    if isinstance(message, Mapping):
        content = message.get("content")
    else:
        content = getattr(message, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, Mapping)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def _count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))
