"""Recorded histories of the example pipelines replay against the current code (CI catches breaks)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from typer.testing import CliRunner

import durapipe as dp
from durapipe.adapters import WORKFLOW_NAME
from durapipe.cli import app
from durapipe.ops import _replay
from durapipe.runtime import PipeRun, RunResult
from durapipe.runtime._calls import WORKFLOW_VERSION
from durapipe.worker import durapipe_converter
from durapipe.workflows import PipeWorkflow, SandboxedPipeWorkflow, _workflow
from tests.support import (
    CONTROL,
    acli,
    eventually,
    history_events,
    patch_markers,
    started_as_version,
)

HERE = Path(__file__).parent / "histories"
HISTORIES = sorted(HERE.glob("*.json"))


@workflow.defn(name=WORKFLOW_NAME, sandboxed=False)
class ExtraActivityWorkflow(PipeWorkflow):
    """A deliberately incompatible change: one more activity before the pipe's steps."""

    @workflow.run
    async def run(self, run: PipeRun) -> RunResult:
        await workflow.execute_activity(
            "durapipe.tool", run, start_to_close_timeout=timedelta(seconds=5)
        )
        return await super().run(run)


def test_histories_are_recorded() -> None:
    assert {p.name for p in HISTORIES} == {
        "brief-recorded.json",
        "brief-recorded__fact_check.json",
        "brief-totals-every-2s.json",  # the run totals patch (durapipe.totals-every-2s)
        "brief-totals-every-2s__fact_check.json",
        # First totals from the client, decided by the patch (a run started without a version).
        "brief-totals-from-start.json",
        "brief-totals-from-start__fact_check.json",
        "brief-workflow-v1.json",  # PipeRun.workflow_version 1: those changes without markers
        "brief-workflow-v1__fact_check.json",
        # PipeRun.workflow_version 2: only the pipe set at the start, the totals at the end.
        "brief-workflow-v2.json",
        "brief-workflow-v2__fact_check.json",
        # PipeRun.workflow_version 3: searchable totals chosen by the client, on as in version 2
        "brief-workflow-v3.json",
        "brief-workflow-v3__fact_check.json",
        # ... and off: no upsert at all (DURAPIPE_SEARCHABLE_TOTALS=off when recorded)
        "brief-workflow-v3-totals-off.json",
        "brief-workflow-v3-totals-off__fact_check.json",
        # An agent looping tool calls (tests.histories.record_agents), top-level and nested,
        # recorded before its turns and tool calls counted against the run's steps.
        "looper-before-turn-steps.json",
        "asked-before-turn-steps.json",
        "asked-before-turn-steps__looper.json",
        # ... nested, 121 steps under DURAPIPE_MAX_RUN_STEPS=100 (three runs of the agent's
        # workflow, continued as new): more than its run held, once its turns count.
        "long_asked-before-turn-steps.json",
        "long_asked-before-turn-steps__long_looper.json",
        "long_asked-before-turn-steps__long_looper.run2.json",
        "long_asked-before-turn-steps__long_looper.run3.json",
        # ... and recorded after: the agent's turns and tool calls counted (the patch's marker).
        "looper-turn-steps.json",
        "asked-turn-steps.json",
        "asked-turn-steps__looper.json",
        # A nested agent lent the last 7 of DURAPIPE_MAX_RUN_STEPS=100, refused at turn 4: its
        # run counted its own step again, recorded before it left that step to its parent.
        "guarded-agent-step-twice.json",
        "guarded-agent-step-twice__helper.json",
        "guarded-agent-step-twice__reserve.json",
        # PipeRun.workflow_version 4 (DURAPIPE_MAX_RUN_STEPS=100 when recorded): the agent's
        # changes in force without their markers, only the cap's local activity recorded.
        "looper-workflow-v4.json",
        "asked-workflow-v4.json",
        "asked-workflow-v4__looper.json",
        # PipeRun.workflow_version 5 (DURAPIPE_MAX_RUN_STEPS=200 when recorded): a run asks the
        # cap only when it needs it. The top-level agent of 7 steps never asks; the sequence asks
        # before it lends its nested agent a share; the agent of 121 steps (three runs, continued
        # as new) asks in its second run at its 101st step, and its third asks as it starts.
        "looper-workflow-v5.json",
        "asked-workflow-v5.json",
        "asked-workflow-v5__looper.json",
        "long_looper-workflow-v5.json",
        "long_looper-workflow-v5.run2.json",
        "long_looper-workflow-v5.run3.json",
        # A parallel of a batch over 30 numbers beside three fixed two-step branches
        # (tests.histories.record_shares, DURAPIPE_MAX_RUN_STEPS=100): recorded before patch
        # durapipe.exact-static-shares, the free steps split among all four and the batch
        # refused (lent 23 of 90); and after, the batch lent all 90 (the patch's marker).
        "wide-even-split.json",
        "wide-even-split__big.json",
        "wide-even-split__one.json",
        "wide-even-split__two.json",
        "wide-even-split__three.json",
        "wide-exact-shares.json",
        "wide-exact-shares__big.json",
        "wide-exact-shares__one.json",
        "wide-exact-shares__two.json",
        "wide-exact-shares__three.json",
        # Two batches over lists their parallel holds, 150 and 20 numbers (record_shares two,
        # DURAPIPE_MAX_RUN_STEPS=200): each lent what its items need (patch
        # durapipe.known-list-shares' marker); the wide-* runs above find none and split as they ran.
        "two-known-list-shares.json",
        "two-known-list-shares__a.json",
        "two-known-list-shares__b.json",
        # An llm call cancelled after it paid for an answer, its re-ask in flight
        # (tests.histories.record_cancelled): it failed with type durapipe.Cancelled and its
        # spend, and the run ended as cancelled (patch durapipe.cancelled-spend's marker).
        "judge-cancelled-spend.json",
        # ... the same call in a nested run: the nested run failed with type durapipe.Cancelled
        # and its records, its parent counted their spend and ended as cancelled (patch
        # durapipe.cancelled-run-spend's marker, in the nested run's history).
        "outer-cancelled-run-spend.json",
        "outer-cancelled-run-spend__asked.json",
    }


