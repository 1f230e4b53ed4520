"""A provider key reaches the provider and nothing else: not history, logs, CLI output or spans."""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment

import durapipe as dp
from durapipe.security import redact
from durapipe.testing import FakeProvider, Reply, Status
from tests.security.history import history_text
from tests.support import WorkerProcess, cli_env, durapipe_command

FAKE_KEY = "sk-durapipe-FAKE-4f9a1c7e2b"
PIPELINE = """
version: 1
pipes:
  summarize:
    kind: llm
    model: openai/fake-gpt
    inputs: {text: text}
    prompt: "Summarize: {{ text }}"
    retry: {max_attempts: 1}
"""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
def span_exporter(tracing: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    """Spans of this process: the global provider's, so durapipe's own spans count too."""
    tracing[1].clear()
    return tracing[1]


async def test_a_key_from_the_secrets_file_reaches_the_provider_and_nothing_else(
    fake: FakeProvider,
    temporal_address: str,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    tmp_path: Path,
) -> None:
    pipeline_file = tmp_path / "pipes.yaml"
    pipeline_file.write_text(PIPELINE)
    secrets = tmp_path / "provider.env"
    secrets.write_text(
        f"# provider credentials\nOPENAI_API_KEY={FAKE_KEY}\nOPENAI_API_BASE={fake.base_url}\n"
    )
    worker = WorkerProcess(
        pipeline_file,
        temporal_address,
        task_queue,
        tmp_path / "worker.log",
        "--secrets-file",
        str(secrets),
    )
    # The second call fails the way a provider does when it echoes the key it was sent.
    fake.script(
        "fake-gpt",
        [
            Reply(content="a summary"),
            Status(401, message=f"Incorrect API key provided: {FAKE_KEY}"),
        ],
    )
    run_ids = [f"secret-ok-{task_queue}", f"secret-401-{task_queue}"]
    try:
        outputs = [
            subprocess.run(
                durapipe_command(
                    "run", "summarize", "--file", str(pipeline_file), "--input", "text=the council met",
                    "--id", run_id, "--address", temporal_address, "--task-queue", task_queue,
                ),
                capture_output=True, text=True, env=cli_env(), timeout=120,
            )
            for run_id in run_ids
        ]  # fmt: skip
    finally:
        worker.stop()
    assert outputs[0].returncode == 0, outputs[0].stderr
    assert "a summary" in outputs[0].stdout
    assert outputs[1].returncode == 1 and "durapipe.AuthenticationError" in outputs[1].stderr
    assert "Incorrect API key provided: [redacted]" in outputs[1].stderr

    # Not vacuous: the key did travel, in the Authorization header, to the provider.
    assert [c.headers.get("Authorization") for c in fake.calls] == [f"Bearer {FAKE_KEY}"] * 2

    searched = await history_text(temporal_env.client, run_ids)
    assert "the council met" in searched  # the search sees payloads (nothing is encrypted here)
    places = {
        "history": searched,
        "worker log": (tmp_path / "worker.log").read_text(),
        "CLI output": "".join(o.stdout + o.stderr for o in outputs),
    }
    assert "OPENAI_API_KEY" in places["worker log"]  # the log names what it loaded...
    for place, text in places.items():
        assert FAKE_KEY not in text, place  # ...but never a value


async def test_no_span_or_log_record_carries_the_key(
    fake: FakeProvider,
    temporal_address: str,
    task_queue: str,
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    monkeypatch.setenv("OPENAI_API_BASE", fake.base_url)
    fake.script("fake-gpt", [Reply(content="ok"), Status(401, message=f"bad key {FAKE_KEY}")])
    pipeline = dp.load_yaml(PIPELINE)
    client = await Client.connect(
        temporal_address,
        plugins=[dp.DurapipePlugin(pipeline)],
        interceptors=[TracingInterceptor(trace.get_tracer(__name__))],
    )
    caplog.set_level(logging.DEBUG)
    async with dp.build_worker(client, task_queue=task_queue):
        await dp.run(client, pipeline, "summarize", {"text": "x"}, task_queue=task_queue)
        with pytest.raises(dp.StepFailed, match=r"\[redacted\]"):
            await dp.run(
                client,
                pipeline,
                "summarize",
                {"text": "y"},
                run_id=f"s-{uuid.uuid4().hex[:6]}",
                task_queue=task_queue,
            )
    assert len(fake.calls) == 2 and fake.calls[0].headers["Authorization"] == f"Bearer {FAKE_KEY}"
    spans = span_exporter.get_finished_spans()
    assert spans, "the tracing interceptor exported no spans"
    exported = "\n".join(span.to_json() for span in spans)
    assert FAKE_KEY not in exported
    assert FAKE_KEY not in caplog.text


def test_credentials_in_settings_are_refused_naming_pipe_and_field() -> None:
    text = PIPELINE.replace(
        "    retry:",
        '    settings: {api_key: "sk-x", extra_headers: {Authorization: "Bearer y"}, temperature: 0}\n    retry:',
    )
    with pytest.raises(dp.PipelineError) as raised:
        dp.validate(dp.load_yaml(text))
    wheres = [p.where for p in raised.value.problems]
    assert wheres == [
        "pipe 'summarize', field 'settings.api_key'",
        "pipe 'summarize', field 'settings.extra_headers'",
    ]
    assert "worker's environment" in raised.value.problems[0].message


def test_secrets_file_errors_do_not_show_values(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text("OPENAI_API_KEY=sk-abc\nthis line is not valid sk-hidden\n")
    with pytest.raises(dp.ConfigError, match="line 2: expected KEY=VALUE") as raised:
        dp.security.load_secrets_file(bad)
    assert "sk-hidden" not in str(raised.value)


def test_connect_options_never_print_an_api_key() -> None:
    options = dp.ConnectOptions(address="ns.tmprl.cloud:7233", api_key=FAKE_KEY)
    shown = [repr(options), str(options), f"{options}", f"{options!r}"]
    assert "ns.tmprl.cloud:7233" in shown[0]  # not vacuous: the options are shown
    assert all(FAKE_KEY not in text for text in shown)


@pytest.mark.parametrize(
    ("message", "masked"),
    [
        (
            "Connection error to https://svc:hunter2-pass@gateway.example/v1/chat",
            "Connection error to https://[redacted]@gateway.example/v1/chat",
        ),
        (
            "GET http://tok_abcdef@10.0.0.1:8080/x failed",
            "GET http://[redacted]@10.0.0.1:8080/x failed",
        ),
        # Not a user part: an @ after the host, in a path or query, and an e-mail address.
        ("https://host.example/users/@me?to=a@b.c", "https://host.example/users/@me?to=a@b.c"),
        ("write to ops@example.com", "write to ops@example.com"),
    ],
)
def test_a_urls_user_part_is_redacted_whatever_variable_it_came_from(
    message: str, masked: str
) -> None:
    # An endpoint's credentials ride in OPENAI_API_BASE=https://user:password@host, a name no
    # credential pattern matches, and litellm's connection errors quote the URL they called.
    assert (
        redact(message, environ={"OPENAI_API_BASE": "https://svc:hunter2-pass@gateway.example"})
        == masked
    )
