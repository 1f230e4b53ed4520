"""No silent hangs: a run no worker can make progress on is reported within seconds, by every
command that looks at it (issue 17, item 1), and a wrong namespace is one sentence (item 2)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from typer.testing import CliRunner, Result

import durapipe as dp
from durapipe.cli import app
from tests.conftest import ARTICLE, EXAMPLES
from tests.support import routed_pipeline, run_cli

BRIEF = str(EXAMPLES / "brief.yaml")
runner = CliRunner()


async def invoke(*args: str) -> Result:
    """A command in this process, in a thread: it runs its own event loop."""
    return await asyncio.to_thread(runner.invoke, app, list(args))


async def test_run_on_a_queue_no_worker_polls_says_so_within_seconds_and_so_do_runs_show_pending(
    temporal_address: str, task_queue: str
) -> None:
    run_id = f"stalled-{task_queue}"
    began = time.monotonic()
    ran = await asyncio.to_thread(
        run_cli,
        "run", "brief", "--file", BRIEF, "--input", f"article={ARTICLE}", "--id", run_id,
        "--address", temporal_address, "-t", task_queue,
    )  # fmt: skip
    took = time.monotonic() - began
    assert ran.returncode == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    assert (
        f"error: run '{run_id}' cannot make progress: no worker polls task queue '{task_queue}'"
        in ran.stderr
    )
    assert (
        f"`durapipe result {run_id}`" in ran.stderr and f"`durapipe cancel {run_id}`" in ran.stderr
    )
    assert took < 30, took  # seconds, not forever (the process start is most of it)

    client = await Client.connect(temporal_address)
    try:
        # A run no worker has picked up is still a running run.
        listed = await invoke(
            "runs", "--status", "running", "--json", "--address", temporal_address
        )
        assert listed.exit_code == 0, listed.stderr
        assert run_id in [r["run_id"] for r in json.loads(listed.stdout)]

        began = time.monotonic()
        shown = await invoke("show", run_id, "--address", temporal_address)
        assert shown.exit_code == 1 and "Traceback" not in shown.stderr
        assert shown.stderr.startswith(
            f"error: run '{run_id}' is running but cannot make progress: no worker polls task "
            f"queue '{task_queue}'"
        ), shown.stderr
        assert shown.stdout.startswith(f"run {run_id}  pipe brief  running"), shown.stdout
        assert time.monotonic() - began < 4

        pending = await invoke(
            "pending", "-q", f"WorkflowId = '{run_id}'", "--address", temporal_address
        )
        assert pending.exit_code == 1, pending.stderr
        assert (
            f"error: run {run_id} could not say whether it waits: no worker polls task queue"
            in (pending.stderr)
        )
        assert "no run is waiting" not in pending.stderr
    finally:
        await client.get_workflow_handle(run_id).terminate("test over")


async def test_a_leaf_routed_to_a_queue_no_worker_polls_is_named(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "routed.yaml"
    file.write_text(routed_pipeline("main", nobody))
    client = await dp.connect(temporal_address, pipeline=dp.load(file))
    run_id = f"routed-{task_queue}"
    async with dp.build_worker(client, task_queue=task_queue):
        ran = await asyncio.to_thread(
            run_cli,
            "run", "main", "--file", str(file), "--input", "topic=rivers", "--id", run_id,
            "--address", temporal_address, "--task-queue", task_queue,
        )  # fmt: skip
        assert ran.returncode == 1, ran.stderr
        assert (
            f"cannot make progress: pipe 'draft' is routed to task queue '{nobody}', which no "
            f"worker polls; start one with `durapipe worker FILE --queue {nobody}`"
        ) in ran.stderr
        shown = await invoke("show", run_id, "--address", temporal_address)
        assert shown.exit_code == 0, shown.stderr
        assert f"routed to task queue '{nobody}', which no worker polls" in shown.stderr
        # The run itself is fine and goes on once a worker serves the queue.
        async with dp.build_worker(client, task_queue=nobody):
            result = await dp.RunHandle(client, run_id).result()
    assert result.output


@pytest.mark.parametrize(
    "args",
    [
        ["run", "brief", "--file", BRIEF, "--input", "article=x"],
        ["worker", BRIEF],
        ["pending"],
        ["runs"],
        ["schedule", "list"],
        ["setup-search-attributes"],
    ],
)
def test_an_unknown_namespace_is_one_sentence_for_every_command(
    args: list[str], temporal_address: str
) -> None:
    result = runner.invoke(app, [*args, "--address", temporal_address, "-n", "nosuchns"])
    assert result.exit_code == 2, result.stderr
    assert result.stderr == (
        f"error: namespace 'nosuchns' does not exist on {temporal_address}; pass an existing one "
        "with -n/--namespace (or TEMPORAL_NAMESPACE), or create it with "
        "`temporal operator namespace create -n nosuchns`\n"
    )
