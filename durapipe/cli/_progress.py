"""Following a run: step lines as steps finish, and the Temporal UI link of a run."""

from __future__ import annotations

import asyncio
import contextlib
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


def print_steps(records: list[dp.StepRecord]) -> None:
    """Print a line per finished step to stderr."""
    for record in records:
        if record.status in _DONE:
            typer.echo(step_line(record), err=True)


async def follow(handle: dp.RunHandle, *, quiet: bool = False) -> dp.RunResult:
    """Wait for a run, printing each step to stderr as it finishes (unless ``quiet``)."""
    if quiet:
        return await handle.result()
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
