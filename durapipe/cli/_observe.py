"""``durapipe show``, ``durapipe replay`` and ``durapipe setup-search-attributes``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

import durapipe as dp
from durapipe._words import counted
from durapipe.cli import _progress
from durapipe.cli._app import app, fail, handles_errors
from durapipe.cli._connection import connect, connection_options
from durapipe.cli._printable import printable, printable_json


@app.command()
@handles_errors
@connection_options
def show(
    run_id: Annotated[str, typer.Argument(help="The run id (workflow id).", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the step records as JSON.")
    ] = False,
    step: Annotated[
        str | None,
        typer.Option(
            "--step", help="Show this step's inputs, rendered prompt and answer (from the history)."
        ),
    ] = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Print a run's header (status, totals, paused) and its step tree: status, attempts,
    timings, tokens, cost and errors of every step; or one step in full with --step."""
    if step is not None:
        _show_step(run_id, step, as_json=as_json, connection=connection)
        return

    async def described() -> tuple[
        dp.RunSummary, list[dp.StepRecord], str | None, str | None, bool
    ]:
        client = await connect(connection)
        # The totals' query and the stall checks need the same queues' pollers: asked once.
        pollers = dp.client.QueuePollers(client)
        summary = await dp.client.describe_run(client, run_id, pollers=pollers)
        handle = dp.RunHandle(client, run_id)
        try:
            steps = await handle.steps(pollers=pollers)
        except dp.RunStalled as err:
            return summary, [], str(err), None, False
        paused = any((s.waiting_for or "").startswith("resume") for s in steps)
        if summary.status != "running":
            return summary, steps, None, None, False
        # A worker answers, but a queue the run needs (a routed leaf's) may have none.
        why = await handle.stalled(pollers=pollers)
        if not paused and why is None:
            # Paused while a step is in flight, no step waits yet: only the run itself knows.
            with contextlib.suppress(dp.RunError):
                paused = await handle.paused(pollers=pollers)
        return summary, steps, None, why, paused

    summary, steps, stalled, waiting_on, paused = asyncio.run(described())
    if as_json:
        shown = {**_progress.summary_json(summary), "paused": paused}
        shown["stalled"] = stalled or waiting_on
        shown["steps"] = [s.model_dump(mode="json") for s in steps]
        typer.echo(json.dumps(shown, indent=2))
        if stalled:
            raise fail(stalled, code=1)
        return
    typer.echo(_progress.header(summary, paused=paused))
    if stalled:
        raise fail(stalled, code=1)
    for line in _progress.tree_lines(steps):
        typer.echo(line)
    if waiting_on:
        warning = f"warning: run '{run_id}' cannot make progress: {waiting_on}"
        typer.echo(printable(warning), err=True)


def _show_step(run_id: str, path: str, *, as_json: bool, connection: dp.ConnectOptions) -> None:
    async def detailed() -> dp.client.StepDetail:
        return await dp.client.step_detail(await connect(connection), run_id, path)

    detail = asyncio.run(detailed())
    if as_json:
        shown = json.dumps(detail.model_dump(mode="json"), indent=2, ensure_ascii=False)
        typer.echo(printable_json(shown))
        return
    typer.echo(printable(f"step {detail.path} ({detail.kind}) of run {run_id}"))
    typer.echo("--- inputs")
    typer.echo(printable_json(json.dumps(detail.inputs, indent=2, ensure_ascii=False)))
    for message in detail.messages:
        typer.echo(printable(f"--- {message['role']} (rendered)"))
        typer.echo(printable(message["content"]))
    typer.echo("--- answer")
    typer.echo(printable_json(json.dumps(detail.output, indent=2, ensure_ascii=False)))


@app.command()
@handles_errors
@connection_options
def describe(
    run_id: Annotated[str, typer.Argument(help="The run id (workflow id).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Print a run's summary (pipe, status, totals, failed step); a running run without searchable
    totals is asked for them by query (a worker must answer within 2 s)."""

    async def described() -> dp.RunSummary:
        return await dp.client.describe_run(await connect(connection), run_id)

    summary = asyncio.run(described())
    if as_json:
        typer.echo(json.dumps(_progress.summary_json(summary), indent=2))
        return
    typer.echo(_progress.header(summary, paused=False))


@app.command()
@handles_errors
@connection_options
def replay(
    run_id: Annotated[
        str | None, typer.Argument(help="Replay this run (and its child workflows).")
    ] = None,
    query: Annotated[
        str | None,
        typer.Option("--query", help="Replay every workflow this visibility query finds."),
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Option("--file", help="Replay a history saved as JSON.", readable=False),
    ] = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Replay recorded histories against the current code; exit 1 if any is incompatible."""
    if sum(x is not None for x in (run_id, query, files)) != 1:
        raise fail("give exactly one of RUN, --query or --file")

    async def replayed() -> list[dp.ops.ReplayReport]:
        if files:
            histories = [dp.ops.load_history(path) for path in files]
        else:
            client = await connect(connection)
            histories = await dp.ops.fetch_histories(client, run_id=run_id, query=query)
        return await dp.ops.replay(histories)

    reports = asyncio.run(replayed())
    if not reports:
        raise fail("no histories to replay")
    # A run id reused after its run ended names several runs: their run IDs tell them apart.
    seen = Counter(report.workflow_id for report in reports)
    for report in reports:
        verdict = "compatible" if report.compatible else f"INCOMPATIBLE: {report.problem}"
        which = f" (run ID {report.run_id})" if seen[report.workflow_id] > 1 else ""
        typer.echo(f"{report.workflow_id}{which}: {verdict}")
    bad = sum(not r.compatible for r in reports)
    clean = len(reports) - bad
    replay = "replays" if clean == 1 else "replay"
    typer.echo(
        f"{clean} of {counted(len(reports), 'history', 'histories')} {replay} clean", err=True
    )
    if bad:
        raise typer.Exit(1)


@app.command("setup-search-attributes")
@handles_errors
@connection_options
def setup_search_attributes(*, connection: dp.ConnectOptions) -> None:
    """Register durapipe's search attributes (pipe, tokens, cost, steps) on a namespace."""

    async def added() -> list[str]:
        return await dp.ops.setup_search_attributes(await connect(connection))

    names = asyncio.run(added())
    typer.echo(f"registered: {', '.join(names)}" if names else "already registered")
