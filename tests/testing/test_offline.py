"""Tests for the embedded offline model ``durapipe/offline``, driven by real litellm calls."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm: stay offline

import litellm

from durapipe.adapters._offline import (
    DELAY_ENV,
    LEDGER_ENV,
    OFFLINE_MODEL,
    OfflineModel,
    read_offline_ledger,
    register_offline_model,
    sample_from_schema,
)

try:
    import jsonschema
except ImportError:  # pragma: no cover - jsonschema comes with litellm, but is not ours to require
    jsonschema = None

# litellm's own response types trigger this pydantic warning the first time they are built;
# pyproject turns warnings into errors, and it is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is using the `ReadOnly` qualifier:UserWarning")

ARTICLE = (
    "The council approved the new bridge on Monday. It will cost 40 million dollars "
    "and open in 2027, the mayor said."
)
MESSAGES = [
    {"role": "system", "content": "You extract claims."},
    {"role": "user", "content": ARTICLE},
]


class Verdict(StrEnum):
    SUPPORTED = "supported"
    REFUTED = "refuted"
    UNCLEAR = "unclear"


class Source(BaseModel):
    url: str
    quote: str | None = None


class Claim(BaseModel):
    text: str = Field(min_length=5, max_length=60)
    verdict: Verdict
    note: str | None = None
    confidence: float = Field(ge=0, le=1)
    sources: list[Source] = Field(min_length=1, max_length=2)


class Report(BaseModel):
    title: str
    claims: list[Claim]
    rating: int = Field(gt=0, lt=6)
    kind: Literal["brief"] = "brief"


WRAPPED_CLAIMS: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Claim"}}},
    "required": ["items"],
    "additionalProperties": False,
    "$defs": {
        "Claim": {
            "type": "object",
            "properties": {
                "claim": {"type": "string"},
                "checkable": {"type": "boolean"},
                "verdict": {"enum": ["supported", "refuted", "unclear"], "type": "string"},
            },
            "required": ["claim", "checkable", "verdict"],
            "additionalProperties": False,
        }
    },
}


def _tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


def _json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _check_schema(schema: dict[str, Any], value: Any) -> None:
    """Validate with jsonschema when it is installed; pydantic-derived cases also check themselves."""
    if jsonschema is not None:
        jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)


async def _ask(messages: list[dict[str, str]] | None = None, **kwargs: Any) -> Any:
    register_offline_model()
    return await litellm.acompletion(
        model=OFFLINE_MODEL, messages=messages or MESSAGES, num_retries=0, **kwargs
    )


# --- litellm calls ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_plain_text_answer_quotes_the_last_user_message() -> None:
    response = await _ask()
    assert response.choices[0].message.content == (
        "Offline answer: The council approved the new bridge on Monday. It will cost 40"
    )
    assert response.choices[0].finish_reason == "stop"
    assert response.model == "durapipe/offline"


@pytest.mark.asyncio
async def test_same_input_gives_the_same_answer() -> None:
    fmt = _json_schema_format("Report", Report.model_json_schema())
    first = await _ask(response_format=fmt)
    second = await _ask(response_format=fmt)
    other = await _ask(
        [{"role": "user", "content": "A different prompt entirely."}], response_format=fmt
    )
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content != other.choices[0].message.content


@pytest.mark.asyncio
async def test_structured_answer_fits_a_nested_pydantic_schema() -> None:
    schema = Report.model_json_schema()
    response = await _ask(response_format=_json_schema_format("Report", schema))
    text = response.choices[0].message.content
    report = Report.model_validate_json(text)
    _check_schema(schema, json.loads(text))
    assert len(report.claims) == 3  # the default length
    assert all(1 <= len(claim.sources) <= 2 for claim in report.claims)
    assert report.claims[0].note is not None  # Optional fields are filled, not nulled
    # Readable text made of prompt words, not noise.
    assert re.fullmatch(r"title 1: [\w' -]+", report.title)
    assert set(report.title.split(": ")[1].split()) <= set(re.findall(r"\w+", ARTICLE.lower()))


@pytest.mark.asyncio
async def test_structured_answer_fits_a_wrapped_array_schema() -> None:
    response = await _ask(response_format=_json_schema_format("Claims", WRAPPED_CLAIMS))
    data = json.loads(response.choices[0].message.content)
    _check_schema(WRAPPED_CLAIMS, data)
    assert list(data) == ["items"]
    assert [item["claim"].split(":")[0] for item in data["items"]] == [
        "claim 1",
        "claim 2",
        "claim 3",
    ]


@pytest.mark.asyncio
async def test_pydantic_class_as_response_format() -> None:
    # litellm turns the class into a json_schema response_format before the handler sees it.
    response = await _ask(response_format=Report)
    Report.model_validate_json(response.choices[0].message.content)


@pytest.mark.asyncio
async def test_json_object_answer() -> None:
    response = await _ask(response_format={"type": "json_object"})
    data = json.loads(response.choices[0].message.content)
    assert isinstance(data, dict)
    assert data["offline"] is True


@pytest.mark.asyncio
async def test_usage_counts_words_and_punctuation() -> None:
    response = await _ask()
    usage = response.usage
    expected_prompt = sum(_tokens(m["content"]) for m in MESSAGES)
    assert usage.prompt_tokens == expected_prompt > 0
    assert usage.completion_tokens == _tokens(response.choices[0].message.content) > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    again = await _ask()
    assert again.usage.model_dump() == usage.model_dump()


@pytest.mark.asyncio
async def test_usage_is_at_least_one_for_empty_messages() -> None:
    response = await _ask([{"role": "user", "content": ""}])
    assert response.choices[0].message.content == "Offline answer."
    assert response.usage.prompt_tokens == 1
    assert response.usage.completion_tokens >= 1


@pytest.mark.asyncio
async def test_completion_cost_is_zero() -> None:
    response = await _ask()
    assert litellm.completion_cost(response) == 0.0
    assert litellm.completion_cost(completion_response=response) == 0.0


@pytest.mark.asyncio
async def test_offline_delay_setting_waits() -> None:
    await _ask()  # warm litellm up so its first-call overhead is not part of the measurement
    started = time.perf_counter()
    await _ask(offline_delay=0.3)
    assert time.perf_counter() - started >= 0.3


@pytest.mark.asyncio
async def test_offline_delay_survives_drop_params(monkeypatch: pytest.MonkeyPatch) -> None:
    # durapipe's adapter sets drop_params; litellm still hands unknown kwargs to custom providers.
    monkeypatch.setattr(litellm, "drop_params", True)
    started = time.perf_counter()
    await _ask(offline_delay=0.3)
    assert time.perf_counter() - started >= 0.3


@pytest.mark.asyncio
async def test_offline_delay_env_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DELAY_ENV, "0.5")
    started = time.perf_counter()
    await _ask()
    assert time.perf_counter() - started >= 0.5
    started = time.perf_counter()
    await _ask(offline_delay=0)  # the argument wins over the environment
    assert time.perf_counter() - started < 0.5


@pytest.mark.asyncio
async def test_offline_delay_is_cancellable() -> None:
    task = asyncio.create_task(_ask(offline_delay=30))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_ledger_records_each_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ledger = tmp_path / "calls.jsonl"
    monkeypatch.setenv(LEDGER_ENV, str(ledger))
    assert read_offline_ledger(ledger) == []
    before = time.time()
    await _ask(metadata={"step": "extract", "attempt": 1})
    await _ask([{"role": "user", "content": "x" * 500}])
    calls = read_offline_ledger(ledger)
    assert len(calls) == 2
    first, second = calls
    assert first["pid"] == os.getpid()
    assert first["model"] == "durapipe/offline"
    assert first["last_user"] == ARTICLE
    assert first["metadata"] == {"step": "extract", "attempt": 1}
    assert before <= first["ts"] <= second["ts"] <= time.time()
    assert second["last_user"] == "x" * 200
    assert second["metadata"] is None


def test_ledger_ignores_a_line_still_being_written(tmp_path: Path) -> None:
    ledger = tmp_path / "calls.jsonl"
    ledger.write_text('{"pid": 1}\n{"pid": 2}\n{"pi')
    assert read_offline_ledger(ledger) == [{"pid": 1}, {"pid": 2}]


def test_ledger_counts_calls_from_concurrent_processes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A child process and this one append at the same time (this one keeps calling until the
    # child is done): every line stays whole and every call is counted once. One child only,
    # because each pays litellm's multi-second import.
    ledger = tmp_path / "calls.jsonl"
    monkeypatch.setenv(LEDGER_ENV, str(ledger))
    register_offline_model()
    script = (
        "import litellm\n"
        "from durapipe.adapters._offline import register_offline_model\n"
        "register_offline_model()\n"
        "for i in range(200):\n"
        "    litellm.completion(model='durapipe/offline', num_retries=0,\n"
        "        messages=[{'role': 'user', 'content': f'call {i} ' + 'word ' * 60}],\n"
        "        metadata={'worker': 'child', 'i': i})\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], env=dict(os.environ))
    mine = 0
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        litellm.completion(
            model=OFFLINE_MODEL,
            messages=[{"role": "user", "content": "parent " + "word " * 60}],
            metadata={"worker": "parent", "i": mine},
            num_retries=0,
        )
        mine += 1
        time.sleep(0.01)
    assert child.wait(timeout=5) == 0
    calls = read_offline_ledger(ledger)
    by_worker = {
        name: [c["metadata"]["i"] for c in calls if c["metadata"]["worker"] == name]
        for name in ("child", "parent")
    }
    assert by_worker == {"child": list(range(200)), "parent": list(range(mine))}
    assert {c["pid"] for c in calls} == {child.pid, os.getpid()}


def test_sync_completion_and_streaming() -> None:
    register_offline_model()
    response = litellm.completion(model=OFFLINE_MODEL, messages=MESSAGES, num_retries=0)
    assert response.choices[0].message.content.startswith("Offline answer: The council")
    assert litellm.completion_cost(response) == 0.0
    chunks = litellm.completion(model=OFFLINE_MODEL, messages=MESSAGES, num_retries=0, stream=True)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert streamed == response.choices[0].message.content


@pytest.mark.asyncio
async def test_async_streaming() -> None:
    response = await _ask(stream=True)
    streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in response])
    assert streamed.startswith("Offline answer: The council")


# 90,000 strings: near the most the offline model builds for one answer (100,000 values).
LARGE = {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 300,
         "maxItems": 300}, "minItems": 300, "maxItems": 300}  # fmt: skip


async def _longest_stall(call: Any) -> tuple[Any, float, float]:
    """What ``call`` returns, how long it took and the longest the event loop stood still
    meanwhile (a ticker that sleeps 1 ms at a time measures it)."""
    gaps: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    start = time.perf_counter()
    result = await call
    took = time.perf_counter() - start
    done.set()
    await ticker
    return result, took, max(gaps)


@pytest.mark.asyncio
@pytest.mark.parametrize("stream", [False, True])
async def test_a_large_answer_is_built_off_the_event_loop(stream: bool) -> None:
    await _ask()  # litellm's first call sets itself up on the loop: not the model's doing
    fmt = _json_schema_format("grid", LARGE)

    async def answer() -> str:
        response = await _ask(response_format=fmt, stream=stream)
        if not stream:
            return str(response.choices[0].message.content)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in response])

    text, took, stall = await _longest_stall(answer())
    # Built on the loop, the loop stood still for the whole call (1.5-2.7 s here, under load);
    # in a thread, for a fraction of it (0.05-0.16 s): a ratio, so the machine's load cancels.
    assert stall < took / 3, f"the loop stood still {stall:.3f}s of the call's {took:.3f}s"
    value = json.loads(text)
    assert len(value) == 300 and all(len(row) == 300 for row in value)
    # The same answer as one built in one go, on a thread or not: a retry gets the same bytes.
    same = litellm.completion(
        model=OFFLINE_MODEL, messages=MESSAGES, num_retries=0, response_format=fmt
    )
    assert same.choices[0].message.content == text


def test_register_is_idempotent() -> None:
    register_offline_model()
    register_offline_model()
    handlers = [
        entry
        for entry in litellm.custom_provider_map
        if entry["provider"] == "durapipe" and isinstance(entry["custom_handler"], OfflineModel)
    ]
    assert len(handlers) == 1
    assert litellm.model_cost["durapipe/offline"]["input_cost_per_token"] == 0.0


# --- sample_from_schema ----------------------------------------------------------------------


class Node(BaseModel):
    name: str
    children: list[Node] = []
    next: Node | None = None


class Shapes(BaseModel):
    point: tuple[int, str]
    tags: set[str]
    scores: dict[str, float]
    count: int = Field(multiple_of=5, ge=10, le=40)
    ratio: float = Field(gt=0, lt=0.05)
    code: str = Field(min_length=20, max_length=22)
    flag: bool | None
    mode: Literal["a", "b"] | None = None


PYDANTIC_TYPES: list[Any] = [Report, Claim, Node, Shapes, list[Source], int, str | None]

RAW_SCHEMAS: list[dict[str, Any]] = [
    WRAPPED_CLAIMS,
    {"type": ["string", "null"], "maxLength": 3},
    {"type": "integer", "exclusiveMinimum": -5, "exclusiveMaximum": -3},
    {"type": "number", "minimum": 1000.5},
    {"type": "number", "multipleOf": 0.1, "minimum": 0, "maximum": 1},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 5},
    {"type": "array", "items": {"enum": [1, 2]}, "maxItems": 1},
    {"type": "array", "items": {"enum": ["x", "y"]}, "uniqueItems": True, "minItems": 2},
    {"const": {"fixed": True}},
    {"type": "null"},
    {"allOf": [{"$ref": "#/definitions/A"}], "definitions": {"A": {"type": "string"}}},
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]},
        ]
    },
    {"oneOf": [{"type": "null"}, {"type": "object", "properties": {"x": {"type": "number"}}}]},
    {"type": "object", "required": ["undeclared"], "minProperties": 3},
    {"type": "string", "format": "date-time"},
    {},
]


@settings(max_examples=25, deadline=None)
@given(seed_text=st.text(max_size=200))
@pytest.mark.parametrize("annotation", PYDANTIC_TYPES, ids=repr)
def test_samples_of_pydantic_schemas_validate(annotation: Any, seed_text: str) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    schema = adapter.json_schema()
    value = sample_from_schema(schema, seed_text)
    adapter.validate_json(json.dumps(value))
    _check_schema(schema, value)


@pytest.mark.skipif(jsonschema is None, reason="raw schemas need the jsonschema package")
@settings(max_examples=25, deadline=None)
@given(seed_text=st.text(max_size=200))
@pytest.mark.parametrize("schema", RAW_SCHEMAS, ids=lambda s: json.dumps(s)[:40])
def test_samples_of_raw_schemas_validate(schema: dict[str, Any], seed_text: str) -> None:
    _check_schema(schema, sample_from_schema(schema, seed_text))


def test_sample_is_deterministic_and_seed_dependent() -> None:
    schema = Report.model_json_schema()
    assert sample_from_schema(schema, "one") == sample_from_schema(schema, "one")
    assert sample_from_schema(schema, "one") != sample_from_schema(schema, "two")


def test_sample_uses_prompt_words_and_property_names() -> None:
    value = sample_from_schema(WRAPPED_CLAIMS, "Bridge costs rose sharply")
    claims = [item["claim"] for item in value["items"]]
    for i, claim in enumerate(claims, start=1):
        label, words = claim.split(": ")
        assert label == f"claim {i}"
        assert set(words.split()) <= {"bridge", "costs", "rose", "sharply"}


def test_sample_of_recursive_schema_terminates() -> None:
    value = sample_from_schema(Node.model_json_schema(), "tree")
    node = Node.model_validate(value)
    assert len(node.children) == 3
    assert all(child.children == [] for child in node.children)
    assert node.next is not None and node.next.next is None


def test_sample_rejects_a_dangling_ref() -> None:
    with pytest.raises(ValueError, match="does not point inside"):
        sample_from_schema({"$ref": "#/$defs/Missing"}, "x")
