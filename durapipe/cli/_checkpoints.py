"""``durapipe checkpoints prune``: delete stored results past their retention (and, in Redis,
what an earlier durapipe stored without an expiry)."""

from __future__ import annotations

from typing import Annotated

import typer

from durapipe.cli._app import app, fail, handles_errors
from durapipe.spec import parse_duration
from durapipe.stores import prune_checkpoints

checkpoints_app = typer.Typer(
    help="The checkpoint store (DURAPIPE_CHECKPOINTS): results kept against paying twice.",
    no_args_is_help=True,
)
app.add_typer(checkpoints_app, name="checkpoints")


@checkpoints_app.command("prune")
@handles_errors
def prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Delete results stored longer ago than this, e.g. 7d, 12h "
            "\\[default: DURAPIPE_CHECKPOINT_TTL, else 30d]. SQLite stores only: Redis expires "
            "results by itself.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Delete stored results older than the retention.

    A Redis store expires results by itself; there, prune deletes what an earlier durapipe
    stored without an expiry (results of before retention, answers of before their v1 layout),
    and refuses --older-than (it cannot tell when a key was stored).
    """
    seconds = None
    if older_than is not None:
        try:
            seconds = parse_duration(older_than)
        except ValueError as err:
            raise fail(f"--older-than: {err}") from None
    count = prune_checkpoints(seconds)
    typer.echo(f"pruned {count} checkpoint{'s' if count != 1 else ''}")
