"""Following a run: step lines as steps finish, and the Temporal UI link of a run."""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any
from urllib.parse import quote

import typer

import durapipe as dp
from durapipe._words import counted, moment
from durapipe.cli._printable import printable
from durapipe.cli._waiting import wait_for, waiting_line
from durapipe.client._pending import said_once

_MARKS = {"succeeded": "✓", "failed": "✗", "skipped": "-", "cancelled": "✗"}
_DONE = frozenset(_MARKS)
_TREE_MARKS = {**_MARKS, "waiting": "⏸"}


# A step whose text answer the model stopped at its output limit (kept as it was cut).
TRUNCATED_TEXT = "answer cut off at its output limit"


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
    if record.failed_attempts:
        parts.append(failed_spend_text(record))
    if record.cache_hit:
        parts.append("from checkpoint")
    if record.truncated:
        parts.append(TRUNCATED_TEXT)
    if record.status == "skipped":
        parts.append("skipped")
    if record.error:
        parts.append(f"{record.error_type}: {record.error}")
    return printable("  ".join(parts))


def failed_spend_text(record: dp.StepRecord) -> str:
    """What a step's failed attempts spent (counted in its figures): ``($0.003000 of it on failed
    attempt 1)``."""
    failed = record.failed_attempts
    cost = sum(a.cost_usd for a in failed)
    which = ", ".join(str(a.attempt) for a in failed)
    return f"(${cost:.6f} of it on failed attempt{'s' if len(failed) > 1 else ''} {which})"


def tree_lines(records: list[dp.StepRecord]) -> list[str]:
    """The step tree of a run: one line per step, nested steps indented under their parent."""
    lines = []
    for record in records:
        depth = record.path.count("/")
        what = f"{record.kind} · {record.model}" if record.model else record.kind
        name = record.path.rsplit("/", 1)[-1]
        parts = [
            f"{'  ' * depth}{_TREE_MARKS.get(record.status, '·')} {name} ({what})",
            record.status,
        ]
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
        if record.failed_attempts:
            parts.append(failed_spend_text(record))
        if record.cache_hit:
            parts.append("cache hit")
        if record.truncated:
            parts.append(TRUNCATED_TEXT)
        if record.waiting_for:
            # A decision, a resume, or a retry's next attempt (which says how the last failed).
            parts.append(f"waiting for {record.waiting_for}")
        elif record.error:
            parts.append(
                f"{record.error_type}: {record.error}" if record.error_type else record.error
            )
        lines.append(printable("  ".join(parts)))
    return lines


def totals_text(summary: dp.RunSummary, *, done: bool = False) -> str:
    """A run's steps, tokens and cost; ``*`` after them when they were read from the run (not
    searchable), ``?`` for each when the run could not tell them."""
    if not summary.totals_known:
        return f"? steps{' done' if done else ''}  ? in / ? out tokens  $?"
    return (
        f"{counted(summary.steps, 'step')}{' done' if done else ''}  {summary.input_tokens} in / "
        f"{summary.output_tokens} out tokens  ${summary.cost_usd:.6f}"
        f"{'' if summary.searchable_totals else ' *'}"
    )


def run_line(summary: dp.RunSummary) -> str:
    """One run as `durapipe runs` lists it: id, pipe, status, start, totals, where it failed."""
    line = f"{summary.run_id}  {summary.pipe}  {summary.status}  {moment(summary.started_at)}  "
    line += totals_text(summary)
    if summary.status == "failed":  # the dead-letter view: where it failed and why
        line += f"  step '{summary.failed_step or '-'}': {summary.error}"
    return printable(line)


def summary_json(summary: dp.RunSummary) -> dict[str, Any]:
    """A run's summary as `--json` prints it: unknown totals are null (not 0, which would read as
    a free run), ``totals_known`` says why."""
    shown = summary.model_dump(mode="json")
    if not summary.totals_known:
        shown.update(cost_usd=None, input_tokens=None, output_tokens=None, steps=None)
    return shown


def header(summary: dp.RunSummary, *, paused: bool) -> str:
    """The first line of `show`: the run, its pipe and status, and its totals so far."""
    state = f"{summary.status} (paused)" if paused else summary.status
    line = (
        f"run {summary.run_id}  pipe {summary.pipe or '-'}  {state}  "
        f"started {moment(summary.started_at)}  {totals_text(summary, done=True)}"
    )
    if not summary.searchable_totals:
        # A running run may have them on and not have upserted yet (its first seconds); an
        # ended run that had them on has upserted at its end.
        why = "not searchable, or not yet" if summary.status == "running" else "not searchable"
        line += (
            f" (read from the run: {why})"
            if summary.totals_known
            else f"  ({why}, and the run could not tell them"
            + (f": {summary.totals_unknown_why})" if summary.totals_unknown_why else ")")
        )
    if summary.status == "failed":
        line += f"\n  failed at step '{summary.failed_step or '-'}': {summary.error}"
    return printable(line)


def newly_finished(
    records: list[dp.StepRecord], shown: set[str], *, final: bool = False
) -> list[dp.StepRecord]:
    """The finished steps not in ``shown``, in the order they finished; adds them to ``shown``.

    A controller (a sequence, a batch) finishes after its steps, so its line comes after theirs:
    it waits while any step under it is still unfinished (unless the run is over: ``final``), and
    steps that finished together are ordered by their end, the deeper first (a records list puts
    a controller before its steps).
    """
    unfinished = [] if final else [r.path for r in records if r.status not in _DONE]
    ready = [
        r
        for r in records
        if r.status in _DONE
        and r.path not in shown
        and not any(path.startswith(r.path + "/") for path in unfinished)
    ]
    ready.sort(
        key=lambda r: (r.ended_at.timestamp() if r.ended_at else math.inf, -r.path.count("/"))
    )
    shown.update(r.path for r in ready)
    return ready


