"""A step no worker takes because every slot of its queue's workers is busy says so: `durapipe
show` (and `--json`), `run`'s step lines and its live view name the busy workers and the backlog,
where they used to show a plain `running` with no reason."""

from __future__ import annotations

import io
import json
import subprocess
import uuid
from pathlib import Path

from rich.console import Console

import durapipe as dp
from durapipe.cli._live import render
from tests.support import WorkerProcess, acli, cli_env, durapipe_command, eventually

PIPELINE = """\
version: 1
pipes:
  ask:
    kind: llm
    model: durapipe/offline
    inputs: {question: text}
    prompt: "{{ question }}"
"""


async def test_a_step_waiting_for_a_busy_workers_slot_says_so(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    file = tmp_path / "ask.yaml"
    file.write_text(PIPELINE)
    pipeline = dp.load(file)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    # One slot, held by the first run's step for as long as the test needs (the offline model's
    # delay): the second run's step is scheduled and waits for it.
    worker = WorkerProcess(
        file, temporal_address, task_queue, tmp_path / "worker.log", "--max-concurrent", "1",
        DURAPIPE_OFFLINE_DELAY="300",
    )  # fmt: skip
    ids: list[str] = []
    follower: subprocess.Popen[str] | None = None
    try:
        # "worker ready" comes before its pollers reach the server: until they do, the stall
        # check says no worker polls the queue (a helper's loaded run raised RunStalled here).
        await worker.polling(client)
        holder = await dp.start(client, pipeline, "ask", {"question": "a"}, task_queue=task_queue)
        ids.append(holder.run_id)

        async def holding() -> bool:
            steps = await holder.steps()
            return any(s.status == "running" for s in steps)

        await eventually(holding, "the first run's step to hold the slot")
        err = tmp_path / "run.err"
        with err.open("w") as stderr:
            run_id = f"starved-{uuid.uuid4().hex[:8]}"
            ids.append(run_id)
            follower = subprocess.Popen(
                durapipe_command(
                    "run", "ask", "--file", str(file), "--input", "question=b", "--id",
                    run_id, "--address", temporal_address, "--task-queue", task_queue,
                ),
                stdout=subprocess.DEVNULL, stderr=stderr, text=True, env=cli_env(),
            )  # fmt: skip
        waits = (
            f"⏸ ask waiting for a free worker slot: the 1 worker polling task queue "
            f"'{task_queue}' is busy (1 of 1 activity slot in use, backlog "
        )

        async def said() -> bool:
            return waits in err.read_text()

        # Said within seconds: 3 s scheduled, and the worker's heartbeat (every 5 s) telling
        # its slot is used.
        await eventually(said, "`run` to say its step waits for a slot", timeout=60)
        assert err.read_text().count(waits) == 1, err.read_text()  # once, not at every look

        shown = await acli(temporal_address, "show", run_id)
        assert shown.returncode == 0, shown.stderr
        [row] = [line for line in shown.stdout.splitlines() if line.startswith("· ask")]
        assert "running  waiting for a free worker slot: the 1 worker polling" in row, row
        assert "s ago" in row, row  # how long it has waited
        as_json = await acli(temporal_address, "show", run_id, "--json")
        [step] = json.loads(as_json.stdout)["steps"]
        assert step["status"] == "running"
        assert step["waiting_for"].startswith("a free worker slot: the 1 worker polling"), step

        # The live view shows it under its table (the same records).
        handle = dp.RunHandle(client, run_id)
        console = Console(file=io.StringIO(), width=300)
        console.print(render(await handle.steps(), run_id))
        assert "⏸ ask waiting for a free worker slot" in console.file.getvalue()  # type: ignore[attr-defined]

        # The step that holds the slot is not waiting: it runs.
        [held] = await holder.steps()
        assert held.waiting_for is None, held
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        for run_id in ids:
            await client.get_workflow_handle(run_id).terminate("test over")
        worker.kill()
