"""Tests for the fake OpenAI-compatible provider, driven by real litellm calls."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported: stay offline

import httpx
import litellm
from pydantic import BaseModel, ValidationError

from durapipe.adapters._schema_sample import sample_from_schema
from durapipe.testing.fake_provider import (
    Call,
    Drop,
    FakeProvider,
    Hang,
    Malformed,
    Reply,
    SchemaInvalid,
    Status,
    ToolCalls,
    action_from_dict,
    action_to_dict,
    read_ledger,
)

# litellm's own response types trigger this pydantic warning the first time they are built;
# pyproject turns warnings into errors, and it is not ours to fix.

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello, world!"},
]


def _tokens(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def _kwargs(fake: FakeProvider, model: str = "gpt-x", **extra: Any) -> dict[str, Any]:
    return {
        "model": f"openai/{model}",
        "api_base": fake.base_url,
        "api_key": "sk-fake",
        "messages": MESSAGES,
        "num_retries": 0,
        **extra,
    }


# -- normal replies ------------------------------------------------------------


async def test_reply_with_usage(fake: FakeProvider) -> None:
    response = await litellm.acompletion(**_kwargs(fake))

    content = response.choices[0].message.content
    assert content == "Fake gpt-x reply to: Hello, world!"
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == _tokens("You are terse.") + _tokens("Hello, world!")
    assert response.usage.completion_tokens == _tokens(content)
    assert response.usage.total_tokens == response.usage.prompt_tokens + _tokens(content)
    [call] = await fake.wait_until_async(lambda cs: cs[0].finished_at is not None)
    assert (call.seq, call.model, call.outcome, call.http_status) == (1, "gpt-x", "ok", 200)
    assert call.messages == MESSAGES
    assert call.prompt_tokens == response.usage.prompt_tokens
    assert call.finished_at is not None and call.finished_at >= call.received_at
    assert fake.paid_calls() == [call]


async def test_scripted_replies_per_model_then_default(fake: FakeProvider) -> None:
    fake.script("gpt-x", [Reply(content="one", prompt_tokens=100, completion_tokens=7)])
    fake.script("gpt-x", [Reply(json={"a": 1})])
    fake.set_default(Reply(content="default"))

    first = await litellm.acompletion(**_kwargs(fake))
    other = await litellm.acompletion(**_kwargs(fake, model="gpt-y"))
    second = await litellm.acompletion(**_kwargs(fake))
    third = await litellm.acompletion(**_kwargs(fake))

    assert first.choices[0].message.content == "one"
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (100, 7)
    assert other.choices[0].message.content == "default"
    assert json.loads(second.choices[0].message.content) == {"a": 1}
    assert third.choices[0].message.content == "default"
    assert [c.seq for c in fake.calls_for("gpt-x")] == [1, 3, 4]
    assert [c.model for c in fake.calls] == ["gpt-x", "gpt-y", "gpt-x", "gpt-x"]


def test_sync_context_manager_and_sync_litellm() -> None:
    with FakeProvider() as fake:
        assert fake.base_url == f"http://127.0.0.1:{fake.port}/v1"
        response = litellm.completion(**_kwargs(fake))
        assert response.choices[0].message.content.startswith("Fake gpt-x reply")
    with pytest.raises(RuntimeError):
        _ = fake.port  # stopped


async def test_async_context_manager() -> None:
    async with FakeProvider() as fake:
        fake.script("m", [Reply(content="async")])
        response = await litellm.acompletion(**_kwargs(fake, model="m"))
        assert response.choices[0].message.content == "async"


async def test_streaming(fake: FakeProvider) -> None:
    fake.script("gpt-x", [Reply(content="streamed text")])
    stream = await litellm.acompletion(**_kwargs(fake), stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(parts) == "streamed text"
    assert fake.calls[0].outcome == "ok"


# -- structured output ------------------------------------------------------------


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Item(BaseModel):
    name: str
    quantity: int
    price: float


class Order(BaseModel):
    customer: str
    colour: Colour
    express: bool
    note: str | None
    items: list[Item]
    primary: Item


async def test_json_schema_reply_validates(fake: FakeProvider) -> None:
    response = await litellm.acompletion(**_kwargs(fake), response_format=Order)

    order = Order.model_validate_json(response.choices[0].message.content)
    assert isinstance(order.colour, Colour) and order.items
    again = await litellm.acompletion(**_kwargs(fake), response_format=Order)
    assert again.choices[0].message.content == response.choices[0].message.content  # deterministic
    assert [c.outcome for c in fake.calls] == ["ok", "ok"]


async def test_malformed_and_schema_invalid(fake: FakeProvider) -> None:
    fake.script("gpt-x", [Malformed(), SchemaInvalid(), SchemaInvalid(json={"customer": 1})])

    malformed = await litellm.acompletion(**_kwargs(fake), response_format=Order)
    invalid = await litellm.acompletion(**_kwargs(fake), response_format=Order)
    custom = await litellm.acompletion(**_kwargs(fake), response_format=Order)

    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.choices[0].message.content)
    assert json.loads(invalid.choices[0].message.content) == {}
    with pytest.raises(ValidationError):
        Order.model_validate_json(invalid.choices[0].message.content)
    assert json.loads(custom.choices[0].message.content) == {"customer": 1}
    assert [c.outcome for c in fake.calls] == ["malformed", "schema_invalid", "schema_invalid"]
    assert len(fake.paid_calls()) == 3


@pytest.mark.parametrize(
    "schema",
    [
        Order.model_json_schema(),
        {"type": "object", "properties": {"x": {"type": ["string", "null"]}}, "required": ["x"]},
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 5, "maximum": 9},
                "f": {"type": "number", "exclusiveMinimum": 2},
                "s": {"type": "string", "minLength": 12, "format": "email"},
                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 2},
                "child": {"$ref": "#/$defs/Child"},
                "maybe": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Child"}]},
                "k": {"const": "fixed"},
                "when": {"type": "string", "format": "date-time"},
            },
            "required": ["n", "f", "s", "tags", "child", "maybe", "k", "when"],
            "additionalProperties": False,
            "$defs": {
                "Child": {
                    "type": "object",
                    "properties": {"ok": {"type": "boolean"}, "deep": {"type": "array"}},
                    "required": ["ok", "deep"],
                }
            },
        },
    ],
)
def test_schema_instance_generator(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    instance = sample_from_schema(schema, "fake provider")
    jsonschema.validate(instance, schema)
    assert instance == sample_from_schema(schema, "fake provider")  # deterministic


# -- tool calls ---------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


async def test_tool_calls_are_parsed_by_litellm(fake: FakeProvider) -> None:
    fake.script(
        "gpt-x",
        [
            ToolCalls(
                [
                    {"name": "get_weather", "arguments": {"city": "Paris"}},
                    {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                ]
            )
        ],
    )
    # litellm 1.106.2 routes every call with `tools` through its MCP gateway code, which
    # imports the optional `mcp` package; plain function tools do not need it.
    response = await litellm.acompletion(
        **_kwargs(fake), tools=[WEATHER_TOOL], _skip_mcp_handler=True
    )

    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [c.id for c in calls] == ["call_1", "call_2"]
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]
    assert fake.calls[0].outcome == "tool_calls"
    assert fake.calls[0].paid


# -- failures -------------------------------------------------------------------------


async def test_rate_limit_with_retry_after(fake: FakeProvider) -> None:
    fake.script("gpt-x", [Status(429, retry_after=1)])

    with pytest.raises(litellm.RateLimitError) as info:
        await litellm.acompletion(**_kwargs(fake))

    assert info.value.status_code == 429
    assert info.value.litellm_response_headers["retry-after"] == "1"
    assert "Rate limit reached for gpt-x" in str(info.value)
    assert [c.outcome for c in fake.calls] == ["status:429"]
    assert fake.paid_calls() == []


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        (Status(401), litellm.AuthenticationError),
        (Status(404), litellm.NotFoundError),
        (Status(400), litellm.BadRequestError),
        (Status(400, error_code="context_length_exceeded"), litellm.ContextWindowExceededError),
        # litellm 1.8x raised ContentPolicyViolationError here, 1.110 a plain BadRequestError: the
        # body's code is the contract (durapipe classifies on it), the class is litellm's choice.
        (
            Status(400, error_code="content_policy_violation"),
            (litellm.ContentPolicyViolationError, litellm.BadRequestError),
        ),
        (Status(500), litellm.InternalServerError),
        (Status(502), litellm.BadGatewayError),
        (Status(503), litellm.ServiceUnavailableError),
        (Drop(), litellm.InternalServerError),  # "OpenAIException - Connection error."
    ],
    ids=lambda v: repr(v) if isinstance(v, Status | Drop) else getattr(v, "__name__", "either"),
)
async def test_error_mapping(
    fake: FakeProvider,
    action: Status | Drop,
    expected: type[Exception] | tuple[type[Exception], ...],
) -> None:
    fake.script("gpt-x", [action])

    with pytest.raises(Exception) as info:
        await litellm.acompletion(**_kwargs(fake))

    assert type(info.value) in (expected if isinstance(expected, tuple) else (expected,))
    outcome = "dropped" if isinstance(action, Drop) else f"status:{action.code}"
    [call] = fake.calls
    assert call.outcome == outcome
    assert not call.paid


def test_error_bodies_are_openai_shaped() -> None:
    with FakeProvider() as fake:
        fake.script("gpt-x", [Status(401), Status(400, error_code="context_length_exceeded")])
        fake.script("gpt-x", [Status(418, body="teapot"), Status(500, message="boom")])
        url = f"{fake.base_url}/chat/completions"
        body = {"model": "gpt-x", "messages": MESSAGES}
        with httpx.Client() as client:
            auth, ctx, raw, custom = (client.post(url, json=body) for _ in range(4))
    assert auth.json()["error"]["code"] == "invalid_api_key"
    assert ctx.json()["error"]["message"].startswith("This model's maximum context length is")
    assert ctx.json()["error"]["code"] == "context_length_exceeded"
    assert (raw.status_code, raw.text) == (418, "teapot")
    assert custom.json()["error"] == {
        "message": "boom",
        "type": "server_error",
        "param": None,
        "code": None,
    }


async def test_hang_past_client_timeout_records_client_closed(fake: FakeProvider) -> None:
    fake.script("gpt-x", [Hang(10)])

    with pytest.raises(litellm.Timeout):
        await litellm.acompletion(**_kwargs(fake), timeout=0.5)

    calls = await fake.wait_until_async(lambda cs: cs[0].outcome == "client_closed", timeout=3)
    assert calls[0].finished_at is not None
    assert calls[0].finished_at - calls[0].received_at < 2
    assert fake.paid_calls() == []


async def test_hang_then_reply(fake: FakeProvider) -> None:
    fake.script("gpt-x", [Hang(0.05)])
    response = await litellm.acompletion(**_kwargs(fake))
    assert response.choices[0].message.content.startswith("Fake gpt-x reply")
    assert fake.calls[0].outcome == "hang"


async def test_failure_rate_is_reproducible(fake: FakeProvider) -> None:
    async def failing_indices() -> list[int]:
        fake.reset()
        fake.set_failure_rate(0.4, seed=3, actions=[Status(500), Status(429)])
        failed = []
        for i in range(12):
            try:
                await litellm.acompletion(**_kwargs(fake))
            except (litellm.InternalServerError, litellm.RateLimitError):
                failed.append(i)
        return failed

    first = await failing_indices()
    second = await failing_indices()
    assert first == second
    assert 0 < len(first) < 12
    assert {c.outcome for c in fake.calls} <= {"ok", "status:500", "status:429"}
    fake.set_failure_rate(0)
    await litellm.acompletion(**_kwargs(fake))


# -- ledger -----------------------------------------------------------------------------


async def test_ledger_captures_idempotency_key_and_attempt(fake: FakeProvider) -> None:
    await litellm.acompletion(
        **_kwargs(fake),
        extra_headers={"X-Durapipe-Idempotency-Key": "wf-1/step-2", "X-Durapipe-Attempt": "3"},
    )
    await litellm.acompletion(**_kwargs(fake))
    async with httpx.AsyncClient() as client:  # raw clients may use the body instead
        await client.post(
            f"{fake.base_url}/chat/completions",
            json={"model": "gpt-x", "messages": MESSAGES, "metadata": {"idempotency_key": "k9"}},
        )

    keys = [(c.idempotency_key, c.attempt) for c in fake.calls]
    assert keys == [("wf-1/step-2", 3), (None, None), ("k9", None)]


async def test_a_deduplicating_provider_answers_a_repeated_key_once_and_bills_it_once() -> None:
    async with FakeProvider(honour_idempotency=True) as fake:
        fake.script("gpt-x", [Status(500), Reply(content="first"), Reply(content="second")])
        key = {"X-Durapipe-Idempotency-Key": "run-1/s1"}
        with pytest.raises(litellm.InternalServerError):  # a failure stores nothing
            await litellm.acompletion(**_kwargs(fake), extra_headers=key)
        answers = await asyncio.gather(
            *(litellm.acompletion(**_kwargs(fake), extra_headers=key) for _ in range(3))
        )
        other = await litellm.acompletion(**_kwargs(fake))  # no key: an ordinary billed call

    assert [a.choices[0].message.content for a in answers] == ["first"] * 3
    assert other.choices[0].message.content == "second"
    outcomes = sorted(c.outcome for c in fake.calls)
    assert outcomes == ["ok", "ok", "replayed", "replayed", "status:500"]
    assert [c.idempotency_key for c in fake.paid_calls()] == ["run-1/s1", None]
    replayed = [c for c in fake.calls if c.outcome == "replayed"]
    assert all(c.completion_tokens == fake.paid_calls()[0].completion_tokens for c in replayed)


async def test_without_deduplication_a_repeated_key_is_billed_again(fake: FakeProvider) -> None:
    key = {"X-Durapipe-Idempotency-Key": "run-1/s1"}
    await litellm.acompletion(**_kwargs(fake), extra_headers=key)
    await litellm.acompletion(**_kwargs(fake), extra_headers=key)
    assert [c.outcome for c in fake.calls] == ["ok", "ok"]
    assert len(fake.paid_calls()) == 2


async def test_max_concurrency_and_cancellation_reach_the_provider(fake: FakeProvider) -> None:
    fake.set_default(Hang(30))
    tasks = [asyncio.create_task(litellm.acompletion(**_kwargs(fake))) for _ in range(5)]
    await fake.wait_until_async(lambda cs: len(cs) == 5)

    assert fake.max_concurrency == 5
    assert fake.max_concurrency_for("gpt-x") == 5
    assert fake.max_concurrency_for("other") == 0
    assert fake.max_rate(window_s=1.0) == 5
    assert all(c.finished_at is None and c.outcome == "hang" for c in fake.calls)

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    calls = await fake.wait_until_async(
        lambda cs: all(c.outcome == "client_closed" for c in cs), timeout=3
    )
    assert len(calls) == 5


async def test_response_hooks_run_before_and_after_send(fake: FakeProvider) -> None:
    events: list[tuple[str, Call]] = []
    entered, release = threading.Event(), threading.Event()

    def before(call: Call) -> None:
        events.append(("before", call))
        entered.set()
        release.wait(5)  # the server holds the answer while the hook runs

    fake.on_response(before)
    remove = fake.on_response(lambda call: events.append(("after", call)), after_send=True)

    task = asyncio.create_task(litellm.acompletion(**_kwargs(fake)))
    assert await asyncio.to_thread(entered.wait, 5)
    assert not task.done()
    assert [name for name, _ in events] == ["before"]
    release.set()
    await task
    # The after-send hook runs once the body is flushed; the call finishes right after it.
    await fake.wait_until_async(lambda cs: cs[0].finished_at is not None)
    assert [name for name, _ in events] == ["before", "after"]
    snapshot = events[0][1]
    assert (snapshot.seq, snapshot.outcome, snapshot.http_status) == (1, "ok", 200)
    assert snapshot.finished_at is None and snapshot.completion_tokens > 0

    remove()
    fake.script("gpt-x", [Status(500)])
    with pytest.raises(litellm.InternalServerError):
        await litellm.acompletion(**_kwargs(fake))
    await fake.wait_until_async(lambda cs: cs[1].finished_at is not None)
    assert [(name, call.outcome) for name, call in events[2:]] == [("before", "status:500")]


async def test_prices_feed_litellm_cost() -> None:
    async with FakeProvider(prices={"fake-priced-model": (1e-6, 3e-6)}) as priced:
        assert priced.prices == {"fake-priced-model": (1e-6, 3e-6)}
        priced.register_prices_with_litellm()
        response = await litellm.acompletion(**_kwargs(priced, model="fake-priced-model"))

    usage = response.usage
    expected = usage.prompt_tokens * 1e-6 + usage.completion_tokens * 3e-6
    assert litellm.completion_cost(completion_response=response) == pytest.approx(expected)


def test_action_round_trip() -> None:
    actions = [
        Reply(content="x", completion_tokens=3),
        Status(429, retry_after=1.5, error_code="insufficient_quota"),
        Hang(2),
        Drop(),
        Malformed(),
        SchemaInvalid(json={"a": 1}),
        ToolCalls([{"name": "f", "arguments": {"x": 1}}]),
    ]
    for action in actions:
        assert action_from_dict(json.loads(json.dumps(action_to_dict(action)))) == action
    assert action_to_dict(Status(500)) == {"type": "status", "code": 500}
    with pytest.raises(ValueError):
        action_from_dict({"type": "nope"})


# -- process mode --------------------------------------------------------------------------


async def test_process_mode(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps({"models": {"gpt-x": [{"type": "status", "code": 503}]}}))
    ledger = tmp_path / "ledger.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "durapipe.testing.fake_provider",
        "--port",
        "0",
        "--script",
        str(script),
        "--ledger",
        str(ledger),
        "--max-concurrency-report",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=10)).decode()
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:(\d+)/v1)\n", line)
        assert match, line
        base_url = match.group(1)
        print(f"fake provider process {proc.pid} listening on port {match.group(2)}")

        kwargs = {
            "model": "openai/gpt-x",
            "api_base": base_url,
            "api_key": "sk-fake",
            "messages": MESSAGES,
            "num_retries": 0,
        }
        headers = {"X-Durapipe-Idempotency-Key": "proc-key"}
        with pytest.raises(litellm.ServiceUnavailableError):
            await litellm.acompletion(**kwargs, extra_headers=headers)
        response = await litellm.acompletion(**kwargs, extra_headers=headers)
        assert response.choices[0].message.content.startswith("Fake gpt-x reply")

        async with httpx.AsyncClient(base_url=base_url.removesuffix("/v1")) as client:
            snapshot = (await client.get("/_fake/ledger")).json()
            assert [c["outcome"] for c in snapshot["calls"]] == ["status:503", "ok"]
            assert snapshot["max_concurrency"] == 1
            assert snapshot["max_concurrency_by_model"] == {"gpt-x": 1}

            doc = {"models": {"gpt-x": [action_to_dict(Reply(content="scripted"))]}}
            assert (await client.post("/_fake/script", json=doc)).status_code == 200
            scripted = await litellm.acompletion(**kwargs)
            assert scripted.choices[0].message.content == "scripted"

            bad = await client.post("/_fake/script", json={"models": {"m": [{"type": "x"}]}})
            assert bad.status_code == 400

            assert (await client.post("/_fake/reset")).status_code == 200
            assert (await client.get("/_fake/ledger")).json()["calls"] == []

        proc.send_signal(signal.SIGTERM)  # our own child, by pid
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=10)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    [report_line] = [
        ln for ln in out.decode().splitlines() if ln.startswith("max concurrency report: ")
    ]
    report = json.loads(report_line.removeprefix("max concurrency report: "))
    assert report["max_concurrency"] == 0  # figures were reset
    assert report["calls"] == 0

    calls = read_ledger(ledger)  # the JSONL file keeps every call, across resets
    assert [(c.seq, c.outcome, c.idempotency_key) for c in calls] == [
        (1, "status:503", "proc-key"),
        (2, "ok", "proc-key"),
        (3, "ok", None),
    ]
    assert all(c.finished_at is not None for c in calls)
