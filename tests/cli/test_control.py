"""Control through the CLI against the dev server: approvals, pause/resume, cancel."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from durapipe.testing import FakeProvider, Hang
from tests.conftest import ROOT
from tests.support import (
    CONTROL,
    WorkerProcess,
    acli,
    cli_env,
    durapipe_command,
    eventually,
    history_events,
    paid_pipeline,
    run_cli,
)

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def control_worker(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(CONTROL, temporal_address, task_queue, tmp_path / "worker.log")
    yield worker
    worker.stop()


async def waiting_request(client: Client, run_id: str) -> dp.ApprovalRequest | None:
    found = await dp.client.pending(client, query=f"WorkflowId = '{run_id}'")
    return next((r for r in found.requests if r.run_id == run_id), None)


async def step(handle: dp.RunHandle, path: str) -> dp.StepRecord:
    return next(s for s in await handle.steps() if s.path == path)


def cli(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, "--address", address)


async def test_approve_edit_reject_and_refused_decisions(
    temporal_address: str, task_queue: str, control_worker: WorkerProcess
) -> None:
    client = await dp.connect(temporal_address)
    pipeline = dp.load(CONTROL)
    edited_id, plain_id, rejected_id = (f"{n}-{uuid.uuid4().hex[:8]}" for n in "epr")
    # The edited run is started and followed by `durapipe run`, as a user would.
    edited_run = subprocess.Popen(
        durapipe_command(
            "run", "review_post", "--file", str(CONTROL), "--input", "topic=rivers", "--json",
            "--id", edited_id, "--address", temporal_address, "--task-queue", task_queue,
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )  # fmt: skip
    handles = {
        run_id: await dp.start(
            client,
            pipeline,
            "review_post",
            {"topic": "lakes"},
            run_id=run_id,
            task_queue=task_queue,
        )
        for run_id in (plain_id, rejected_id)
    }
    for run_id in (edited_id, plain_id, rejected_id):
        await eventually(lambda r=run_id: waiting_request(client, r), f"{run_id} to wait")

    # What the human sees: the run, the step, the rendered message and the values under review.
    listed = await acli(temporal_address, "pending", "--query", f"TaskQueue = '{task_queue}'")
    assert listed.returncode == 0, listed.stderr
    assert f"{edited_id}  review  waiting since" in listed.stdout
    assert "Publish this post about rivers?" in listed.stdout
    assert (
        '"topic": "rivers"' in listed.stdout and "approve continues with 'draft'" in listed.stdout
    )
    record = await step(dp.RunHandle(client, edited_id), "review")
    assert record.status == "waiting"
    assert record.waiting_for == "approval: Publish this post about rivers?"

    # Bad decisions are refused with the reason, and change nothing.
    refused = {
        ("approve", edited_id, "nope"): f"run '{edited_id}' has no step 'nope'",
        ("approve", edited_id, "draft"): "step 'draft' of run",
        (
            "approve",
            edited_id,
            "review",
            "--data",
            '{"a": 1}',
        ): "data for step 'review' must be text",
        ("reject", edited_id, "inner/review"): "has no running step 'inner'",
    }
    for args, reason in refused.items():
        result = await acli(temporal_address, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: decision refused: ") and reason in result.stderr
        assert "Traceback" not in result.stderr
    assert (
        "is not waiting for a decision (it is succeeded"
        in (await acli(temporal_address, "approve", edited_id, "draft")).stderr
    )
    assert (await step(dp.RunHandle(client, edited_id), "review")).status == "waiting"

    approved = await acli(
        temporal_address, "approve", edited_id, "review", "--data", '"A better post."'
    )
    assert approved.returncode == 0, approved.stderr
    out, err = edited_run.communicate(timeout=60)
    assert edited_run.returncode == 0, err
    assert json.loads(out) == {"approved": "A better post.", "shout": "A BETTER POST."}

    # The same decisions as `RunHandle` methods (what the CLI commands call).
    with pytest.raises(dp.DecisionRefused, match=f"run '{plain_id}' has no step 'nope'"):
        await handles[plain_id].reject("nope")
    await handles[plain_id].approve("review")
    plain = await handles[plain_id].result()
    assert plain.output["approved"].startswith("Offline answer: Write a one-line post about lakes")

    rejected = await acli(
        temporal_address, "reject", rejected_id, "review", "--reason", "off topic",
        "--reviewer", "ana",
    )  # fmt: skip
    assert rejected.returncode == 0, rejected.stderr
    with pytest.raises(dp.StepFailed) as caught:
        await handles[rejected_id].result()
    assert caught.value.path == "review" and caught.value.cause_type == "durapipe.Rejected"
    assert "rejected by ana: off topic" in str(caught.value)
    statuses = {
        s.path: s.status for s in (dp.StepRecord.model_validate(s) for s in caught.value.steps)
    }
    assert statuses == {"draft": "succeeded", "review": "failed", "shout": "skipped"}
    assert (
        await acli(temporal_address, "approve", rejected_id, "review")
    ).returncode == 1  # run is over


def test_approval_timeout_takes_the_default(
    temporal_address: str, task_queue: str, control_worker: WorkerProcess
) -> None:
    common = ["--file", str(CONTROL), "--input", "topic=rivers", "--task-queue", task_queue]
    approved = cli(temporal_address, "run", "timed_approve", *common, "--json")
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout).startswith("Offline answer: Write a one-line post")

    rejected = cli(temporal_address, "run", "timed_reject", *common)
    assert rejected.returncode == 1
    assert "step 'review_or_reject' (approval) failed: durapipe.Rejected: rejected by timeout: " \
        "no decision within 1s" in rejected.stderr  # fmt: skip


def test_local_runs_refuse_approvals_unless_approve_all() -> None:
    # Refused before any step runs: the run used to make its paid calls (draft) and then fail at
    # the approval, which nobody can decide in-process.
    common = ["run", "review_post", "--file", str(CONTROL), "--input", "topic=rivers", "--local"]
    refused = CliRunner().invoke(app, common)
    assert refused.exit_code == 2, refused.stderr
    assert refused.stderr == (
        "error: pipe 'review_post' reaches approval step 'review', and a local run cannot wait "
        "for a human decision: pass --approve-all (approve_all=True) to approve every approval "
        "step as is, or run it on Temporal (without --local) and decide with `durapipe approve`; "
        "nothing was run\n"
    )
    approved = CliRunner().invoke(app, [*common, "--approve-all", "--json"])
    assert approved.exit_code == 0, approved.stderr
    assert json.loads(approved.stdout)["shout"].startswith("OFFLINE ANSWER")


def event_time(event: Any) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


@contextlib.asynccontextmanager
async def _held_at_gate(
    address: str, queue: str, tmp_path: Path, pipe: str, prefix: str
) -> AsyncIterator[tuple[Client, dp.RunHandle, Path]]:
    """A worker whose gate tool blocks until its file exists, and a run of ``pipe`` on it whose
    gate step has started; yields the client, the run and the gate file. Stops the worker."""
    gate = tmp_path / "gate"
    worker = WorkerProcess(
        CONTROL, address, queue, tmp_path / "w.log", DURAPIPE_TEST_GATE=str(gate)
    )
    try:
        client = await dp.connect(address)
        handle = await dp.start(
            client, dp.load(CONTROL), pipe, {"topic": "tides"},
            run_id=f"{prefix}-{uuid.uuid4().hex[:8]}", task_queue=queue,
        )  # fmt: skip
        await eventually(lambda: _exists(Path(f"{gate}.waiting")), "the gate step to start")
        yield client, handle, gate
    finally:
        worker.stop()


async def test_pause_holds_the_next_step_of_a_nested_run_until_resume(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    async with _held_at_gate(temporal_address, task_queue, tmp_path, "slow_outer", "pause") as held:
        client, handle, gate = held
        run_id = handle.run_id
        paused = await acli(temporal_address, "pause", run_id)  # while slow_inner/gate is in flight
        assert paused.returncode == 0, paused.stderr

        async def child_paused() -> bool:
            # The run forwards the pause to its child; open the gate only once the child has it.
            events = await history_events(client, f"{run_id}/slow_inner")
            return any(
                e.workflow_execution_signaled_event_attributes.signal_name == "durapipe.pause"
                for e in events
                if e.HasField("workflow_execution_signaled_event_attributes")
            )

        await eventually(child_paused, "the pause to reach the child workflow")
        gate.touch()

        async def gate_done() -> bool:
            return (await step(handle, "slow_inner/gate")).status == "succeeded"

        await eventually(gate_done, "the in-flight step to finish")
        held_since = time.monotonic()
        while time.monotonic() - held_since < 2.0:  # paused: the next step must not start
            shout = await step(handle, "slow_inner/shout")
            assert shout.status == "pending" and shout.waiting_for == "resume: the run is paused"
            await asyncio.sleep(0.2)
        assert (await acli(temporal_address, "resume", run_id)).returncode == 0
        result = await handle.result()
    assert result.output["shout"] == result.output["first"].upper()

    # Measured in the child's history: the next step was scheduled only after the resume arrived.
    child = await history_events(client, f"{run_id}/slow_inner")
    signals = {
        e.workflow_execution_signaled_event_attributes.signal_name: event_time(e)
        for e in child
        if e.HasField("workflow_execution_signaled_event_attributes")
    }
    scheduled = {
        e.activity_task_scheduled_event_attributes.activity_id: event_time(e)
        for e in child
        if e.HasField("activity_task_scheduled_event_attributes")
    }
    gate_done_at = next(
        event_time(e) for e in child if e.HasField("activity_task_completed_event_attributes")
    )
    assert signals["durapipe.pause"] < gate_done_at < signals["durapipe.resume"]
    assert scheduled["slow_inner/shout"] >= signals["durapipe.resume"]
    assert (scheduled["slow_inner/shout"] - gate_done_at).total_seconds() >= 2.0
    started = {s.path: s.started_at for s in result.steps}["slow_inner/shout"]
    assert started is not None and started >= signals["durapipe.resume"]


async def test_pause_and_resume_say_when_there_is_nothing_to_do(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    # Pause and resume are signals: resuming a run that was not paused said "resumed run X",
    # exit 0, and a second pause said "paused" again. The run's answer decides now, and nothing
    # is sent when there is nothing to do.
    async with _held_at_gate(temporal_address, task_queue, tmp_path, "slow_outer", "again") as held:
        client, handle, gate = held
        run_id = handle.run_id
        not_paused = await acli(temporal_address, "resume", run_id)
        paused = await acli(temporal_address, "pause", run_id)
        shown = await acli(temporal_address, "show", run_id)  # its gate step still in flight
        twice = await acli(temporal_address, "pause", run_id)
        resumed = await acli(temporal_address, "resume", run_id)
        gate.touch()
        await handle.result()
    assert not_paused.returncode == 1, not_paused.stdout
    assert not_paused.stderr.strip() == f"error: run '{run_id}' is not paused; nothing to resume"
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == (
        f"paused run {run_id}: no new step starts until `durapipe resume {run_id}`"
    )
    # `show` said "running" for it: no step waited for the resume yet, and only the run knew.
    assert "  pipe slow_outer  running (paused)  started " in shown.stdout.splitlines()[0]
    assert twice.returncode == 1, twice.stdout
    assert twice.stderr.strip() == (
        f"error: run '{run_id}' is already paused; nothing was sent "
        f"(`durapipe resume {run_id}` resumes it)"
    )
    assert (resumed.returncode, resumed.stdout.strip()) == (0, f"resumed run {run_id}")
    signals = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in await history_events(client, run_id)
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert signals == ["durapipe.pause", "durapipe.resume"]


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_cancel_during_a_long_llm_call_closes_it_within_the_heartbeat_timeout(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    with FakeProvider() as fake:
        fake.set_default(Hang(120))
        # A 30 s step timeout gives a 20 s heartbeat timeout (the cap) and keeps litellm's own
        # 30 s client timeout out of the way: only the cancel can close the call this early.
        file = paid_pipeline(tmp_path, fake.base_url, "gpt-hang", 2, timeout="30s")
        worker = WorkerProcess(file, temporal_address, task_queue, tmp_path / "worker.log")
        try:
            client = await dp.connect(temporal_address)
            run_id = f"cancel-{uuid.uuid4().hex[:8]}"
            handle = await dp.start(
                client, dp.load(file), "paid", {"topic": "x"}, run_id=run_id, task_queue=task_queue
            )
            await fake.wait_until_async(lambda calls: len(calls) == 1, timeout=60)
            cancelled = await acli(temporal_address, "cancel", run_id)
            assert cancelled.returncode == 0, cancelled.stderr
            requested = time.monotonic()
            calls = await fake.wait_until_async(
                lambda calls: calls[0].outcome == "client_closed", timeout=30
            )
            closed_after = time.monotonic() - requested
            with pytest.raises(dp.RunCancelled):
                await handle.result()
            statuses = {s.path: s.status for s in await handle.steps()}
        finally:
            worker.stop()
    assert closed_after < 20.0  # the step's heartbeat timeout
    assert len(calls) == 1  # the second paid step never called the provider
    assert statuses == {"call1": "cancelled", "call2": "skipped"}
    description = await client.get_workflow_handle(run_id).describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    events = await history_events(client, run_id)
    assert any(e.HasField("activity_task_canceled_event_attributes") for e in events)


async def test_cancel_of_a_step_that_finishes_anyway_starts_no_later_step(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    # A call can finish before its cancellation reaches it (a provider answering as the user
    # cancels; here a tool that does not look at heartbeats). Temporal's SDK then hands the
    # workflow the call's result and the cancellation is spent: the run used to go on and
    # complete. It must end as cancelled with the later steps skipped.
    async with _held_at_gate(
        temporal_address, task_queue, tmp_path, "slow_inner", "cancel-late"
    ) as (client, handle, gate):
        run_id = handle.run_id
        cancelled = await acli(temporal_address, "cancel", run_id)
        assert cancelled.returncode == 0, cancelled.stderr

        async def cancel_sent_to_the_call() -> bool:
            events = await history_events(client, run_id)
            return any(
                e.HasField("activity_task_cancel_requested_event_attributes") for e in events
            )

        await eventually(cancel_sent_to_the_call, "the workflow to ask the call to cancel")
        gate.touch()  # the call completes before a heartbeat tells it of the cancellation
        with pytest.raises(dp.RunCancelled):
            await handle.result()
        statuses = {s.path: s.status for s in await handle.steps()}
    assert statuses["shout"] == "skipped"
    description = await client.get_workflow_handle(run_id).describe()
    assert description.status == WorkflowExecutionStatus.CANCELED
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in await history_events(client, run_id)
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled == ["gate"]


async def test_cancel_approve_and_reject_of_a_run_that_already_ended_say_so(
    temporal_address: str, task_queue: str
) -> None:
    # Temporal accepts a cancellation request for a closed workflow and does nothing with it, so
    # `cancel` printed "cancellation requested" with exit 0 for a run long finished; `approve`
    # and `reject` said Temporal's "workflow execution already completed".
    client = await dp.connect(temporal_address)
    run_id = f"ended-{uuid.uuid4().hex[:8]}"
    await dp.start(
        client, dp.load(CONTROL), "draft", {"topic": "x"}, run_id=run_id, task_queue=task_queue
    )
    await client.get_workflow_handle(run_id).terminate(reason="test")
    for command in (
        ["cancel", run_id],
        ["approve", run_id, "review"],
        ["reject", run_id, "review"],
    ):
        answered = await acli(temporal_address, *command)
        assert answered.returncode == 1, (command, answered.stderr)
        assert answered.stderr.strip() == (
            f"error: no running run '{run_id}': it has already ended (terminated)"
        ), command
        assert answered.stdout == ""


async def test_approve_a_run_no_worker_runs_says_why_at_once(
    temporal_address: str, task_queue: str
) -> None:
    # A decision is an update, which only a worker can take: with none, `approve` waited in
    # silence (over 5 minutes seen) instead of saying why.
    client = await dp.connect(temporal_address)
    run_id = f"noworker-{uuid.uuid4().hex[:8]}"
    await dp.start(
        client,
        dp.load(CONTROL),
        "review_post",
        {"topic": "x"},
        run_id=run_id,
        task_queue=task_queue,
    )
    try:
        started = time.monotonic()
        approved = await acli(temporal_address, "approve", run_id, "review")
        took = time.monotonic() - started
    finally:
        await client.get_workflow_handle(run_id).terminate(reason="test")
    assert approved.returncode == 1, approved.stderr
    assert took < 15.0
    assert approved.stderr.strip() == (
        f"error: run '{run_id}' cannot take a decision now: no worker polls task queue "
        f"'{task_queue}' (namespace 'default'), so nothing runs it; start one with "
        f"`durapipe worker FILE -t {task_queue}`; nothing was sent"
    )


async def test_pause_resume_and_cancel_of_a_run_no_worker_runs_say_so(
    temporal_address: str, task_queue: str
) -> None:
    # The signal or request is kept, but nothing acts on it until a worker comes: "paused run X:
    # no new step starts" alone let the user think the run was live, and cancel said
    # "cancellation requested", exit 0, while the run stayed running. Say so, and (for a cancel)
    # what ends the run without a worker.
    client = await dp.connect(temporal_address)
    run_id = f"idle-{uuid.uuid4().hex[:8]}"
    await dp.start(
        client, dp.load(CONTROL), "draft", {"topic": "x"}, run_id=run_id, task_queue=task_queue
    )
    try:
        paused = await acli(temporal_address, "pause", run_id)
        resumed = await acli(temporal_address, "resume", run_id)
        cancelled = await acli(temporal_address, "cancel", run_id)
    finally:
        await client.get_workflow_handle(run_id).terminate(reason="test")
    stalled = (
        f"note: run '{run_id}' cannot make progress now: no worker polls task queue "
        f"'{task_queue}' (namespace 'default'), so nothing runs it; start one with "
        f"`durapipe worker FILE -t {task_queue}`; "
    )
    # Nobody can say whether the run was paused: the signal is sent (Temporal keeps it), and
    # the command says it is recorded, not done, and why.
    for done, action in ((paused, "pause"), (resumed, "resume")):
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == (
            f"{action} of run {run_id} recorded: it applies when a worker picks the run up"
        )
        assert done.stderr.strip() == (
            f"note: run '{run_id}' cannot say whether it is paused: no worker polls task queue "
            f"'{task_queue}' (namespace 'default'), so nothing runs it; start one with "
            f"`durapipe worker FILE -t {task_queue}`"
        )
    sent = [
        e.workflow_execution_signaled_event_attributes.signal_name
        for e in await history_events(client, run_id)
        if e.HasField("workflow_execution_signaled_event_attributes")
    ]
    assert sent == ["durapipe.pause", "durapipe.resume"]
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stderr.strip() == (
        f"{stalled}the cancel applies once a worker takes the run "
        f"(`temporal workflow terminate --workflow-id {run_id}` ends it now, without one)"
    )


ROUTED_REVIEW = """\
pipes:
  routed_review:
    kind: sequence
    inputs: {topic: text}
    steps:
      - pipe: draft
      - pipe: review
        result: approved
      - pipe: publish
        inputs: {draft: approved}
  draft:
    kind: llm
    inputs: {topic: text}
    prompt: "Write a one-line post about {{ topic }}."
  review:
    kind: approval
    inputs: {draft: text, topic: text}
    value: draft
    message: "Publish this post about {{ topic }}?"
  publish:
    kind: llm
    inputs: {draft: text}
    prompt: "Publish {{ draft }}"
    queue: QUEUE
