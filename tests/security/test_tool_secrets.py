"""A tool's failure that quotes a credential of its worker (a key in its environment, loaded from
``--secrets-file`` or set directly) reaches no history, log line, span or `durapipe show`: the
message is redacted whichever way the tool fails (`ToolError`, Temporal's `ApplicationError`, any
other exception), and the exception quoting it is not kept as the failure's cause."""

from __future__ import annotations

import logging
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment

import durapipe as dp
from tests.security import secret_tools
from tests.security.history import history_text

CRM_KEY = "crm-FAKE-key-93b1d7c0e4"


@pytest.mark.parametrize("tool", ["refused", "rejected", "broke", "detailed"])
async def test_a_tool_quoting_its_workers_key_leaves_it_nowhere(
    temporal_address: str,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    tracing: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tool: str,
) -> None:
    monkeypatch.setenv("CRM_API_KEY", CRM_KEY)
    tracing[1].clear()
    pipe = dp.tool(getattr(secret_tools, tool), name="find", retry={"max_attempts": 1})
    pipeline = dp.pipeline(pipe)
    client = await Client.connect(
        temporal_address,
        plugins=[dp.DurapipePlugin(pipeline)],
        interceptors=[TracingInterceptor(trace.get_tracer(__name__))],
    )
    caplog.set_level(logging.DEBUG)
    run_id = f"tool-key-{uuid.uuid4().hex[:6]}"
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed) as failed:
            await dp.run(
                client, pipeline, "find", {"customer": "c1"}, run_id=run_id, task_queue=task_queue
            )
        steps = await dp.RunHandle(client, run_id).steps()
    history = await history_text(temporal_env.client, [run_id])
    # Not vacuous: the tool did quote the key, and what it said still reads.
    assert "[redacted]" in (history if tool == "detailed" else failed.value.cause)
    places = {
        "failure": str(failed.value),
        "steps": "\n".join(str(s.error) for s in steps),
        "history": history,
        "log": caplog.text,
        "spans": "\n".join(s.to_json() for s in tracing[1].get_finished_spans()),
    }
    for place, text in places.items():
        assert CRM_KEY not in text, place
