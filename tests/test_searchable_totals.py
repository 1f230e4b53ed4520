"""Searchable totals are the starting client's choice: off, a run upserts nothing (its history holds
the events of the same work written by hand), and `runs`/`show` read its totals from the run."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.client._totals import QUERY_TIMEOUT
from durapipe.runtime import PipeRun
from durapipe.runtime._calls import WORKFLOW_VERSION
from durapipe.testing.fake_provider import Reply
from durapipe.workflows._search import COST_USD, PIPE
from tests.conftest import EXAMPLES
from tests.support import (
    acli,
    eventually,
    held_pipeline,
    history_events,
    priced_openai,
    run_cli,
)

MODEL = "gpt-totals"
UPSERT = "upsert_workflow_search_attributes_event_attributes"


def paid_pipeline(pipe: str) -> dp.Pipeline:
    ask = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}", model=f"openai/{MODEL}")
    return dp.pipeline(dp.sequence(pipe, inputs={"question": str}, steps=[dp.step(ask)]))


@dataclass
class Runs:
    client: Any
    address: str
    pipe: str
    on_id: str
    off_id: str
    off: dp.RunResult


@pytest.fixture(scope="module")
async def runs(temporal_address: str) -> AsyncIterator[Runs]:
    # A pipe of its own, so the listings below see only these two runs.
    pipe = f"totals{uuid.uuid4().hex[:8]}"
    pipeline = paid_pipeline(pipe)
    task_queue = f"totals-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as env, priced_openai({MODEL: (1e-6, 2e-6)}):
        client = await dp.connect(temporal_address, pipeline=pipeline)
        on_id, off_id = f"on-{uuid.uuid4().hex[:8]}", f"off-{uuid.uuid4().hex[:8]}"
        async with dp.build_worker(client, task_queue=task_queue):
            await dp.run(
                client, pipeline, pipe, {"question": "q"}, run_id=on_id, task_queue=task_queue
            )
            env.setenv("DURAPIPE_SEARCHABLE_TOTALS", "off")  # the client's setting chooses
            off = await dp.run(
                client, pipeline, pipe, {"question": "q"}, run_id=off_id, task_queue=task_queue
            )
    yield Runs(client, temporal_address, pipe, on_id, off_id, off)


async def test_a_run_without_searchable_totals_upserts_nothing(runs: Runs) -> None:
    on = await history_events(runs.client, runs.on_id)
    off = await history_events(runs.client, runs.off_id)
    assert sum(e.HasField(UPSERT) for e in on) == 1  # the end's upsert
    assert sum(e.HasField(UPSERT) for e in off) == 0
    # The hand-written one-step workflow's events: start, 3 per workflow task (two tasks), the
    # activity's scheduled/started/completed, completion.
    assert len(off) == len(on) - 1 == 11
    [started] = await runs.client.data_converter.decode(
        off[0].workflow_execution_started_event_attributes.input.payloads, [PipeRun]
    )
    assert (started.workflow_version, started.searchable_totals) == (WORKFLOW_VERSION, False)
    attrs = (await runs.client.get_workflow_handle(runs.off_id).describe()).typed_search_attributes
    assert attrs.get(PIPE) == runs.pipe and attrs.get(COST_USD) is None


async def test_runs_and_show_read_the_totals_of_a_run_without_searchable_totals(
    runs: Runs,
) -> None:
    usage = runs.off.usage
    assert usage.cost_usd > 0

    async def both_listed() -> list[dp.RunSummary] | None:
        found = await dp.list_runs(runs.client, pipe=runs.pipe, min_cost=1e-9)
        return found if {r.run_id for r in found} == {runs.on_id, runs.off_id} else None

    # Visibility is eventually consistent.
    listed = await eventually(both_listed, "both runs listed by --min-cost", timeout=30)
    found = {r.run_id: r for r in listed}
    on, off = found[runs.on_id], found[runs.off_id]
    assert (on.searchable_totals, off.searchable_totals) == (True, False)
    assert off.totals_known
    assert (off.input_tokens, off.output_tokens, off.steps) == (
        usage.input_tokens,
        usage.output_tokens,
        1,
    )
    assert off.cost_usd == pytest.approx(usage.cost_usd)
    assert (on.input_tokens, on.steps) == (off.input_tokens, off.steps)
    # Filtered here, not by the server: above its cost, it is not listed.
    above = await dp.list_runs(runs.client, pipe=runs.pipe, min_cost=usage.cost_usd * 10)
    assert above == []
    cli = await asyncio.to_thread(
        run_cli, "runs", "--pipe", runs.pipe, "--min-cost", "1e-9", "--address", runs.address
    )
    assert cli.returncode == 0, cli.stderr
    [off_line] = [line for line in cli.stdout.splitlines() if line.startswith(runs.off_id)]
    assert off_line.endswith(
        f"1 step  {usage.input_tokens} in / {usage.output_tokens} out tokens  "
        f"${usage.cost_usd:.6f} *"
    )
    assert "1 of these runs has no searchable totals" in cli.stderr
    assert "--min-cost was applied to them here, not by the server" in cli.stderr
    shown = await asyncio.to_thread(run_cli, "show", runs.off_id, "--address", runs.address)
    assert shown.returncode == 0, shown.stderr
    header = shown.stdout.splitlines()[0]
    assert header.endswith(
        f"{usage.input_tokens} in / {usage.output_tokens} out tokens  ${usage.cost_usd:.6f} * "
        "(read from the run: not searchable)"
    )
    as_json = await asyncio.to_thread(
        run_cli, "show", runs.off_id, "--json", "--address", runs.address
    )
    described = json.loads(as_json.stdout)
    assert (described["searchable_totals"], described["steps"] and described["input_tokens"]) == (
        False,
        usage.input_tokens,
    )


async def test_a_running_run_without_searchable_totals_answers_its_totals_by_query(
    temporal_address: str, task_queue: str
) -> None:
    # An approval holds the run open after its first step: its totals come from its query.
    pipe = f"held{uuid.uuid4().hex[:8]}"
    pipeline = held_pipeline(pipe)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        handle = await dp.start(
            client,
            pipeline,
            pipe,
            {"question": "q"},
            task_queue=task_queue,
            searchable_totals=False,
        )

        async def waiting() -> dp.RunSummary | None:
            summary = await dp.client.describe_run(client, handle.run_id)
            return summary if summary.steps == 1 else None

        summary = await eventually(waiting, "the first step's totals read by query")
        assert summary.status == "running" and not summary.searchable_totals
        assert summary.totals_known and summary.input_tokens > 0
        await handle.cancel()


def test_a_bad_setting_is_one_sentence_and_a_failed_exit(temporal_address: str) -> None:
    result = run_cli(
        "run",
        "brief",
        "--file",
        str(EXAMPLES / "brief.yaml"),
        "--input",
        "article=x",
        "--address",
        temporal_address,
        env={"DURAPIPE_SEARCHABLE_TOTALS": "maybe"},
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "error: DURAPIPE_SEARCHABLE_TOTALS='maybe' is not valid: expected on or off"
    )


async def test_the_run_command_flag_turns_them_off(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    pipeline_file = tmp_path / "ask.yaml"
    pipeline_file.write_text(
        "version: 1\npipes:\n  ask:\n    kind: llm\n    inputs:\n      question: text\n"
        "    prompt: '{{ question }}'\n",
        encoding="utf-8",
    )
    client = await dp.connect(temporal_address, pipeline=dp.load(pipeline_file))
    async with dp.build_worker(client, task_queue=task_queue):
        result = await asyncio.to_thread(
            run_cli,
            "run",
            "ask",
            "--file",
            str(pipeline_file),
            "--input",
            "question=why",
            "--no-searchable-totals",
            "--detach",
            "-t",
            task_queue,
            "--address",
            temporal_address,
        )
        assert result.returncode == 0, result.stderr
        run_id = result.stdout.strip()
        await dp.RunHandle(client, run_id).result()
    events = await history_events(client, run_id)
    assert not any(e.HasField(UPSERT) for e in events)
    assert len(events) == 11


def test_the_flag_is_refused_on_a_local_run(tmp_path: Path) -> None:
    pipeline_file = tmp_path / "ask.yaml"
    pipeline_file.write_text(
        "version: 1\npipes:\n  ask:\n    kind: llm\n    prompt: 'hi'\n", encoding="utf-8"
    )
    result = run_cli(
        "run", "ask", "--file", str(pipeline_file), "--local", "--no-searchable-totals"
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "error: --[no-]searchable-totals only applies on Temporal; a --local run has no search "
        "attributes"
    )


async def test_min_cost_reads_on_past_limit_cheap_runs_and_says_where_it_stopped(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One expensive run, then three cheaper ones, none with searchable totals: with --limit 2 the
    # expensive run is older than `limit` runs that --min-cost drops.
    pipe = f"scan{uuid.uuid4().hex[:8]}"
    pipeline = paid_pipeline(pipe)
    task_queue = f"scan-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DURAPIPE_SEARCHABLE_TOTALS", "off")
    with priced_openai({MODEL: (1e-6, 2e-6)}):
        client = await dp.connect(temporal_address, pipeline=pipeline)
        async with dp.build_worker(client, task_queue=task_queue):
            questions = ["why " * 400, "q", "q", "q"]
            ids = [f"{pipe}-{n}" for n in range(len(questions))]
            results = [
                await dp.run(
                    client, pipeline, pipe, {"question": q}, run_id=i, task_queue=task_queue
                )
                for q, i in zip(questions, ids, strict=True)
            ]
    expensive = results[0]
    floor = max(r.usage.cost_usd for r in results[1:]) * 2
    assert expensive.usage.cost_usd > floor

    async def listed() -> dp.client.RunListing:
        async def every_run_listed() -> bool:
            return len(await dp.list_runs(client, pipe=pipe, limit=10)) == len(questions)

        # Visibility is eventually consistent.
        await eventually(every_run_listed, "every run listed", timeout=30)
        return await dp.client.find_runs(client, pipe=pipe, min_cost=floor, limit=2)

    listing = await listed()
    assert [r.run_id for r in listing.runs] == [ids[0]]
    assert (listing.scanned, listing.scan_cut) == (4, False)
    # With the bound below the runs' count the scan stops, says so, and the notes print even
    # when nothing matched.
    monkeypatch.setattr(dp.client._runs, "SCAN_AT_LEAST", 2)
    monkeypatch.setattr(dp.client._runs, "SCAN_PER_LIMIT", 1)
    cut = await dp.client.find_runs(client, pipe=pipe, min_cost=floor, limit=2)
    assert (cut.runs, cut.scanned, cut.scan_cut) == ([], 2, True)
    cli = await acli(
        temporal_address, "runs", "--pipe", pipe, "--min-cost", str(floor), "--limit", "2"
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stderr.splitlines() == [
        "no runs match",
        "--min-cost read the totals of the newest 2 runs without searchable totals and stopped "
        "there: older runs without searchable totals were not looked at",
    ]


async def test_running_runs_on_a_queue_no_worker_polls_are_named_without_waiting(
    temporal_address: str, task_queue: str
) -> None:
    # Runs on a queue no worker polls: a totals query would wait out its 2 s for nobody (16 such
    # runs took 32 s one after another, one timeout at once). The queue's pollers, asked once,
    # say so at once.
    pipe = f"noworker{uuid.uuid4().hex[:8]}"
    pipeline = paid_pipeline(pipe)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    count = 16
    handles = [
        await dp.start(
            client,
            pipeline,
            pipe,
            {"question": "q"},
            task_queue=task_queue,
            searchable_totals=False,
        )
        for _ in range(count)
    ]
    try:
        listed = f"{PIPE.name} = '{pipe}'"

        async def all_listed() -> bool:
            return len([e async for e in client.list_workflows(listed)]) >= count

        # Visibility is eventually consistent.
        await eventually(all_listed, f"{count} runs listed", timeout=30)
        began = time.monotonic()
        found = await dp.list_runs(client, pipe=pipe)
        took = time.monotonic() - began
        assert len(found) == count and not any(r.totals_known for r in found)
        assert {r.task_queue for r in found} == {task_queue}
        nobody = f"no worker polls task queue '{task_queue}'"
        assert {r.totals_unknown_why for r in found} == {nobody}
        assert took < QUERY_TIMEOUT.total_seconds(), took  # no query waited for its timeout
        cli = await acli(temporal_address, "runs", "--pipe", pipe)
        assert cli.returncode == 0, cli.stderr
        assert (
            f"the totals of {count} running runs could not be read; {nobody}"
        ) in cli.stderr.splitlines()
        shown = await acli(temporal_address, "describe", handles[0].run_id)
        assert f"(not searchable, or not yet, and the run could not tell them: {nobody})" in (
            shown.stdout
        )
        # Unknown totals are null in JSON, not a free run's zeros.
        as_json = await acli(temporal_address, "runs", "--pipe", pipe, "--json")
        described = await acli(temporal_address, "describe", handles[0].run_id, "--json")
        for shown in [*json.loads(as_json.stdout), json.loads(described.stdout)]:
            totals = [shown[k] for k in ("cost_usd", "input_tokens", "output_tokens", "steps")]
            assert (totals, shown["totals_known"]) == ([None] * 4, False)
    finally:
        for handle in handles:
            await client.get_workflow_handle(handle.run_id).terminate()


def test_describe_says_it_asks_a_running_run_without_searchable_totals() -> None:
    shown = run_cli("describe", "--help")
    assert "without asking its workers" not in shown.stdout
    assert "asked for them by query" in " ".join(shown.stdout.split())


async def test_a_completed_runs_totals_are_read_without_its_stored_sealed_output(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A large output, sealed and in the payload store: the totals still decode, with the keys.
    monkeypatch.setenv("DURAPIPE_ENCRYPTION_KEYS", f"k1:{dp.security.new_encryption_key()}")
    monkeypatch.setenv("DURAPIPE_PAYLOAD_STORE", str(tmp_path / "payloads"))
    monkeypatch.setenv("DURAPIPE_PAYLOAD_THRESHOLD", "1KiB")
    monkeypatch.setenv("DURAPIPE_SEARCHABLE_TOTALS", "off")
    pipe = f"large{uuid.uuid4().hex[:8]}"
    pipeline = paid_pipeline(pipe)
    task_queue = f"large-{uuid.uuid4().hex[:8]}"
    with priced_openai({MODEL: (1e-6, 2e-6)}) as fake:
        fake.set_default(Reply(content="word " * 100_000))
        client = await dp.connect(temporal_address, pipeline=pipeline)
        run_id = f"{pipe}-1"
        async with dp.build_worker(client, task_queue=task_queue):
            done = await dp.run(
                client, pipeline, pipe, {"question": "q"}, run_id=run_id, task_queue=task_queue
            )
    assert len(done.output) >= 500_000
    summary = await dp.client.describe_run(client, run_id)
    assert (summary.status, summary.searchable_totals, summary.totals_known) == (
        "completed",
        False,
        True,
    )
    assert (summary.input_tokens, summary.output_tokens, summary.steps) == (
        done.usage.input_tokens,
        done.usage.output_tokens,
        1,
    )
    assert summary.cost_usd == pytest.approx(done.usage.cost_usd) and summary.cost_usd > 0
    # Without the keys the sealed result cannot be read: unknown, not zero.
    monkeypatch.delenv("DURAPIPE_ENCRYPTION_KEYS")
    keyless = await dp.connect(temporal_address, pipeline=pipeline)
    assert not (await dp.client.describe_run(keyless, run_id)).totals_known
