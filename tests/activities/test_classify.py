"""Every provider failure class, through litellm for real against the fake provider.

Each case checks the stable ``durapipe.*`` type, whether Temporal may retry it, and (for 429) that
the provider's Retry-After becomes the next retry delay.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from durapipe.activities import run_llm
from durapipe.runtime import LlmCall
from durapipe.spec import LlmPipe
from durapipe.spec._types import StructureSpec
from durapipe.testing import (
    Action,
    Drop,
    FakeProvider,
    Hang,
    Malformed,
    Reply,
    SchemaInvalid,
    Status,
)

MODEL = "gpt-fake"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    async with FakeProvider() as provider:
        # The worker's environment says where openai/ calls go (a pipe may not).
        monkeypatch.setenv("OPENAI_API_BASE", provider.base_url)
        yield provider


def llm_call(fake: FakeProvider, **pipe: Any) -> LlmCall:
    spec = LlmPipe(
        model=f"openai/{MODEL}",
        prompt="Say something about {{ topic }}.",
        inputs={"topic": "text"},
        timeout=pipe.pop("timeout", 10.0),
        **pipe,
    )
    return LlmCall(
        run_id="classify", path="say", pipe_name="say", pipe=spec, inputs={"topic": "rivers"}
    )


CASES: dict[str, tuple[Action, str, bool]] = {
    "401": (Status(401), "durapipe.AuthenticationError", False),
    "403": (Status(403), "durapipe.PermissionDenied", False),
    "404": (Status(404), "durapipe.NotFound", False),
    "400": (Status(400), "durapipe.BadRequest", False),
    "context window": (
        Status(400, error_code="context_length_exceeded"),
        "durapipe.ContextWindowExceeded",
        False,
    ),
    "content policy": (
        Status(400, error_code="content_policy_violation"),
        "durapipe.ContentPolicyViolation",
        False,
    ),
    "408": (Status(408), "durapipe.Timeout", True),
    "409": (Status(409), "durapipe.Conflict", True),
    "429": (Status(429), "durapipe.RateLimited", True),
    "500": (Status(500), "durapipe.ProviderError", True),
    "502": (Status(502), "durapipe.ProviderError", True),
    "503": (Status(503), "durapipe.ProviderError", True),
    "dropped connection": (Drop(), "durapipe.ConnectionError", True),
    # The provider's error code decides, whatever class litellm maps the response to.
    "content filter code": (
        Status(
            400, body={"error": {"message": "Blocked.", "type": None, "code": "content_filter"}}
        ),
        "durapipe.ContentPolicyViolation",
        False,
    ),
    # OpenAI's x-should-retry hint overrides what the status alone would say.
    "503 should not retry": (
        Status(503, headers={"x-should-retry": "false"}),
        "durapipe.ProviderError",
        False,
    ),
    "400 should retry": (
        Status(400, headers={"x-should-retry": "true"}),
        "durapipe.BadRequest",
        True,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_provider_errors_have_stable_types_and_retryability(
    fake: FakeProvider, case: str
) -> None:
    action, error_type, retryable = CASES[case]
    fake.script(MODEL, [action])
    with pytest.raises(ApplicationError) as raised:
        await run_llm(llm_call(fake))
    assert (raised.value.type, raised.value.non_retryable) == (error_type, not retryable)
    assert raised.value.message.startswith(f"openai/{MODEL}: ")
    # litellm's class named once, not "ServiceUnavailableError: ServiceUnavailableError: ...".
    name = raised.value.message.split(": ")[1]
    assert f"{name}: {name}: " not in raised.value.message
    assert len(fake.calls) == 1  # litellm and the SDK retry nothing: Temporal owns retries


async def test_a_hang_past_the_timeout_is_a_retryable_timeout(fake: FakeProvider) -> None:
    fake.script(MODEL, [Hang(5)])
    with pytest.raises(ApplicationError) as raised:
        await run_llm(llm_call(fake, timeout=0.5))
    assert (raised.value.type, raised.value.non_retryable) == ("durapipe.Timeout", False)


async def test_retry_after_becomes_the_next_retry_delay(fake: FakeProvider) -> None:
    fake.script(MODEL, [Status(429, retry_after=2)])
    with pytest.raises(ApplicationError) as raised:
        await run_llm(llm_call(fake))
    assert raised.value.type == "durapipe.RateLimited"
    assert raised.value.next_retry_delay == timedelta(seconds=2)


async def test_retry_after_ms_is_preferred_to_retry_after(fake: FakeProvider) -> None:
    fake.script(MODEL, [Status(429, retry_after=9, headers={"retry-after-ms": "1500"})])
    with pytest.raises(ApplicationError) as raised:
        await run_llm(llm_call(fake))
    assert raised.value.next_retry_delay == timedelta(milliseconds=1500)


async def test_malformed_json_is_reasked_and_the_answer_used(fake: FakeProvider) -> None:
    fake.script(MODEL, [Malformed(), Reply(json={"value": 7})])
    result = await run_llm(llm_call(fake, output="integer"))
    assert result.output == 7
    assert "not valid JSON" in fake.calls[1].messages[-1]["content"]


async def test_schema_invalid_answers_feed_the_error_back_then_fail(fake: FakeProvider) -> None:
    structures = {"Claim": StructureSpec.model_validate({"fields": {"text": "text"}})}
    fake.script(MODEL, [SchemaInvalid(json={"text": 3})] * 3)
    call = llm_call(fake, output="Claim", reask=2).model_copy(update={"structures": structures})
    with pytest.raises(ApplicationError) as raised:
        await run_llm(call)
    assert (raised.value.type, raised.value.non_retryable) == ("durapipe.InvalidOutput", True)
    assert "after 3 asks" in raised.value.message and "text" in raised.value.message
    assert len(fake.calls) == 3
    fed_back = fake.calls[1].messages
    assert fed_back[-2] == {"role": "assistant", "content": '{"text": 3}'}
    assert (
        "That answer was rejected: text: Input should be a valid string" in fed_back[-1]["content"]
    )


async def test_every_request_carries_the_idempotency_key_and_attempt(fake: FakeProvider) -> None:
    await run_llm(llm_call(fake), attempt=3)
    [call] = fake.calls
    assert call.idempotency_key is not None and len(call.idempotency_key) == 64
    assert call.attempt == 3


async def test_a_key_missing_on_the_worker_fails_at_once_as_an_authentication_error(
    fake: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ApplicationError) as raised:
        await run_llm(llm_call(fake))
    assert (raised.value.type, raised.value.non_retryable) == ("durapipe.AuthenticationError", True)
    # durapipe's sentence, not litellm's label ("InternalServerError: OpenAIException - Missing
    # credentials. Please pass an `api_key`, ...").
    assert raised.value.message == (
        f"openai/{MODEL}: no API key for provider 'openai' where this step runs: set "
        "OPENAI_API_KEY in the worker's environment (or its --secrets-file; with --local, this "
        "process's); nothing was sent"
    )
    assert fake.calls == []  # nothing was sent: only the worker's environment can fix it


async def test_a_gemini_key_missing_on_the_worker_fails_at_once_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # litellm says so as a 500 APIConnectionError, its traceback in the message: the step was
    # retried as a durapipe.ProviderError (5 attempts, 20 s with --local) and printed the traceback.
    for variable in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    spec = LlmPipe(
        model="gemini/gemini-2.5-flash", prompt="Say {{ topic }}.", inputs={"topic": "text"}
    )
    call = LlmCall(run_id="classify", path="say", pipe_name="say", pipe=spec, inputs={"topic": "x"})
    with pytest.raises(ApplicationError) as raised:
        await run_llm(call)
    assert (raised.value.type, raised.value.non_retryable) == ("durapipe.AuthenticationError", True)
    assert "set GEMINI_API_KEY in the worker's environment" in raised.value.message
    assert "Traceback" not in raised.value.message and "\n" not in raised.value.message
