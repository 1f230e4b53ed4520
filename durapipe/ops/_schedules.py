"""Running pipes on a schedule, with Temporal Schedules.

A schedule holds the resolved spec and inputs of its pipe (as a run started by `start` does), so its
runs never depend on a file edited after it was created. Each run's workflow id is the schedule's
``<schedule id>-run`` plus the time Temporal adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleListActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
)
from temporalio.service import RPCError, RPCStatusCode

from durapipe._errors import ConfigError, DurapipeError
from durapipe.adapters import DEFAULT_TASK_QUEUE, WORKFLOW_NAME, pipe_run
from durapipe.spec import Pipeline, format_duration, parse_duration
from durapipe.workflows._search import start_totals

Overlap = Literal[
    "skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"
]
OVERLAP_POLICIES: dict[str, ScheduleOverlapPolicy] = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}


class ScheduleNotFound(DurapipeError):
    """No schedule with that id (the CLI exits 1, as for a run id that names no run)."""


@dataclass(frozen=True)
class ScheduleSummary:
    """One schedule of durapipe runs, as `list_schedules` reports it.

    Attributes:
        schedule_id: the schedule's id.
        pipe: the pipe its runs run.
        when: the cron expressions and intervals, e.g. ``every 1h30m`` or ``cron 0 9 * * *``.
        paused: whether the schedule is paused.
        note: the note of the last pause or unpause.
        next_runs: the next times it will start a run.
        recent_runs: ids of the runs it started most recently.
    """

    schedule_id: str
    when: str
    paused: bool
    pipe: str = ""
    note: str = ""
    next_runs: list[datetime] = field(default_factory=list)
    recent_runs: list[str] = field(default_factory=list)


async def create_schedule(
    client: Client,
    pipeline: Pipeline,
    pipe: str,
    inputs: Mapping[str, Any],
    *,
    schedule_id: str,
    cron: str | None = None,
    every: float | str | None = None,
    overlap: Overlap = "skip",
    task_queue: str = DEFAULT_TASK_QUEUE,
    budget_usd: float | None = None,
) -> None:
    """Create a schedule that runs pipe ``pipe`` with ``inputs`` on a cron expression or interval.

    Args:
        client: a client from `durapipe.connect`.
        pipeline: the pipeline holding the pipe; its inputs are checked now.
        pipe: the pipe to run.
        inputs: the inputs of every run.
        schedule_id: the schedule's id.
        cron: a cron expression (``0 9 * * MON-FRI``); give this or ``every``.
        every: an interval: a number of seconds, or a string with its unit (``30s``, ``10m``,
            ``1h``; a string without a unit is refused); give this or ``cron``.
        overlap: what happens when a run is due while the last one still runs: ``skip``
            (default), ``buffer_one``, ``buffer_all``, ``cancel_other``, ``terminate_other``,
            ``allow_all``.
        task_queue: the workers' task queue.
        budget_usd: the budget of each run.

    Raises:
        PipelineError: the pipe is unknown or the inputs do not fit it.
        ConfigError: not exactly one of ``cron`` and ``every``, an unknown overlap policy, a bad
            cron expression, or a schedule with this id already exists.
    """
    if (cron is None) == (every is None):
        raise ConfigError(f"schedule '{schedule_id}': give either a cron expression or an interval")
    if overlap not in OVERLAP_POLICIES:
        raise ConfigError(
            f"schedule '{schedule_id}': unknown overlap policy '{overlap}' "
            f"(one of {', '.join(OVERLAP_POLICIES)})"
        )
    try:
        if isinstance(every, str) and every.strip().replace(".", "", 1).isdigit():
            # `--every 10` could mean seconds or minutes; a schedule that fires 60 times too
            # often costs real money, so the unit is asked for, not guessed.
            raise ValueError(
                f"--every '{every}' needs a unit, e.g. {every.strip()}s, {every.strip()}m or {every.strip()}h"
            )
        interval = None if every is None else timedelta(seconds=parse_duration(every))
    except ValueError as err:
        raise ConfigError(f"schedule '{schedule_id}': {err}") from None
    run = pipe_run(pipeline, pipe, inputs, run_id=f"{schedule_id}-run", budget_usd=budget_usd)
    spec = ScheduleSpec(
        cron_expressions=[cron] if cron else [],
        intervals=[ScheduleIntervalSpec(every=interval)] if interval else [],
    )
    action = ScheduleActionStartWorkflow(
        WORKFLOW_NAME,
        run,
        id=run.run_id,
        task_queue=task_queue,
        static_summary=f"pipe {pipe}",
        memo={"pipe": pipe, "schedule": schedule_id},
        # Listed by `durapipe runs` from the start, before a worker has picked the run up.
        typed_search_attributes=start_totals(pipe, run.workflow_version),
    )
    schedule = Schedule(
        action=action, spec=spec, policy=SchedulePolicy(overlap=OVERLAP_POLICIES[overlap])
    )
    try:
        await client.create_schedule(schedule_id, schedule, memo={"pipe": pipe})
    except ScheduleAlreadyRunningError:
        raise ConfigError(f"a schedule with id '{schedule_id}' already exists") from None
    except RPCError as err:
        raise ConfigError(f"schedule '{schedule_id}' was not created: {err.message}") from None


async def list_schedules(client: Client) -> list[ScheduleSummary]:
    """The schedules that start durapipe runs, by id.

    Raises:
        ConfigError: the server refused to list them.
    """
    found = []
    try:
        entries = [entry async for entry in await client.list_schedules()]
    except RPCError as err:
        raise ConfigError(f"cannot list schedules: {err.message}") from None
    for entry in entries:
        schedule = entry.schedule
        action = schedule.action if schedule else None
        if (
            not isinstance(action, ScheduleListActionStartWorkflow)
            or action.workflow != WORKFLOW_NAME
        ):
            continue
        assert schedule is not None
        info = entry.info
        found.append(
            ScheduleSummary(
                schedule_id=entry.id,
                when=_when(schedule.spec),
                paused=schedule.state.paused,
                pipe=str((await entry.memo()).get("pipe", "")),
                note=schedule.state.note or "",
                next_runs=list(info.next_action_times) if info else [],
                recent_runs=[
                    a.action.workflow_id
                    for a in (info.recent_actions if info else [])
                    if hasattr(a.action, "workflow_id")
                ],
            )
        )
    return sorted(found, key=lambda s: s.schedule_id)


async def pause_schedule(client: Client, schedule_id: str, *, note: str = "") -> None:
    """Pause a schedule: it starts no run until unpaused. Runs already started go on."""
    await _call(client, schedule_id, "pause", note=note or "paused with durapipe")


async def unpause_schedule(client: Client, schedule_id: str, *, note: str = "") -> None:
    """Let a paused schedule start runs again."""
    await _call(client, schedule_id, "unpause", note=note or "unpaused with durapipe")


async def trigger_schedule(client: Client, schedule_id: str) -> None:
    """Start a run of the schedule now (its overlap policy applies)."""
    await _call(client, schedule_id, "trigger")


async def delete_schedule(client: Client, schedule_id: str) -> None:
    """Delete a schedule: it starts no more runs. Runs already started go on."""
    await _call(client, schedule_id, "delete")


async def _call(client: Client, schedule_id: str, method: str, **kwargs: Any) -> None:
    handle = client.get_schedule_handle(schedule_id)
    try:
        await getattr(handle, method)(**kwargs)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ScheduleNotFound(
                f"no schedule '{schedule_id}'; `durapipe schedule list` lists them"
            ) from None
        raise ConfigError(f"schedule '{schedule_id}': {err.message}") from None


def _when(spec: ScheduleSpec) -> str:
    parts = [f"cron {c}" for c in spec.cron_expressions]
    # The server keeps a cron expression as a calendar: written back as cron, it reads as given.
    parts += [_calendar_text(calendar) for calendar in spec.calendars]
    parts += [f"every {format_duration(i.every.total_seconds())}" for i in spec.intervals]
    return ", ".join(parts) or "no times"


# A cron field's whole range (minute, hour, day of month, month, day of week): written `*`.
_CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day_of_month", 1, 31), ("month", 1, 12),
                ("day_of_week", 0, 6))  # fmt: skip


def _calendar_text(calendar: ScheduleCalendarSpec) -> str:
    """A calendar entry as the cron expression it came from (``cron 0 2 * * 1-5``); one that
    cron cannot write (seconds, years) as Temporal's calendar fields."""
    fields = []
    for name, low, high in _CRON_FIELDS:
        ranges = getattr(calendar, name)
        if len(ranges) == 1 and (ranges[0].start, ranges[0].end, ranges[0].step) == (low, high, 1):
            fields.append("*")
        else:
            fields.append(",".join(_range_text(r) for r in ranges))
    if calendar.year or [(r.start, r.end) for r in calendar.second] != [(0, 0)]:
        seconds = ",".join(_range_text(r) for r in calendar.second)
        years = ",".join(_range_text(r) for r in calendar.year) or "*"
        return f"calendar second {seconds}, cron {' '.join(fields)}, year {years}"
    return f"cron {' '.join(fields)}"


def _range_text(span: ScheduleRange) -> str:
    end = max(span.end, span.start)
    text = str(span.start) if end == span.start else f"{span.start}-{end}"
    return f"{text}/{span.step}" if span.step > 1 else text
