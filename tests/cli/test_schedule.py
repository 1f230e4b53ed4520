"""Schedules through the CLI: an interval starts runs on its own; deleting it stops them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner, Result

import durapipe as dp
from durapipe.cli import app
from tests.support import CONTROL, WorkerProcess, acli, eventually


async def scheduled_runs(client: object, schedule_id: str) -> int:
    count = await client.count_workflows(f"TemporalScheduledById = '{schedule_id}'")  # type: ignore[attr-defined]
    return int(count.count)


async def test_an_interval_schedule_starts_runs_until_deleted(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    worker = WorkerProcess(CONTROL, temporal_address, task_queue, tmp_path / "worker.log")
    schedule_id = f"every-{task_queue}"
    try:
        created = await acli(
            temporal_address,
            "schedule", "create", schedule_id, "shout", "--file", str(CONTROL), "--every", "1s",
            "--input", "text=tick", "--overlap", "allow_all", "--task-queue", task_queue,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert "no worker polls" not in created.stderr
        client = await dp.connect(temporal_address)
        await eventually(
            lambda: _at_least(client, schedule_id, 2), "two scheduled runs", timeout=60
        )
        listed = await acli(temporal_address, "schedule", "list")
        assert f"{schedule_id}  every 1s  active" in listed.stdout, listed.stderr
        assert f"{schedule_id}-run-" in listed.stdout  # recent runs, named after the schedule

        assert f"{schedule_id}  every 1s  active  pipe shout  next: " in listed.stdout

        paused = await acli(temporal_address, "schedule", "pause", schedule_id, "--note", "holiday")
        assert paused.returncode == 0
        listed = await acli(temporal_address, "schedule", "list")
        assert f"{schedule_id}  every 1s  paused  pipe shout" in listed.stdout
        assert "  note: holiday" in listed.stdout
        before = await scheduled_runs(client, schedule_id)
        # A scheduled run's workflow id ends in its start time to the second: a trigger in the same
        # second as the last interval's run gets the same id and Temporal skips it as running.
        await asyncio.sleep(1.1)
        assert (await acli(temporal_address, "schedule", "trigger", schedule_id)).returncode == 0
        await eventually(
            lambda: _at_least(client, schedule_id, before + 1), "the triggered run", timeout=60
        )

        assert (await acli(temporal_address, "schedule", "delete", schedule_id)).returncode == 0
        await asyncio.sleep(1.0)  # a start already in flight at delete time may still land
        after_delete = await scheduled_runs(client, schedule_id)
        await asyncio.sleep(3.0)  # three intervals: a live schedule would start three runs
        assert await scheduled_runs(client, schedule_id) == after_delete
        gone = await acli(temporal_address, "schedule", "delete", schedule_id)
        assert gone.returncode == 1 and f"no schedule '{schedule_id}'" in gone.stderr
        query = f"TemporalScheduledById = '{schedule_id}' AND ExecutionStatus = 'Completed'"
        done = await anext(aiter(client.list_workflows(query)))
        result = await client.get_workflow_handle(done.id, result_type=dp.RunResult).result()
        assert result.output == "TICK"  # the scheduled runs ran the pipe with its inputs
    finally:
        worker.stop()


async def _at_least(client: object, schedule_id: str, count: int) -> bool:
    return await scheduled_runs(client, schedule_id) >= count


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_schedule_mistakes_are_one_sentence(temporal_address: str) -> None:
    common = ["schedule", "create", "s1", "shout", "--file", str(CONTROL), "--input", "text=x"]
    address = ["--address", temporal_address]
    both = invoke(*common, "--every", "1s", "--cron", "* * * * *", *address)
    assert both.exit_code == 2 and "give either a cron expression or an interval" in both.stderr
    overlap = invoke(*common, "--every", "1s", "--overlap", "nope", *address)
    assert overlap.exit_code == 2 and "unknown overlap policy 'nope'" in overlap.stderr
    bare = invoke(*common, "--every", "10", *address)
    assert bare.exit_code == 2 and "--every '10' needs a unit, e.g. 10s, 10m or 10h" in bare.stderr
    inputs = invoke(*common[:-2], "--every", "1s", *address)
    assert inputs.exit_code == 2 and "input 'text': missing" in inputs.stderr


async def test_a_schedule_on_a_queue_no_worker_polls_says_so(
    temporal_address: str, task_queue: str
) -> None:
    # Its runs would queue in silence: `schedule create` said only "created".
    schedule_id = f"idle-{task_queue}"
    created = await acli(
        temporal_address,
        "schedule", "create", schedule_id, "shout", "--file", str(CONTROL), "--every", "1h",
        "--input", "text=tick", "--task-queue", task_queue,
    )  # fmt: skip
    try:
        assert created.returncode == 0, created.stderr
        assert created.stderr.strip() == (
            f"note: no worker polls task queue '{task_queue}' now: the schedule's runs wait "
            f"until one does (`durapipe worker {CONTROL} -t {task_queue}`)"
        )
    finally:
        assert (await acli(temporal_address, "schedule", "delete", schedule_id)).returncode == 0


async def test_schedule_list_writes_intervals_as_people_do(
    temporal_address: str, task_queue: str
) -> None:
    # `schedule list` printed `every 5400s` for `--every 90m`; what it prints now reads back.
    made = []
    try:
        for schedule_id, every in ((f"ninety-{task_queue}", "90m"), (f"ten-{task_queue}", "10m")):
            created = await acli(
                temporal_address,
                "schedule", "create", schedule_id, "shout", "--file", str(CONTROL), "--every",
                every, "--input", "text=tick", "--task-queue", task_queue,
            )  # fmt: skip
            assert created.returncode == 0, created.stderr
            made.append(schedule_id)
        listed = await acli(temporal_address, "schedule", "list")
        assert f"{made[0]}  every 1h30m  active" in listed.stdout, listed.stdout
        assert f"{made[1]}  every 10m  active" in listed.stdout, listed.stdout
        again = await acli(
            temporal_address,
            "schedule", "create", f"again-{task_queue}", "shout", "--file", str(CONTROL),
            "--every", "1h30m", "--input", "text=tick", "--task-queue", task_queue,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        made.append(f"again-{task_queue}")
    finally:
        for schedule_id in made:
            await acli(temporal_address, "schedule", "delete", schedule_id)


async def test_schedule_list_writes_a_cron_schedule_as_its_cron(
    temporal_address: str, task_queue: str
) -> None:
    # The server keeps a cron expression as a calendar entry, and `schedule list` printed
    # `1 calendar entries` for `--cron "0 2 * * MON-FRI"`: what it prints now reads back.
    schedule_id = f"cron-{task_queue}"
    created = await acli(
        temporal_address,
        "schedule", "create", schedule_id, "shout", "--file", str(CONTROL), "--cron",
        "0 2 * * MON-FRI", "--input", "text=tick", "--task-queue", task_queue,
    )  # fmt: skip
    try:
        assert created.returncode == 0, created.stderr
        listed = await acli(temporal_address, "schedule", "list")
        assert f"{schedule_id}  cron 0 2 * * 1-5  active  pipe shout" in listed.stdout, (
            listed.stdout
        )
    finally:
        await acli(temporal_address, "schedule", "delete", schedule_id)