def test_the_cancelled_spend_histories_hold_their_patch_markers() -> None:
    # Else the history would not check the patched path it was recorded for.
    history = dp.ops.load_history(HERE / "judge-cancelled-spend.json")
    assert patch_markers(list(history.events)) == ["durapipe.cancelled-spend"]
    nested = dp.ops.load_history(HERE / "outer-cancelled-run-spend__asked.json")
    assert patch_markers(list(nested.events)) == [
        "durapipe.cancelled-spend",
        "durapipe.cancelled-run-spend",
    ]


async def test_recorded_histories_replay_clean_against_the_current_code() -> None:
    reports = await dp.ops.replay([dp.ops.load_history(p) for p in HISTORIES])
    assert [(r.workflow_id, r.compatible, r.problem) for r in reports] == [
        (p.stem, True, None) for p in HISTORIES
    ]


async def test_recorded_histories_replay_clean_in_temporals_sandbox() -> None:
    # Workers run the workflow outside the sandbox; the sandbox still checks its code here (it
    # refuses I/O, clocks and randomness), and in the controller tests on Temporal.
    reports = await dp.ops.replay(
        [dp.ops.load_history(p) for p in HISTORIES], workflows=[SandboxedPipeWorkflow]
    )
    assert [(r.workflow_id, r.compatible, r.problem) for r in reports] == [
        (p.stem, True, None) for p in HISTORIES
    ]


async def test_an_extra_activity_is_reported_as_nondeterminism() -> None:
    reports = await dp.ops.replay(
        [dp.ops.load_history(p) for p in HISTORIES], workflows=[ExtraActivityWorkflow]
    )
    assert [r.compatible for r in reports] == [False] * len(HISTORIES)
    assert all("Nondeterminism" in (r.problem or "") for r in reports), reports


async def test_a_run_without_searchable_totals_replays_only_without_upserts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    off = HERE / "brief-workflow-v3-totals-off.json"
    history = dp.ops.load_history(off)
    started = history.events[0].workflow_execution_started_event_attributes
    [run] = await durapipe_converter().decode(started.input.payloads, [PipeRun])
    assert (run.workflow_version, run.searchable_totals) == (3, False)
    assert not any(
        e.HasField("upsert_workflow_search_attributes_event_attributes") for e in history.events
    )
    # Forced to upsert its totals as version 2 does, the recorded run no longer replays.
    monkeypatch.setattr(_workflow, "TOTALS_CHOSEN", WORKFLOW_VERSION + 1)
    [report] = await dp.ops.replay([history])
    assert not report.compatible and "Nondeterminism" in (report.problem or ""), report


def test_cli_replay_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    files = [arg for p in HISTORIES for arg in ("--file", str(p))]
    clean = runner.invoke(app, ["replay", *files])
    assert clean.exit_code == 0, clean.output
    assert "brief-recorded: compatible" in clean.output
    monkeypatch.setattr(_replay, "current_workflows", lambda: [ExtraActivityWorkflow])
    broken = runner.invoke(app, ["replay", *files])
    assert broken.exit_code == 1
    assert "brief-recorded: INCOMPATIBLE: NondeterminismError" in broken.output


