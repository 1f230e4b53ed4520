"""A worker calls only the models its operator allowed, whatever a run names.

Red team finding: a raw workflow input naming ``model: ollama/llama3`` made a worker send
``POST /api/generate`` to ``localhost:11434``, a provider and an endpoint on the worker's own host
that its operator never configured. Providers, endpoints and credentials come from the worker's
side; a run names only models the worker was told about (see `durapipe.activities._models`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

import durapipe as dp
from durapipe.activities import run_llm
from durapipe.activities._models import check_models, worker_models
from durapipe.adapters import WORKFLOW_NAME, pipe_run
from durapipe.adapters._providers import configured_providers
from durapipe.runtime import LlmCall
from durapipe.spec import LlmPipe, ModelDeck
from durapipe.testing import FakeProvider, Reply
from tests.support import WorkerProcess, deck_for

# Ollama's default endpoint: http://localhost:11434 (litellm's default api_base for ollama/...).
OLLAMA_PORT = 11434
# What the worker's operator loaded: an offline pipe, nothing of Ollama.
WORKER_PIPES = """
pipes:
  hello:
    kind: llm
    model: openai/gpt-4o-mini
    fallbacks: [anthropic/claude-haiku-4-5]
    inputs: {text: text}
    prompt: "Say hello to {{ text }}."
"""
# What a client of the namespace sends as a raw workflow input (no validation on its side).
RAW_PIPES = """
pipes:
  ask:
    kind: llm
    model: ollama/llama3
    inputs: {text: text}
    prompt: "{{ text }}"
    retry: {max_attempts: 3}
"""


class Listener:
    """A TCP listener on a port of this host that counts the connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self.reached = asyncio.Event()

    def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.reached.set()
        writer.close()


@contextlib.asynccontextmanager
async def listening(port: int) -> AsyncIterator[Listener]:
    """A `Listener` on ``port`` of the IPv4 loopback, and of the IPv6 one where this host has it
    (``localhost`` may resolve to either)."""
    listener = Listener()
    servers = []
    for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
        try:
            servers.append(await asyncio.start_server(listener.accept, host, port, family=family))
        except OSError as err:
            if family == socket.AF_INET:
                pytest.skip(f"port {port} is taken on this host ({err.strerror})")
    try:
        yield listener
    finally:
        for server in servers:
            server.close()
            await server.wait_closed()


