"""Following a run: step lines as steps finish, and the Temporal UI link of a run."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from urllib.parse import quote

import typer

import durapipe as dp

POLL_INTERVAL_S = 0.25
_MARKS = {"succeeded": "✓", "failed": "✗", "skipped": "-", "cancelled": "✗"}
_DONE = frozenset(_MARKS)


def step_line(record: dp.StepRecord) -> str:
    """One line for a finished step: mark, path, kind and model, time, tokens, error."""
    what = f"{record.kind} · {record.model}" if record.model else record.kind
    parts = [f"  {_MARKS.get(record.status, '·')} {record.path} ({what})"]
    if record.started_at and record.ended_at:
        parts.append(f"{(record.ended_at - record.started_at).total_seconds():.2f}s")
    if record.input_tokens or record.output_tokens:
        parts.append(f"{record.input_tokens} in / {record.output_tokens} out tokens")
    if record.attempts > 1:
        parts.append(f"{record.attempts} attempts")
    if record.cache_hit:
        parts.append("from checkpoint")
    if record.status == "skipped":
        parts.append("skipped")
    if record.error:
        parts.append(f"{record.error_type}: {record.error}")
    return "  ".join(parts)


def tree_lines(records: list[dp.StepRecord]) -> list[str]:
    """The step tree of a run: one line per step, nested steps indented under their parent."""
    lines = []
    for record in records:
        depth = record.path.count("/")
        what = f"{record.kind} · {record.model}" if record.model else record.kind
        name = record.path.rsplit("/", 1)[-1]
        parts = [f"{'  ' * depth}{_MARKS.get(record.status, '·')} {name} ({what})", record.status]
        if record.attempts:
            parts.append(f"{record.attempts} attempt{'s' if record.attempts > 1 else ''}")
        if record.started_at and record.ended_at:
            parts.append(f"{(record.ended_at - record.started_at).total_seconds():.2f}s")
        if record.counts:
            parts.append(", ".join(f"{n} {status}" for status, n in record.counts.items()))
        if record.input_tokens or record.output_tokens:
            parts.append(f"{record.input_tokens} in / {record.output_tokens} out tokens")
        if record.cost_usd:
            parts.append(f"${record.cost_usd:.6f}")
        if record.cache_hit:
            parts.append("cache hit")
        if record.error:
            parts.append(f"{record.error_type}: {record.error}")
        lines.append("  ".join(parts))
    return lines


def print_steps(records: list[dp.StepRecord]) -> None:
    """Print a line per finished step to stderr."""
    for record in records:
        if record.status in _DONE:
            typer.echo(step_line(record), err=True)


async def follow(handle: dp.RunHandle, *, quiet: bool = False) -> dp.RunResult:
    """Wait for a run, printing each step to stderr as it finishes (unless ``quiet``).

    On a terminal the steps show as a live view instead (see `_live.follow_live`).
    """
    if quiet:
        return await handle.result()
    if sys.stderr.isatty():
        from durapipe.cli._live import follow_live

        return await follow_live(handle, POLL_INTERVAL_S)
    shown: set[str] = set()

    async def show_new() -> None:
        with contextlib.suppress(
            Exception
        ):  # a query can race the run's end; the final pass shows all
            for record in await handle.steps():
                if record.status in _DONE and record.path not in shown:
                    shown.add(record.path)
                    typer.echo(step_line(record), err=True)

    result_task = asyncio.ensure_future(handle.result())
    while not result_task.done():
        await show_new()
        await asyncio.wait({result_task}, timeout=POLL_INTERVAL_S)
    try:
        result = result_task.result()
    except dp.StepFailed as err:
        for record in err.steps:
            step = dp.StepRecord.model_validate(record)
            if step.status in _DONE and step.path not in shown:
                typer.echo(step_line(step), err=True)
        raise
    for record in result.steps:
        if record.status in _DONE and record.path not in shown:
            typer.echo(step_line(record), err=True)
    return result


def run_url(ui_url: str | None, address: str | None, namespace: str | None, run_id: str) -> str:
    """The Web UI page of a run; the UI address defaults to the dev server's (gRPC port + 1000)."""
    if not ui_url:
        host, _, port = (address or dp.DEFAULT_ADDRESS).rpartition(":")
        ui_url = f"http://{host or 'localhost'}:{int(port or 7233) + 1000}"
    return f"{ui_url.rstrip('/')}/namespaces/{quote(namespace or 'default')}/workflows/{quote(run_id, safe='')}"