def test_cli_replay_needs_one_source() -> None:
    result = CliRunner().invoke(app, ["replay"])
    assert result.exit_code == 2
    assert "give exactly one of RUN, --query or --file" in result.output
    # Python's "[Errno 2] No such file or directory: 'missing.json'" said the path twice.
    missing = CliRunner().invoke(app, ["replay", "--file", "missing.json"])
    assert missing.exit_code == 2
    assert missing.stderr == "error: cannot read history 'missing.json': no such file\n"


async def test_a_cancelled_run_recorded_before_cancel_holds_replays_under_it(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recorded as before the change (the cancellation unseen by `step_starting`): the call
    # finished after the cancel was sent to it and the run went on to its next step. The current
    # code must replay that history as it was recorded (the patch asked, no marker found).
    gate = tmp_path / "gate"
    monkeypatch.setenv("DURAPIPE_TEST_GATE", str(gate))
    pipeline = dp.load(CONTROL)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"old-cancel-{uuid.uuid4().hex[:8]}"
    with monkeypatch.context() as old:
        old.setattr(workflow, "cancellation_reason", lambda: None)
        started_as_version(old, 3)  # the last version before the change
        async with dp.build_worker(client, task_queue=task_queue):
            handle = await dp.start(
                client, pipeline, "slow_inner", {"topic": "tides"}, run_id=run_id,
                task_queue=task_queue,
            )  # fmt: skip

            async def gate_waits() -> bool:
                return Path(f"{gate}.waiting").exists()

            await eventually(gate_waits, "the gate step to start")
            await client.get_workflow_handle(run_id).cancel()

            async def cancel_sent_to_the_call() -> bool:
                events = await history_events(client, run_id)
                return any(
                    e.HasField("activity_task_cancel_requested_event_attributes") for e in events
                )

            await eventually(cancel_sent_to_the_call, "the workflow to ask the call to cancel")
            gate.touch()
            result = await handle.result()
    assert result.output["shout"]  # the old path: the next step ran
    histories = await dp.ops.fetch_histories(client, run_id=run_id)
    [report] = await dp.ops.replay(histories)
    assert (report.compatible, report.problem) == (True, None)
    events = histories[0].events
    assert not any(e.HasField("marker_recorded_event_attributes") for e in events)

    # Since the change: a cancelled run of version 3 records its marker, one of version 4 (where
    # the change is in force) none; each replays; a run that is not cancelled records none.
    ran: dict[str, bool] = {}
    for version in (3, WORKFLOW_VERSION):
        with monkeypatch.context() as started:
            started_as_version(started, version)
            async with dp.build_worker(client, task_queue=task_queue):
                cancelled = await dp.start(
                    client, pipeline, "slow_inner", {"topic": "tides"},
                    run_id=f"{run_id}-v{version}", task_queue=task_queue,
                )  # fmt: skip
                await client.get_workflow_handle(cancelled.run_id).cancel()
                with pytest.raises(dp.RunCancelled):
                    await cancelled.result()
                plain = await dp.run(
                    client, pipeline, "slow_inner", {"topic": "tides"},
                    run_id=f"{run_id}-v{version}-plain", task_queue=task_queue,
                )  # fmt: skip
                assert plain.output["shout"]
        ran |= {f"{run_id}-v{version}": version == 3, f"{run_id}-v{version}-plain": False}
    for run, marked in ran.items():
        histories = await dp.ops.fetch_histories(client, run_id=run)
        [report] = await dp.ops.replay(histories)
        assert (report.compatible, report.problem) == (True, None)
        assert bool(patch_markers(histories[0].events)) == marked, run


async def test_cli_replay_of_a_reused_run_id_tells_its_runs_apart(
    temporal_address: str, task_queue: str
) -> None:
    # `run --id X` of an ended run X starts a new run under the id; `replay X` replays both, and
    # printed `X: compatible` twice, two lines a reader could not tell apart.
    pipeline = dp.load(CONTROL)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"twice-{task_queue}"
    async with dp.build_worker(client, task_queue=task_queue):
        for text in ("a", "b"):
            await dp.run(
                client, pipeline, "shout", {"text": text}, run_id=run_id, task_queue=task_queue
            )
    runs = [w.run_id async for w in client.list_workflows(f"WorkflowId = '{run_id}'")]
    replayed = await acli(temporal_address, "replay", run_id)
    assert replayed.returncode == 0, replayed.stderr
    assert sorted(replayed.stdout.splitlines()) == sorted(
        f"{run_id} (run ID {run}): compatible" for run in runs
    ), replayed.stdout
