"""Tracing and metrics of a run on the real dev server: the span tree and the Prometheus counters."""

from __future__ import annotations

import asyncio
import json
import re
import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import durapipe as dp
from tests.conftest import ARTICLE, EXAMPLES
from tests.support import eventually, run_cli


@pytest.fixture
def spans(tracing: tuple[TracerProvider, InMemorySpanExporter]) -> InMemorySpanExporter:
    """Every span of this process, including provider-call spans (global tracer provider)."""
    return tracing[1]


async def test_span_tree_run_child_activity_provider_call_with_genai_tokens(
    temporal_address: str, task_queue: str, brief_yaml: dp.Pipeline, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    telemetry = dp.Telemetry(tracer_provider=trace.get_tracer_provider())
    client = await dp.connect(temporal_address, pipeline=brief_yaml, telemetry=telemetry)
    run_id = f"traced-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client, brief_yaml, "brief", {"article": ARTICLE}, run_id=run_id, task_queue=task_queue
        )
    finished = spans.get_finished_spans()
    by_id = {s.context.span_id: s for s in finished if s.context}
    calls = [s for s in finished if s.name.startswith("chat ")]
    assert len(calls) == 3  # extract_claims, headline, fact_check/verify
    tokens = {r.path: (r.input_tokens, r.output_tokens) for r in result.steps}
    for call in calls:
        attrs = dict(call.attributes or {})
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.request.model"] == "durapipe/offline"
        assert attrs["gen_ai.system"] == "durapipe"
        activity = by_id[call.parent.span_id]  # type: ignore[union-attr]
        assert activity.name == "RunActivity:durapipe.llm"
        path = dict(activity.attributes or {})["temporalActivityID"]
        assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == tokens[
            path
        ]
        assert attrs["gen_ai.usage.input_tokens"] > 0
    verify = next(
        c
        for c in calls
        if dict(by_id[c.parent.span_id].attributes or {})["temporalActivityID"]  # type: ignore[union-attr]
        == "fact_check/verify"
    )
    # temporalio's TracingInterceptor parents a workflow's work on the span that started it (its
    # RunWorkflow span is a zero-length sibling), so the tree reads start -> start child -> activity.
    ancestors = [verify]
    while ancestors[-1].parent is not None:
        ancestors.append(by_id[ancestors[-1].parent.span_id])
    assert [(s.name, workflow_id(s)) for s in ancestors] == [
        ("chat durapipe/offline", None),
        ("RunActivity:durapipe.llm", f"{run_id}/fact_check"),
        ("StartActivity:durapipe.llm", f"{run_id}/fact_check"),
        ("StartChildWorkflow:durapipe.pipe", run_id),
        ("StartWorkflow:durapipe.pipe", run_id),
    ]
    child_runs = [s for s in finished if s.name == "RunWorkflow:durapipe.pipe"]
    assert {workflow_id(s) for s in child_runs} == {run_id, f"{run_id}/fact_check"}


def workflow_id(span: ReadableSpan) -> object:
    return dict(span.attributes or {}).get("temporalWorkflowID")


async def test_a_run_started_by_the_cli_is_one_trace_from_the_client_start_to_the_provider_calls(
    temporal_address: str, task_queue: str, brief_yaml: dp.Pipeline, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    telemetry = dp.Telemetry(tracer_provider=trace.get_tracer_provider())
    client = await dp.connect(temporal_address, pipeline=brief_yaml, telemetry=telemetry)
    run_id = f"cli-traced-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        ran = await asyncio.to_thread(
            run_cli,
            "run", "brief", "--file", str(EXAMPLES / "brief.yaml"), "--input", f"article={ARTICLE}",
            "--json", "--id", run_id, "--address", temporal_address, "-t", task_queue,
            env={"OTEL_TRACES_EXPORTER": "console"},
        )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    json.loads(ran.stdout)  # the console exporter writes to stderr, never into the output
    start = re.search(
        r'"name": "StartWorkflow:durapipe.pipe",\s*"context": \{\s*"trace_id": "0x([0-9a-f]+)"',
        ran.stderr,
    )
    assert start, ran.stderr[-2000:]
    # Every span of the run; the progress queries `run` sends while it waits are reads by an
    # observer, each its own short trace.
    ours = [
        s
        for s in spans.get_finished_spans()
        if (str(workflow_id(s) or "").startswith(run_id) or s.name.startswith("chat "))
        and not s.name.startswith("HandleQuery")
    ]
    assert len([s for s in ours if s.name.startswith("StartActivity")]) == 4
    assert {f"{s.context.trace_id:032x}" for s in ours if s.context} == {start.group(1)}, [
        (s.name, workflow_id(s), f"{s.context.trace_id:032x}") for s in ours if s.context
    ]


async def test_a_run_started_without_tracing_is_one_trace_under_its_workers_root(
    temporal_address: str, task_queue: str, brief_yaml: dp.Pipeline, spans: InMemorySpanExporter
) -> None:
    # Workers own telemetry: a run started by a client without it (or by a schedule, below) sends
    # no trace context, and must still be one trace, rooted where the worker first ran it.
    spans.clear()
    telemetry = dp.Telemetry(tracer_provider=trace.get_tracer_provider())
    worker_client = await dp.connect(temporal_address, pipeline=brief_yaml, telemetry=telemetry)
    plain = await dp.connect(temporal_address, pipeline=brief_yaml)
    run_id = f"untraced-{uuid.uuid4().hex[:8]}"
    schedule_id = f"traced-schedule-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(worker_client, task_queue=task_queue):
        await dp.run(
            plain, brief_yaml, "brief", {"article": ARTICLE}, run_id=run_id, task_queue=task_queue
        )
        await dp.ops.create_schedule(
            plain, brief_yaml, "brief", {"article": ARTICLE}, schedule_id=schedule_id,
            every="1h", task_queue=task_queue,
        )  # fmt: skip
        try:
            await dp.ops.trigger_schedule(plain, schedule_id)
            scheduled = await eventually(
                lambda: _closed_run(plain, schedule_id), "the scheduled run", timeout=60
            )
        finally:
            await dp.ops.delete_schedule(plain, schedule_id)
    for started in (run_id, scheduled):
        ours = [
            s
            for s in spans.get_finished_spans()
            if str(workflow_id(s) or "").startswith(started) and s.context
        ]
        by_id = {s.context.span_id: s for s in ours if s.context}
        assert len([s for s in ours if s.name.startswith("StartActivity")]) == 4, started
        assert len({s.context.trace_id for s in ours if s.context}) == 1, [
            (s.name, workflow_id(s), s.parent) for s in ours
        ]
        [root] = [s for s in ours if s.parent is None]
        assert (root.name, workflow_id(root)) == ("RunPipe:durapipe.pipe", started)
        # Every span hangs from the root: run -> child -> activity, all in the run's trace.
        for span in ours:
            while span.parent is not None:
                span = by_id[span.parent.span_id]
            assert span is root
        provider_calls = [
            s for s in spans.get_finished_spans() if s.name.startswith("chat ") and s.parent
        ]
        assert len([c for c in provider_calls if c.parent and c.parent.span_id in by_id]) == 3, (
            started
        )


async def _closed_run(client: object, schedule_id: str) -> str | None:
    from temporalio.client import Client

    assert isinstance(client, Client)
    async for execution in client.list_workflows(
        f"WorkflowId STARTS_WITH '{schedule_id}' AND ExecutionStatus = 'Completed'"
    ):
        if "/" not in execution.id:  # the run, not its child workflow (`<run id>/fact_check`)
            return execution.id
    return None