"""


async def test_approve_and_resume_need_only_the_workflow_queue_polled(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    # A decision is an update a worker of the run's own queue takes: a later step routed to a
    # queue with no worker yet does not stop it (its own wait says so when it comes).
    file = tmp_path / "routed.yaml"
    file.write_text(ROUTED_REVIEW.replace("QUEUE", f"nowhere-{uuid.uuid4().hex[:8]}"))
    worker = WorkerProcess(file, temporal_address, task_queue, tmp_path / "w.log")
    client = await dp.connect(temporal_address)
    run_id = f"routed-{uuid.uuid4().hex[:8]}"
    try:
        await dp.start(
            client, dp.load(file), "routed_review", {"topic": "x"}, run_id=run_id,
            task_queue=task_queue,
        )  # fmt: skip
        await eventually(lambda: waiting_request(client, run_id), "the review to wait")
        # So does the question whether it is paused: the run answers it, not "recorded".
        resumed = await acli(temporal_address, "resume", run_id)
        approved = await acli(temporal_address, "approve", run_id, "review")
    finally:
        await client.get_workflow_handle(run_id).terminate(reason="test")
        worker.stop()
    assert approved.returncode == 0, approved.stderr
    assert resumed.stderr.strip() == f"error: run '{run_id}' is not paused; nothing to resume"


async def test_run_with_the_id_of_an_existing_run_is_a_mistake_exit_2(
    temporal_address: str, task_queue: str
) -> None:
    # It exited 1, the code of a run that failed; a taken --id is a mistake in what was asked,
    # and nothing was started (the README's exit codes).
    client = await dp.connect(temporal_address)
    run_id = f"taken-{uuid.uuid4().hex[:8]}"
    await dp.start(
        client, dp.load(CONTROL), "draft", {"topic": "x"}, run_id=run_id, task_queue=task_queue
    )
    again = await acli(
        temporal_address, "run", "draft", "--file", str(CONTROL), "--input", "topic=x",
        "--id", run_id, "--task-queue", task_queue,
    )  # fmt: skip
    assert again.returncode == 2, again.stderr
    assert again.stderr == f"error: a run with id '{run_id}' already exists; choose another --id\n"
    await client.get_workflow_handle(run_id).terminate(reason="test")


async def test_cancel_of_a_run_that_ends_before_the_request_reaches_it_says_so(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run ends between `cancel`'s describe and its request (here: terminated just before the
    # request is sent). Temporal accepts the request and does nothing; `cancel` said "requested".
    client = await dp.connect(temporal_address)
    run_id = f"racing-{uuid.uuid4().hex[:8]}"
    await dp.start(
        client, dp.load(CONTROL), "draft", {"topic": "x"}, run_id=run_id, task_queue=task_queue
    )
    request = WorkflowHandle.cancel

    async def ends_first(self: WorkflowHandle[Any, Any], *args: Any, **kwargs: Any) -> None:
        await self.terminate(reason="ended before the cancellation arrived")
        await request(self, *args, **kwargs)

    monkeypatch.setattr(WorkflowHandle, "cancel", ends_first)
    cancelled = await acli(temporal_address, "cancel", run_id)
    assert cancelled.returncode == 1, cancelled.stdout
    assert (
        cancelled.stderr == f"error: no running run '{run_id}': it has already ended (terminated)\n"
    )
    assert cancelled.stdout == ""


async def test_result_of_a_run_waiting_for_a_human_says_what_it_waits_for(
    temporal_address: str, task_queue: str, control_worker: WorkerProcess
) -> None:
    # `result` of a run held at an approval said only "waiting for run X to end", for ever:
    # `run` says what the step waits for and how to decide it; `result` did not.
    client = await dp.connect(temporal_address)
    run_id = f"held-{uuid.uuid4().hex[:8]}"
    handle = await dp.start(
        client, dp.load(CONTROL), "review_post", {"topic": "rivers"},
        run_id=run_id, task_queue=task_queue,
    )  # fmt: skip
    await eventually(lambda: waiting_request(client, run_id), "the run to wait")
    command = durapipe_command("result", run_id, "--address", temporal_address)
    with subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env()
    ) as process:
        assert process.stderr is not None
        read = process.stderr.readline
        try:
            lines = await asyncio.wait_for(asyncio.to_thread(lambda: [read(), read()]), 120)
        finally:
            process.kill()
    assert lines == [
        f"waiting for run {run_id} to end (Ctrl-C stops the waiting, not the run)\n",
        f"  ⏸ review waiting for approval: Publish this post about rivers?; decide with "
        f"`durapipe approve {run_id} review` or `durapipe reject {run_id} review`\n",
    ]
    await handle.cancel()
