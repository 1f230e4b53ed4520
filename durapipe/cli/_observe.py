"""``durapipe show``, ``durapipe replay`` and ``durapipe setup-search-attributes``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

import durapipe as dp
from durapipe.cli import _progress
from durapipe.cli._app import app, fail, handles_errors
from durapipe.cli._connection import connection_options


@app.command()
@handles_errors
@connection_options
def show(
    run_id: Annotated[str, typer.Argument(help="The run id (workflow id).", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the step records as JSON.")
    ] = False,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Print a run's step tree: status, attempts, timings, tokens, cost and errors of every step."""

    async def records() -> list[dp.StepRecord]:
        client = await dp.connect(options=connection)
        return await dp.RunHandle(client, run_id).steps()

    steps = asyncio.run(records())
    if as_json:
        typer.echo(
            json.dumps(
                {"run_id": run_id, "steps": [s.model_dump(mode="json") for s in steps]}, indent=2
            )
        )
        return
    typer.echo(f"run {run_id}")
    for line in _progress.tree_lines(steps):
        typer.echo(line)


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
        list[Path] | None, typer.Option("--file", help="Replay a history saved as JSON.")
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
            client = await dp.connect(options=connection)
            histories = await dp.ops.fetch_histories(client, run_id=run_id, query=query)
        return await dp.ops.replay(histories)

    reports = asyncio.run(replayed())
    if not reports:
        raise fail("no histories to replay")
    for report in reports:
        verdict = "compatible" if report.compatible else f"INCOMPATIBLE: {report.problem}"
        typer.echo(f"{report.workflow_id}: {verdict}")
    bad = sum(not r.compatible for r in reports)
    typer.echo(f"{len(reports) - bad} of {len(reports)} histories replay clean", err=True)
    if bad:
        raise typer.Exit(1)


@app.command("setup-search-attributes")
@handles_errors
@connection_options
def setup_search_attributes(*, connection: dp.ConnectOptions) -> None:
    """Register durapipe's search attributes (pipe, tokens, cost, steps) on a namespace."""

    async def added() -> list[str]:
        return await dp.ops.setup_search_attributes(await dp.connect(options=connection))

    names = asyncio.run(added())
    typer.echo(f"registered: {', '.join(names)}" if names else "already registered")
