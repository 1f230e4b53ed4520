"""What a user sees of runs on the real dev server: step records vs history, `show`, `runs`, metrics.

One worker (in this process, with a Prometheus endpoint) serves three runs: the example pipeline on
the offline model (free), the same pipeline on the fake provider with prices (paid), and a pipe
whose steps are retried and fail.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata

import durapipe as dp
from durapipe.cli._live import follow_live
from durapipe.ops._dev import free_port
from durapipe.testing.fake_provider import Reply, Status
from durapipe.workflows import STEPS_QUERY
from durapipe.workflows._search import COST_USD, INPUT_TOKENS, PIPE, SEARCH_ATTRIBUTES, STEPS
from tests.conftest import ARTICLE, EXAMPLES
from tests.support import history_events, priced_openai, run_cli

FAST_RETRY = {"max_attempts": 3, "initial_interval": 0.1, "max_interval": 0.1}
MODEL = "gpt-obs"


def shaky_pipeline() -> dp.Pipeline:
    from tests.observe_tools import always_fail, fail_first, shout

    ask = dp.llm(
        "ask",
        inputs={"token": str},
        prompt="Echo {{ token }}",
        model=f"openai/{MODEL}",
        retry=FAST_RETRY,
    )
    first = dp.tool(fail_first, retry=FAST_RETRY)
    broken = dp.tool(always_fail, retry={**FAST_RETRY, "max_attempts": 2})
    shaky = dp.sequence(
        "shaky",
        inputs={"token": str},
        steps=[dp.step(ask), dp.step(first), dp.step(broken), dp.step(dp.tool(shout))],
    )
    return dp.pipeline(shaky)


@dataclass
class Observed:
    client: Any
    address: str
    metrics_url: str
    free_id: str
    paid_id: str
    shaky_id: str
    paid: dp.RunResult
    shaky_query: list[dp.StepRecord]
    paid_details: str
    paid_memo: dict[str, Any]


@pytest.fixture(scope="module")
async def observed(temporal_address: str) -> AsyncIterator[Observed]:
    brief_yaml = dp.load(EXAMPLES / "brief.yaml")
    task_queue = f"observe-{uuid.uuid4().hex[:8]}"
    shaky = shaky_pipeline()
    paid_brief = brief_yaml.model_copy(
        update={"models": {alias: f"openai/{MODEL}" for alias in brief_yaml.models}}
    )
    metrics = f"127.0.0.1:{free_port()}"
    with priced_openai({MODEL: (1e-6, 2e-6)}) as fake:
        client = await dp.connect(
            temporal_address,
            pipeline=shaky,
            tools={"brief_tools:count_words": __import__("brief_tools").count_words},
            telemetry=dp.Telemetry(metrics_address=metrics),
        )
        await dp.ops.check_search_attributes(client)
        ids = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in ("free", "paid", "shaky")}
        async with dp.build_worker(client, task_queue=task_queue):
            started = await dp.start(
                client,
                brief_yaml,
                "brief",
                {"article": ARTICLE},
                run_id=ids["free"],
                task_queue=task_queue,
            )
            # The terminal view, following a real run to its end.
            free = await follow_live(started)
            assert len(free.steps) == 5
            paid = await dp.run(
                client,
                paid_brief,
                "brief",
                {"article": ARTICLE},
                run_id=ids["paid"],
                task_queue=task_queue,
            )
            fake.script(MODEL, [Status(500), Reply(content="echo")])
            with pytest.raises(dp.StepFailed):
                await dp.run(
                    client,
                    shaky,
                    "shaky",
                    {"token": ids["shaky"]},
                    run_id=ids["shaky"],
                    task_queue=task_queue,
                )
            query = await client.get_workflow_handle(ids["shaky"]).query(
                STEPS_QUERY, result_type=list[dp.StepRecord]
            )
            handle = client.get_workflow_handle(ids["paid"])
            metadata = await handle.query(
                "__temporal_workflow_metadata", result_type=WorkflowMetadata
            )
            memo = await (await handle.describe()).memo()
            yield Observed(
                client,
                temporal_address,
                f"http://{metrics}/metrics",
                ids["free"],
                ids["paid"],
                ids["shaky"],
                paid,
                query,
                metadata.current_details,
                memo,
            )


def history_attempts(events: list[Any]) -> dict[str, tuple[int, str]]:
    """Activity id -> (attempt it ended on, succeeded/failed), read from the history."""
    ids: dict[int, str] = {}
    attempts: dict[int, int] = {}
    ended: dict[str, tuple[int, str]] = {}
    for e in events:
        if e.HasField("activity_task_scheduled_event_attributes"):
            ids[e.event_id] = e.activity_task_scheduled_event_attributes.activity_id
        elif e.HasField("activity_task_started_event_attributes"):
            attempts[e.event_id] = e.activity_task_started_event_attributes.attempt
        for field, status in (
            ("activity_task_completed_event_attributes", "succeeded"),
            ("activity_task_failed_event_attributes", "failed"),
        ):
            if e.HasField(field):
                attrs = getattr(e, field)
                ended[ids[attrs.scheduled_event_id]] = (attempts[attrs.started_event_id], status)
    return ended


def leaf_view(records: list[dp.StepRecord]) -> dict[str, tuple[int, str]]:
    return {r.path: (r.attempts, r.status) for r in records if r.status in ("succeeded", "failed")}


async def test_step_records_and_show_agree_with_the_history(observed: Observed) -> None:
    events = await history_events(observed.client, observed.shaky_id)
    from_history = history_attempts(events)
    assert from_history == {
        "ask": (2, "succeeded"),  # the provider answered 500 once
        "fail_first": (2, "succeeded"),
        "always_fail": (2, "failed"),
    }
    assert leaf_view(observed.shaky_query) == from_history
    shown = await asyncio.to_thread(
        run_cli, "show", observed.shaky_id, "--json", "--address", observed.address
    )
    assert shown.returncode == 0, shown.stderr
    records = [dp.StepRecord.model_validate(s) for s in json.loads(shown.stdout)["steps"]]
    assert leaf_view(records) == from_history
    assert [(r.path, r.status) for r in records] == [
        ("ask", "succeeded"),
        ("fail_first", "succeeded"),
        ("always_fail", "failed"),
        ("shout", "skipped"),
    ]
    broken = records[2]
    assert (broken.error_type, broken.error) == ("ValueError", f"cannot handle {observed.shaky_id}")
    assert records[0].model == f"openai/{MODEL}" and records[0].cost_usd > 0
    text = await asyncio.to_thread(
        run_cli, "show", observed.shaky_id, "--address", observed.address
    )
    assert "✗ always_fail (tool)  failed  2 attempts" in text.stdout
    assert "ValueError: cannot handle" in text.stdout


async def test_runs_filters_by_pipe_and_cost_search_attributes(observed: Observed) -> None:
    assert observed.paid.usage.cost_usd > 0
    deadline = time.monotonic() + 30
    while True:  # visibility is eventually consistent
        paid = await dp.list_runs(observed.client, pipe="brief", min_cost=1e-9, limit=100)
        every = await dp.list_runs(observed.client, pipe="brief", limit=100)
        if {observed.paid_id, observed.free_id} <= {r.run_id for r in every} and any(
            r.run_id == observed.paid_id and r.steps == 4 for r in paid
        ):
            break
        assert time.monotonic() < deadline, (paid, every)
        await asyncio.sleep(0.2)
    assert observed.free_id not in {r.run_id for r in paid}
    row = next(r for r in paid if r.run_id == observed.paid_id)
    usage = observed.paid.usage
    assert (row.pipe, row.status, row.input_tokens, row.output_tokens) == (
        "brief",
        "completed",
        usage.input_tokens,
        usage.output_tokens,
    )
    assert row.cost_usd == pytest.approx(usage.cost_usd)
    cli = await asyncio.to_thread(
        run_cli,
        "runs",
        "--pipe",
        "brief",
        "--min-cost",
        "1e-9",
        "--json",
        "--limit",
        "100",
        "--address",
        observed.address,
    )
    assert cli.returncode == 0, cli.stderr
    listed = {r["run_id"] for r in json.loads(cli.stdout)}
    assert observed.paid_id in listed and observed.free_id not in listed
    failed = await dp.list_runs(observed.client, pipe="shaky", status="failed")
    assert observed.shaky_id in {r.run_id for r in failed}


async def test_prometheus_endpoint_serves_token_and_cost_counters(observed: Observed) -> None:
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(observed.metrics_url, timeout=10).read().decode()
    )

    def total(name: str) -> float:
        pattern = rf"^{name}(?:_total)?\{{[^}}]*model=\"openai/{MODEL}\"[^}}]*\}} (\S+)$"
        return sum(float(v) for v in re.findall(pattern, body, re.MULTILINE))

    tokens = observed.paid.usage.input_tokens
    assert total("durapipe_input_tokens") >= tokens > 0
    assert total("durapipe_output_tokens") > 0
    assert total("durapipe_cost_microusd") >= round(observed.paid.usage.cost_usd * 1e6) > 0
    assert "temporal_" in body  # the SDK's own metrics share the endpoint
    # Counters made once per worker and label set carry each activity's labels all the same.
    for name in ("durapipe_calls", "durapipe_cache_hits"):
        lines = re.findall(rf"^{name}(?:_total)?\{{([^}}]*)\}} \S+$", body, re.MULTILINE)
        assert lines, name
        labels = set(re.findall(r'(\w+)="', lines[0]))
        assert {"kind", "model", "namespace", "task_queue", "activity_type"} <= labels, lines[0]
    assert total("durapipe_calls") > 0


async def test_ui_shows_current_details_and_no_memo(observed: Observed) -> None:
    # No memo: nothing reads it (the pipe is a search attribute), and workers decode it per start.
    assert observed.paid_memo == {}
    assert observed.paid_details == (
        "pipe brief: succeeded: sequence step fact_check (5 of 5 steps done)"
    )


async def test_run_totals_are_upserted_at_most_every_two_seconds_and_exact_at_the_end(
    temporal_address: str, task_queue: str
) -> None:
    ask = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}")
    steps = [dp.step(ask, name=f"s{i}") for i in range(20)]
    pipeline = dp.pipeline(dp.sequence("twenty", inputs={"question": str}, steps=steps))
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"twenty-{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    async with dp.build_worker(client, task_queue=task_queue):
        await dp.run(
            client, pipeline, "twenty", {"question": "q"}, run_id=run_id, task_queue=task_queue
        )
    took = time.monotonic() - began
    events = await history_events(client, run_id)
    upserts = sum(e.HasField("upsert_workflow_search_attributes_event_attributes") for e in events)
    # The patch's version marker, the run's start, one per 2 s of steps at most, and its end.
    assert upserts <= 3 + took / 2 and upserts < len(steps)
    attributes = (await client.get_workflow_handle(run_id).describe()).typed_search_attributes
    assert attributes.get(STEPS) == len(steps)
    assert attributes.get(PIPE) == "twenty"


async def test_a_run_starts_with_its_pipe_from_its_client_and_upserts_totals_only_at_its_end(
    temporal_address: str, task_queue: str
) -> None:
    ask = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}")
    pipeline = dp.pipeline(dp.sequence("one", inputs={"question": str}, steps=[dp.step(ask)]))
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"one-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        await dp.run(
            client, pipeline, "one", {"question": "q"}, run_id=run_id, task_queue=task_queue
        )
        metadata = await client.get_workflow_handle(run_id).query(
            "__temporal_workflow_metadata", result_type=WorkflowMetadata
        )
    # The UI's details count one step in the singular (they said "(1 of 1 steps done)").
    assert metadata.current_details == "pipe one: succeeded: llm step ask (1 of 1 step done)"
    events = await history_events(client, run_id)
    started = events[0].workflow_execution_started_event_attributes.search_attributes
    assert set(started.indexed_fields) == {PIPE.name}  # workflow version 2: the pipe only
    upserts = [
        e.upsert_workflow_search_attributes_event_attributes
        for e in events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]

    assert len(upserts) == 1  # the end's: none at the start (one history event less per run)
    # The four totals; the pipe was set at the start and never changes.
    assert set(upserts[0].search_attributes.indexed_fields) == set(SEARCH_ATTRIBUTES) - {PIPE.name}
    attributes = (await client.get_workflow_handle(run_id).describe()).typed_search_attributes
    assert attributes.get(STEPS) == 1
    assert (attributes.get(INPUT_TOKENS) or 0) > 0
    assert attributes.get(PIPE) == "one"


async def test_a_run_that_finishes_no_step_still_ends_with_all_five_attributes(
    temporal_address: str, task_queue: str
) -> None:
    # A condition whose outcome is "continue" runs nothing: no step finishes, yet the run's end
    # must set its totals (zeros), since from workflow version 2 its client set only the pipe.
    skip = dp.condition(
        "skip",
        inputs={"flag": str},
        expression="flag",
        outcomes={"x": "continue"},
        default="continue",
    )
    pipeline = dp.pipeline(skip)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"skip-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        await dp.run(client, pipeline, "skip", {"flag": "x"}, run_id=run_id, task_queue=task_queue)
    attributes = (await client.get_workflow_handle(run_id).describe()).typed_search_attributes
    assert {key.name: attributes.get(key) for key in (PIPE, COST_USD, INPUT_TOKENS, STEPS)} == {
        PIPE.name: "skip",
        COST_USD.name: 0.0,
        INPUT_TOKENS.name: 0,
        STEPS.name: 0,
    }
