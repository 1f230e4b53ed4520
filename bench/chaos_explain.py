"""Why each duplicate paid call of a chaos scenario happened: one line per repeat, for a sceptic.

`bench/chaos.py` counts duplicates; this module says, for each one, what a reader needs to judge
it from CI output alone: the step and run, both paid requests (ledger ``#seq``, the worker process
and Temporal attempt that sent each, the hash of each request body), whether the first request's
answer had been kept in the checkpoint store before the second was sent (and when the step's result
was stored), which kill (if any) caught the first request in flight, and how Temporal ended the
attempts in between (the failure recorded on the step's last attempt: a heartbeat or start-to-close
timeout, a provider error).
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import TimeoutType
from temporalio.client import Client

from durapipe.testing import Call


@dataclass(frozen=True)
class Kept:
    """What the checkpoint store held after the scenario: when each answer (by the ledger ``seq``
    of the call that produced it) was kept, and when each step's result (by key) was stored."""

    answers: Mapping[int, float]
    results: Mapping[str, float]
    readable: bool = True

    @classmethod
    def read(cls, path: Path | None) -> Kept:
        """The store at ``path`` (a SQLite file; None or unreadable: nothing known)."""
        if path is None or not path.exists():
            return cls({}, {}, readable=False)
        answers: dict[int, float] = {}
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                for text, at in db.execute("SELECT answer, created_at FROM answers"):
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        # A kept answer is base64 of JSON whose body is the provider's answer; its
                        # id names the ledger seq that produced it (``chatcmpl-fake-<seq>``).
                        body = json.loads(
                            base64.b64decode(json.loads(base64.b64decode(text))["body"])
                        )
                        answers[int(str(body["id"]).rsplit("-", 1)[1])] = float(at)
                results = {
                    str(key): float(at)
                    for key, at in db.execute("SELECT key, created_at FROM checkpoints")
                }
            finally:
                db.close()
        except sqlite3.Error:
            return cls({}, {}, readable=False)
        return cls(answers, results)


@dataclass(frozen=True)
class KillNote:
    """One kill as the explanation needs it: the process (``worker1#2``), the freeze time, and
    the ledger ``seq`` of the requests it left in flight (unanswered or unread)."""

    process: str
    at: float
    in_flight: frozenset[int]
    aimed_at: int | None = None


def process_of(api_key: str) -> str:
    """``worker1#2`` for ``sk-fake-chaos-worker1-2`` (each worker start sends its own key)."""
    name, _, start = api_key.removeprefix("sk-fake-chaos-").rpartition("-")
    return f"{name}#{start}" if name else api_key or "?"


def explain(
    calls: Iterable[Call],
    kills: list[KillNote],
    kept: Kept,
    *,
    billed: Callable[[Call], bool],
    key_of_process: Callable[[Call], str],
    last_failures: Mapping[tuple[str, str], str],
    lost: set[int],
    t0: float,
) -> list[str]:
    """One line per repeated request (a key answered more than once), oldest first.

    Args:
        calls: The provider's ledger.
        kills: Every kill of the scenario.
        kept: The checkpoint store after the scenario.
        billed: Whether the provider charged for a call.
        key_of_process: The API key a call was sent with.
        last_failures: ``(topic, step) -> `` the failure Temporal recorded before the step's last
            attempt (empty when it had none).
        lost: ``seq`` of the requests in flight at a kill (they explain one repeat each).
        t0: Times are printed in seconds after this instant.
    """
    groups: dict[str | None, list[Call]] = {}
    for call in sorted(calls, key=lambda c: c.seq):
        if billed(call) or call.outcome == "replayed":
            groups.setdefault(call.idempotency_key, []).append(call)
    lines = []
    for group in groups.values():
        first = group[0]
        budget = sum(1 for c in group if c.seq in lost)
        for repeat in group[1:]:
            explained = budget > 0
            budget -= explained
            lines.append(
                _line(first, repeat, kills, kept, key_of_process, last_failures, explained, t0)
            )
    return lines


