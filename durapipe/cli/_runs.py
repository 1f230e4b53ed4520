"""``durapipe runs``: list runs filtered by durapipe's search attributes (pipe, status, cost)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

import durapipe as dp
from durapipe._words import counted
from durapipe.cli import _progress
from durapipe.cli._app import app, handles_errors
from durapipe.cli._connection import connect, connection_options


@app.command()
@handles_errors
@connection_options
def runs(
    pipe: Annotated[str | None, typer.Option("--pipe", help="Only runs of this pipe.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", help="running, completed, failed, cancelled, terminated or timed-out."
        ),
    ] = None,
    min_cost: Annotated[
        float | None, typer.Option("--min-cost", help="Only runs that cost at least this (USD).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Most runs to list.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the runs as JSON.")] = False,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """List runs, newest first, with their pipe, status, tokens and cost."""

    async def listed() -> dp.client.RunListing:
        client = await connect(connection)
        return await dp.client.find_runs(
            client, pipe=pipe, status=status, min_cost=min_cost, limit=limit
        )

    listing = asyncio.run(listed())
    found = listing.runs
    if as_json:
        typer.echo(json.dumps([_progress.summary_json(r) for r in found], indent=2))
    elif not found:
        typer.echo("no runs match", err=True)
    for r in [] if as_json else found:
        typer.echo(_progress.run_line(r))
    read = sum(not r.searchable_totals for r in found)
    if read:
        typer.echo(
            f"{read} of these runs {'has' if read == 1 else 'have'} no searchable totals (started "
            "with searchable totals off, "
            "or not upserted yet): their totals (marked *) were read from each run"
            + (", and --min-cost was applied to them here, not by the server" if min_cost else ""),
            err=True,
        )
    # One line per reason: a queue nobody polls (or whose workers did not answer) groups its
    # runs; a run whose workflow task keeps failing is named by its own line.
    unanswered: dict[str, int] = {}
    for r in found:
        if not r.totals_known and r.status == "running":
            why = r.totals_unknown_why or "the run did not answer"
            unanswered[why] = unanswered.get(why, 0) + 1
    for why, count in unanswered.items():
        typer.echo(
            f"the totals of {counted(count, 'running run')} could not be read; "
            f"{why}" + ("; listed without --min-cost applied" if min_cost else ""),
            err=True,
        )
    unknown = [r.run_id for r in found if not r.totals_known and r.status != "running"]
    if unknown:
        typer.echo(
            f"the totals of {', '.join(unknown)} could not be read (cancelled, terminated or timed "
            "out without searchable totals)"
            + ("; listed without --min-cost applied" if min_cost else ""),
            err=True,
        )
    if listing.scan_cut:
        typer.echo(
            f"--min-cost read the totals of the newest {counted(listing.scanned, 'run')} without searchable "
            "totals and stopped there: older runs without searchable totals were not looked at",
            err=True,
        )
