"""The live view of a run on a terminal (rich): steps as they start and finish, spend as it accrues."""

from __future__ import annotations

import contextlib

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

import durapipe as dp
from durapipe.cli._printable import printable
from durapipe.cli._waiting import wait_for, waiting_line
from durapipe.workflows._search import spent

_STYLES = {
    "succeeded": "green",
    "failed": "red",
    "skipped": "dim",
    "cancelled": "red",
    "waiting": "yellow",
}
_MARKS = {
    "succeeded": "✓",
    "failed": "✗",
    "skipped": "-",
    "cancelled": "✗",
    "pending": "·",
    "waiting": "⏸",
}


def render(records: list[dp.StepRecord], run_id: str) -> Group:
    """A table of the steps and a line of totals."""
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("", "step", "kind", "attempts", "time", "tokens in/out", "cost"):
        table.add_column(column)
    waiting: list[dp.StepRecord] = []
    for record in records:
        mark: Spinner | Text = (
            Spinner("dots")
            if record.status == "running"
            else Text(_MARKS.get(record.status, "·"), style=_STYLES.get(record.status, ""))
        )
        if record.status == "waiting" or record.waiting_for:
            waiting.append(record)
        name = "  " * record.path.count("/") + record.path.rsplit("/", 1)[-1]
        if record.counts:  # a batch's row: how its items stand
            name += "  " + ", ".join(f"{n} {status}" for status, n in record.counts.items())
        seconds = (
            f"{(record.ended_at - record.started_at).total_seconds():.2f}s"
            if record.started_at and record.ended_at
            else ""
        )
        table.add_row(
            mark,
            Text(printable(name)),
            Text(printable(f"{record.kind} · {record.model}" if record.model else record.kind)),
            str(record.attempts or ""),
            seconds,
            f"{record.input_tokens}/{record.output_tokens}" if record.input_tokens else "",
            f"${record.cost_usd:.6f}" if record.cost_usd else "",
        )
    usage = spent(records)
    footer = Text(
        f"run {run_id}: {usage.input_tokens} in / {usage.output_tokens} out tokens, "
        f"${usage.cost_usd:.6f}",
        style="bold",
    )
    return Group(table, *(Text(waiting_line(r, run_id), style="yellow") for r in waiting), footer)


async def follow_live(handle: dp.RunHandle) -> dp.RunResult:
    """Wait for a run while a live view on stderr shows its steps."""
    console = Console(stderr=True)
    records: list[dp.StepRecord] = []

    with Live(render(records, handle.run_id), console=console, refresh_per_second=8) as live:

        async def refresh() -> None:
            with contextlib.suppress(Exception):  # a query can race the run's end
                live.update(render(await handle.steps(), handle.run_id))

        try:
            result = await wait_for(handle, refresh)
        except (dp.StepFailed, dp.RunCancelled) as err:
            live.update(render([dp.StepRecord.model_validate(s) for s in err.steps], handle.run_id))
            raise
        live.update(render(result.steps, handle.run_id))
    return result