def print_step(record: dp.StepRecord) -> None:
    """Print a finished step's line to stderr (a local run's progress, as each step ends)."""
    if record.status in _DONE:
        typer.echo(step_line(record), err=True)


def print_notice(line: str) -> None:
    """Print why a local run waits outside its steps (litellm's import) to stderr, where its step
    lines go: never into the output on stdout."""
    typer.echo(printable(f"  … {line}"), err=True)


def failed_attempt_lines(record: dp.StepRecord, said: dict[str, int], run_id: str) -> list[str]:
    """The lines saying failed attempts of ``record`` not said yet; ``said`` keeps, per step path,
    the last failed attempt said, and is updated.

    A step waiting for its next attempt says it with that wait's line (`waiting_line`: the attempt
    to come and how the last one failed). A follower polls, so it can miss a short wait; the step's
    record still tells the attempt it is on and how the one before failed, so that failure is said
    all the same. The server keeps only the last failure: an attempt missed before it (or a step
    that ended between two looks) is said without its error.
    """
    failed = record.attempts - 1  # the attempts before the one the step is on, or ended on
    before = said.get(record.path, 0)
    if failed <= before:
        return []
    said[record.path] = failed
    known = record.status == "running" and record.error is not None  # the last one's failure
    unseen = failed - 1 if known else failed
    lines = []
    if unseen > before:
        which = (
            f"attempt {unseen}" if unseen == before + 1 else f"attempts {before + 1} to {unseen}"
        )
        lines.append(f"  ↻ {record.path} {which} failed (how is not known: not seen while it ran)")
    if known:
        if _retry_wait(record):
            lines.append(waiting_line(record, run_id))
        else:  # its wait was missed (or a limit's wait says more): the next attempt is under way
            error = f"{record.error_type}: {record.error}" if record.error_type else record.error
            lines.append(
                f"  ↻ {record.path} attempt {failed} failed: {error}; "
                f"now on attempt {record.attempts}"
            )
    return [printable(line) for line in lines]


async def follow(handle: dp.RunHandle, *, quiet: bool = False) -> dp.RunResult:
    """Wait for a run, printing each step to stderr as it finishes (unless ``quiet``).

    On a terminal the steps show as a live view instead (see `_live.follow_live`).
    """
    if quiet:
        return await wait_for(handle)
    if sys.stderr.isatty():
        from durapipe.cli._live import follow_live

        return await follow_live(handle)
    shown: set[str] = set()
    waits: set[str] = set()  # "path: what it waits for", each said once
    failed: dict[str, int] = {}  # per step, the last failed attempt said (`failed_attempt_lines`)

    def say(lines: list[str]) -> None:
        for line in lines:
            typer.echo(line, err=True)

    def say_finished(records: list[dp.StepRecord], *, final: bool = False) -> None:
        for record in newly_finished(records, shown, final=final):
            say([*failed_attempt_lines(record, failed, handle.run_id), step_line(record)])

    async def show_new() -> None:
        with contextlib.suppress(Exception):  # a query can race the run's end; the end shows all
            records = await handle.steps()
            say_finished(records)
            for record in records:
                if record.status == "running":
                    say(failed_attempt_lines(record, failed, handle.run_id))
            say(new_wait_lines(records, waits, handle.run_id))

    try:
        result = await wait_for(handle, show_new)
    except (dp.StepFailed, dp.RunCancelled) as err:
        say_finished([dp.StepRecord.model_validate(record) for record in err.steps], final=True)
        raise
    say_finished(result.steps, final=True)
    return result


def new_wait_lines(records: list[dp.StepRecord], waits: set[str], run_id: str) -> list[str]:
    """What each step that waits (for a human, a resume) waits for, once per wait: ``waits``
    keeps those said. A step waiting for its next attempt is said by `failed_attempt_lines`."""
    lines = []
    for record in records:
        wait = said_once(record)
        if record.waiting_for and wait not in waits and not _retry_wait(record):
            waits.add(wait)
            lines.append(waiting_line(record, run_id))
    return lines


def _retry_wait(record: dp.StepRecord) -> bool:
    """Whether ``record`` waits for its next attempt (said by `failed_attempt_lines`)."""
    return (record.waiting_for or "").startswith(f"attempt {record.attempts} ")


def run_url(ui_url: str, namespace: str, run_id: str) -> str:
    """The Web UI page of a run on the UI at ``ui_url``."""
    return f"{ui_url.rstrip('/')}/namespaces/{quote(namespace)}/workflows/{quote(run_id, safe='')}"


def ui_line(ui_url: str | None, address: str, namespace: str, run_id: str) -> str | None:
    """``Temporal UI: <link>`` for a run, or a hint when the UI's address is not known (a remote
    server; never a guessed link), or None when the server has no UI (a --headless dev server)."""
    ui_url = ui_url or dp.ops.dev_ui_url(address)
    if ui_url:
        return f"Temporal UI: {run_url(ui_url, namespace, run_id)}"
    host = address.rpartition(":")[0]
    if host in ("localhost", "127.0.0.1", "::1", "[::1]", ""):
        return None  # a durapipe dev server started --headless: it has no UI
    return "Temporal UI: pass --ui-url (or set DURAPIPE_UI_URL) to get a link to this run"