def _line(
    first: Call,
    repeat: Call,
    kills: list[KillNote],
    kept: Kept,
    key_of_process: Callable[[Call], str],
    last_failures: Mapping[tuple[str, str], str],
    explained: bool,
    t0: float,
) -> str:
    step = first.model.removeprefix("gpt-")
    topic = _topic(first) or "?"

    def when(at: float | None) -> str:
        return "never" if at is None else f"{at - t0:+.3f}s"

    def request(call: Call) -> str:
        return (
            f"#{call.seq} by {process_of(key_of_process(call))} attempt {call.attempt} "
            f"body {(call.body_sha256 or '?')[:12]} received {when(call.received_at)} "
            f"answered {when(call.finished_at)} ({call.outcome})"
        )

    same = "same body" if first.body_sha256 == repeat.body_sha256 else "BODIES DIFFER"
    answer_at = kept.answers.get(first.seq)
    if not kept.readable:
        store = "no checkpoint store to read (off, or not a SQLite file)"
    elif answer_at is None:
        store = f"#{first.seq}'s answer never kept"
    else:
        before = "before" if answer_at <= repeat.received_at else "after"
        store = f"#{first.seq}'s answer kept {when(answer_at)} ({before} #{repeat.seq} arrived)"
    result_at = kept.results.get(first.idempotency_key or "")
    caught = [k for k in kills if first.seq in k.in_flight or repeat.seq in k.in_flight]
    first_process = process_of(key_of_process(first))
    killed = [k for k in kills if k.process == first_process]
    if caught:
        kill = caught[0]
        why = f"in flight at the kill of {kill.process} (frozen {when(kill.at)})"
        if first.received_at > kill.at:
            why += ": sent before the freeze, picked up by the provider only after it"
    elif killed:
        kill = killed[0]
        why = f"{kill.process} killed {when(kill.at)}, this request not in flight then"
    else:
        why = f"{first_process} was never killed"
    failure = last_failures.get((topic, step), "")
    return (
        f"{'explained' if explained else 'UNEXPLAINED'} duplicate: {topic} step {step} "
        f"key {(first.idempotency_key or '?')[:12]}: {request(first)}; then {request(repeat)}; "
        f"{same}; {store}; step result stored {when(result_at)}; {why}"
        + (f"; Temporal's last retry followed: {failure}" if failure else "")
    )


def _topic(call: Call) -> str | None:
    found = re.search(r"topic \d+", json.dumps(call.messages))
    return found.group(0) if found else None


async def last_failures(client: Client, runs: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """``(topic, step) -> `` what ended the attempt before each step's last one, from the
    histories of ``runs`` (``topic -> workflow id``): Temporal records one started event per
    activity, with the previous attempt's failure (a timeout names its kind)."""
    found: dict[tuple[str, str], str] = {}
    for topic, run_id in runs.items():
        with contextlib.suppress(Exception):  # a diagnostic: never the reason a scenario fails
            history = await client.get_workflow_handle(run_id).fetch_history()
            steps: dict[int, str] = {}
            for event in history.events:
                if event.HasField("activity_task_scheduled_event_attributes"):
                    scheduled = event.activity_task_scheduled_event_attributes
                    with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                        call = json.loads(scheduled.input.payloads[0].data)
                        steps[event.event_id] = str(call["pipe_name"])
                elif event.HasField("activity_task_started_event_attributes"):
                    started = event.activity_task_started_event_attributes
                    step = steps.get(started.scheduled_event_id)
                    if step is None or not started.HasField("last_failure"):
                        continue
                    failure = started.last_failure
                    kind = failure.timeout_failure_info.timeout_type
                    cause = (
                        f"{TimeoutType.Name(kind)} of attempt {started.attempt - 1}"
                        if failure.HasField("timeout_failure_info")
                        else failure.message[:120]
                    )
                    found[(topic, step)] = f"attempt {started.attempt} after {cause}"
    return found