@pytest.fixture
def operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker environment with an OpenAI key (conftest's) and no other provider's key or
    endpoint (none of Ollama's), whatever the host running the tests holds."""
    for name in list(os.environ):
        if name.endswith(("_API_KEY", "_API_BASE", "_BASE_URL")) or name in (
            "DURAPIPE_MODELS",
            "DURAPIPE_MTHDS_DECK",
            "DURAPIPE_DEFAULT_MODEL",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-durapipe-tests")


@pytest.mark.usefixtures("operator_env")
async def test_a_raw_input_naming_an_unconfigured_keyless_provider_is_refused_unsent(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    (tmp_path / "worker.yaml").write_text(WORKER_PIPES)
    raw = pipe_run(dp.load_yaml(RAW_PIPES), "ask", {"text": "hello"})
    client = await Client.connect(temporal_address, plugins=[dp.DurapipePlugin()])
    async with listening(OLLAMA_PORT) as listener:
        worker = WorkerProcess(
            tmp_path / "worker.yaml", temporal_address, task_queue, tmp_path / "worker.log"
        )
        try:
            handle = await client.start_workflow(
                WORKFLOW_NAME, raw, id=raw.run_id, task_queue=task_queue
            )
            result = asyncio.ensure_future(dp.RunHandle(client, handle.id).result())
            reached = asyncio.ensure_future(listener.reached.wait())
            await asyncio.wait({result, reached}, timeout=90, return_when="FIRST_COMPLETED")
            reached.cancel()
            assert listener.connections == 0, "the worker connected to Ollama's default port"
            with pytest.raises(dp.StepFailed) as failed:
                await result
        finally:
            worker.stop()
            with contextlib.suppress(Exception):
                await client.get_workflow_handle(raw.run_id).terminate("test over")
            with contextlib.suppress(BaseException):
                await result  # a run the check let through ends terminated: nothing left over
    log = (tmp_path / "worker.log").read_text()
    assert listener.connections == 0
    assert failed.value.cause_type == "durapipe.ModelNotAllowed"
    assert failed.value.cause.startswith("pipe 'ask', field 'model': ")
    assert "'ollama/llama3'" in failed.value.cause
    assert "DURAPIPE_MODELS='ollama/*'" in failed.value.cause
    assert failed.value.attempts == 1  # not retried: its policy allows three attempts
    # The worker says which models it calls, in one line, when it starts.
    (line,) = [line for line in log.splitlines() if line.startswith("models: ")]
    assert "openai/* (OPENAI_API_KEY)" in line
    assert "anthropic/claude-haiku-4-5" in line  # named by its file (no Anthropic key here)
    assert "ollama" not in line
    assert "Traceback" not in log


@pytest.mark.usefixtures("operator_env")
async def test_a_refused_fallback_stops_the_call_before_the_first_model_is_asked() -> None:
    async with FakeProvider() as provider:
        provider.set_default(Reply(content="an answer"))
        deck = deck_for(provider.base_url)
        pipe = LlmPipe(model="openai/gpt-keep", fallbacks=["ollama/llama3"], prompt="Hi.")
        call = LlmCall(run_id="r1", path="ask", pipe_name="ask", pipe=pipe)
        with pytest.raises(ApplicationError) as refused:
            await run_llm(call, deck=deck.allowing(worker_models([], deck)))
        # The same call on a worker that allows Ollama gets as far as the provider.
        allowed = await run_llm(
            call.model_copy(update={"pipe": pipe.model_copy(update={"fallbacks": []})}),
            deck=deck.allowing(worker_models([], deck)),
        )
    assert refused.value.type == "durapipe.ModelNotAllowed"
    assert refused.value.non_retryable
    assert refused.value.message.startswith(
        "pipe 'ask', field 'fallbacks': this worker does not call the fallback model "
        "'ollama/llama3'"
    )
    assert allowed.output == "an answer"
    assert len(provider.calls) == 1  # only the second call's


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        ("llm", "the model"),
        ("agent", "the agent's model"),
        ("extract", "the OCR model"),
        ("image", "the image model"),
    ],
)
@pytest.mark.usefixtures("operator_env")
def test_each_kind_names_the_pipe_field_and_what_the_model_is_for(kind: str, what: str) -> None:
    deck = ModelDeck().allowing(worker_models())
    with pytest.raises(ApplicationError) as refused:
        check_models(kind, "scan", "mistral/mistral-ocr-latest", (), deck)
    assert refused.value.message.startswith(
        f"pipe 'scan', field 'model': this worker does not call {what} 'mistral/mistral-ocr-latest'"
    )


@pytest.mark.usefixtures("operator_env")
def test_what_a_worker_allows_comes_from_its_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = dp.load_yaml(WORKER_PIPES)
    allowed = worker_models([pipeline])
    assert allowed.allows("durapipe/offline") and allowed.allows("durapipe/local")
    assert allowed.allows("openai/gpt-4.1")  # its OpenAI key: the provider the operator chose
    assert allowed.allows("anthropic/claude-haiku-4-5")  # named by its file
    assert not allowed.allows("anthropic/claude-opus-4-1")  # no key, not named
    assert not allowed.allows("ollama/llama3")
    assert not allowed.allows("lm_studio/any") and not allowed.allows("hosted_vllm/any")
    # A keyless local provider is allowed once its operator configures its endpoint.
    monkeypatch.setenv("OLLAMA_API_BASE", "http://ollama.internal:11434")
    assert worker_models([pipeline]).allows("ollama/llama3")
    # DURAPIPE_MODELS is the operator's own list: it replaces the providers guessed from keys.
    monkeypatch.setenv("DURAPIPE_MODELS", "anthropic/claude-*, openai/gpt-4o-mini")
    listed = worker_models([pipeline])
    assert listed.allows("anthropic/claude-opus-4-1") and listed.allows("openai/gpt-4o-mini")
    assert not listed.allows("openai/gpt-4.1") and not listed.allows("ollama/llama3")
    monkeypatch.setenv("DURAPIPE_MODELS", "*")  # today's behaviour, for an operator who wants it
    assert worker_models().allows("ollama/llama3")
    assert worker_models().describe() == "models: any (DURAPIPE_MODELS)"


def test_providers_count_by_their_key_or_endpoint_variables() -> None:
    found = configured_providers(
        {
            "OPENAI_API_KEY": "sk-x",
            "ANTHROPIC_API_KEY": " ",  # blank: not a key
            "HOSTED_VLLM_API_BASE": "http://vllm:8000/v1",
            "AWS_PROFILE": "prod",
            "VENICE_AI_API_KEY": "v",  # litellm's registry names this one
        }
    )
    assert found["openai"] == "OPENAI_API_KEY"
    assert found["text-completion-openai"] == "OPENAI_API_KEY"
    assert found["hosted_vllm"] == "HOSTED_VLLM_API_BASE"
    assert found["bedrock"] == "AWS_PROFILE"
    assert found["veniceai"] == "VENICE_AI_API_KEY"
    assert "anthropic" not in found and "ollama" not in found


def test_a_bad_models_setting_is_one_sentence_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DURAPIPE_MODELS", " , ")
    with pytest.raises(dp.ConfigError, match="DURAPIPE_MODELS"):
        worker_models()


@pytest.mark.usefixtures("operator_env")
def test_a_worker_serving_mthds_methods_calls_its_decks_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    deck = tmp_path / "deck.toml"
    deck.write_text(
        '[aliases]\nfast = "groq/llama-3.1-8b-instant"\n'
        '[waterfalls]\nsafe = ["mistral/mistral-small-latest", "@fast"]\n'
        '[handles]\n"ollama/gemma4:e2b" = "openai/gpt-4o-mini"\n'
    )
    monkeypatch.setenv("DURAPIPE_MTHDS_DECK", str(deck))
    allowed = worker_models()
    assert allowed.allows("groq/llama-3.1-8b-instant")
    assert allowed.allows("mistral/mistral-small-latest")
    assert not allowed.allows("ollama/gemma4:e2b")  # what a bundle pins, mapped elsewhere
