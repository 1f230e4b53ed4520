"""Commands that control runs: pause, resume, retry, cancel, approve, reject, pending, schedule ..."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from temporalio.client import Client
from temporalio.service import RPCError

import durapipe as dp
from durapipe._words import moment
from durapipe.cli import _progress
from durapipe.cli._app import (
    TaskQueueOption,
    UiUrlOption,
    app,
    fail,
    handles_errors,
    print_result,
    required_file,
    stopped_following,
)
from durapipe.cli._connection import connect, connection_options
from durapipe.cli._inputs import input_types, loads, parse_inputs
from durapipe.cli._methods import MethodsOption, methods_for
from durapipe.cli._printable import printable, printable_json

T = TypeVar("T")
RunArgument = Annotated[str, typer.Argument(help="The run id.", show_default=False)]
StepArgument = Annotated[
    str, typer.Argument(help="The step path, e.g. review or fact_check/review.", show_default=False)
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why, in your words.")]
ReviewerOption = Annotated[
    str | None, typer.Option("--reviewer", help="Who decides \\[default: your user name].")
]


def _with_client(connection: dp.ConnectOptions, action: Callable[[Client], Awaitable[T]]) -> T:
    async def go() -> T:
        return await action(await connect(connection))

    return asyncio.run(go())


@app.command()
@handles_errors
@connection_options
def pause(
    run_id: RunArgument,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Pause a run: steps in flight finish, no new step starts until `durapipe resume`."""
    unknown = _with_client(connection, lambda c: _pause_or_resume(c, run_id, pause=True))
    if unknown is None:
        typer.echo(f"paused run {run_id}: no new step starts until `durapipe resume {run_id}`")
    else:
        _say_recorded(run_id, unknown, "pause")


@app.command()
@handles_errors
@connection_options
def resume(
    run_id: RunArgument,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Resume a paused run."""
    unknown = _with_client(connection, lambda c: _pause_or_resume(c, run_id, pause=False))
    if unknown is None:
        typer.echo(f"resumed run {run_id}")
    else:
        _say_recorded(run_id, unknown, "resume")


async def _pause_or_resume(client: Client, run_id: str, *, pause: bool) -> str | None:
    """Pause or resume the run unless it already is (or is not) paused; None when it was done,
    else why the run could not say its state (the signal is sent then: Temporal keeps it)."""
    signal = dp.client.pause if pause else dp.client.resume
    try:
        was_paused = await dp.client.paused(client, run_id)
    except dp.RunNotFound:
        raise
    except dp.RunError as err:  # no worker answered: send it anyway, it applies later
        await signal(client, run_id)
        return str(err)
    if was_paused and pause:
        raise fail(
            f"run '{run_id}' is already paused; nothing was sent (`durapipe resume {run_id}` "
            "resumes it)",
            code=1,
        )
    if not was_paused and not pause:
        raise fail(f"run '{run_id}' is not paused; nothing to resume", code=1)
    await signal(client, run_id)
    return None


def _say_recorded(run_id: str, why: str, action: str) -> None:
    # Sent, but nothing answered for the run: neither "paused" nor "resumed" would be true yet.
    typer.echo(f"{action} of run {run_id} recorded: it applies when a worker picks the run up")
    typer.echo(f"note: {why}", err=True)


async def _signal_and_check(
    client: Client, run_id: str, signal: Callable[[Client, str], Awaitable[None]]
) -> str | None:
    """Send the cancel, then say why nothing acts on it now, if so (no worker)."""
    await signal(client, run_id)
    return await dp.RunHandle(client, run_id).stalled()


def _note_idle(run_id: str, idle: str | None, action: str, meanwhile: str = "") -> None:
    # Temporal keeps the signal, but with no worker nothing acts on it: say so, not only "done".
    if idle is not None:
        typer.echo(
            f"note: run '{run_id}' cannot make progress now: {idle}; the {action} applies once "
            f"a worker takes the run{meanwhile}",
            err=True,
        )


@app.command()
@handles_errors
@connection_options
def retry(
    run_id: Annotated[str, typer.Argument(help="Id of the failed run.", show_default=False)],
    ui_url: UiUrlOption = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Re-drive a failed run under the same id: succeeded steps come from checkpoints."""
    started: list[str] = []

    async def redriven() -> dp.RunResult:
        client = await connect(connection)
        handle = await dp.client.redrive(client, run_id)
        started.append(run_id)
        where = f" on task queue '{handle.task_queue}'" if handle.task_queue else ""
        typer.echo(f"retrying run {run_id}{where}", err=True)
        link = _progress.ui_line(
            ui_url, client.service_client.config.target_host, client.namespace, run_id
        )
        if link:
            typer.echo(link, err=True)
        return await _progress.follow(handle, quiet=False)

    try:
        result = asyncio.run(redriven())
    except KeyboardInterrupt:
        if started:
            raise stopped_following(run_id) from None
        raise typer.Exit(130) from None
    print_result(result, as_json=False)
    typer.echo(f"run id: {run_id}", err=True)


@app.command()
@handles_errors
@connection_options
def cancel(
    run_id: RunArgument,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Cancel a run: calls in flight are cancelled, steps not run are marked skipped."""
    idle = _with_client(connection, lambda c: _signal_and_check(c, run_id, dp.client.cancel))
    typer.echo(f"cancellation of run {run_id} requested")
    # A worker carries the cancellation out; a run no worker takes ends only when terminated.
    without = f" (`temporal workflow terminate --workflow-id {run_id}` ends it now, without one)"
    _note_idle(run_id, idle, "cancel", without)


@app.command()
@handles_errors
@connection_options
def approve(
    run_id: RunArgument,
    step: StepArgument,
    data: Annotated[
        str | None, typer.Option("--data", help="Edited value as JSON; replaces the one reviewed.")
    ] = None,
    reason: ReasonOption = "",
    reviewer: ReviewerOption = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Approve a step waiting for a decision, optionally with edited data."""
    extra: dict[str, Any] = {}
    if data is not None:
        try:
            extra["data"] = loads(data)
        except json.JSONDecodeError as err:
            # Bare text is the likely mistake: the value a reviewer means is a JSON string.
            hint = (
                ""
                if data.lstrip()[:1] in ('"', "{", "[")
                else f" (text is a JSON string, in quotes: --data '{json.dumps(data)}')"
            )
            raise fail(f"--data is not valid JSON: {err.msg} at position {err.pos}{hint}") from None
    who = reviewer or getpass.getuser()
    _with_client(
        connection,
        lambda c: dp.client.approve(c, run_id, step, reason=reason, reviewer=who, **extra),
    )
    edited = " with edited data" if data is not None else ""
    typer.echo(f"approved step '{step}' of run {run_id}{edited}")


@app.command()
@handles_errors
@connection_options
def reject(
    run_id: RunArgument,
    step: StepArgument,
    reason: ReasonOption = "",
    reviewer: ReviewerOption = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Reject a step waiting for a decision: the run stops as failed (durapipe.Rejected)."""
    who = reviewer or getpass.getuser()
    _with_client(
        connection, lambda c: dp.client.reject(c, run_id, step, reason=reason, reviewer=who)
    )
    typer.echo(f"rejected step '{step}' of run {run_id}")


@app.command()
@handles_errors
@connection_options
def pending(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the waiting steps as a JSON array.")
    ] = False,
    query: Annotated[
        str | None,
        typer.Option("--query", "-q", help="Only runs this visibility query finds."),
    ] = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """List the steps of running runs that wait for a human decision.

    Runs that could not be asked (no worker polls their task queue) are named on stderr, and the
    exit code is 1, since any of them may be waiting too.
    """
    found = _with_client(connection, lambda c: dp.client.pending(c, query=query))
    requests = found.requests
    if as_json:
        typer.echo(json.dumps([r.model_dump(mode="json") for r in requests], indent=2))
    for request in [] if as_json else requests:
        deadline = (
            f", {request.on_timeout} after {dp.spec.format_duration(request.timeout_s)}"
            if request.timeout_s
            else ""
        )
        since = moment(request.waiting_since) if request.waiting_since else "?"
        typer.echo(printable(f"{request.run_id}  {request.path}  waiting since {since}{deadline}"))
        typer.echo(printable(f"  {request.message}"))
        values = printable_json(json.dumps(request.values, ensure_ascii=False))
        typer.echo(printable(f"  values: {values}  (approve continues with '{request.value}')"))
        typer.echo(
            printable(f"  decide: durapipe approve {request.run_id} {request.path}  (or reject)")
        )
    for run_id, why in found.unanswered.items():
        typer.echo(
            printable(f"error: run {run_id} could not say whether it waits: {why}"), err=True
        )
    if found.unanswered:
        raise typer.Exit(1)
    if not requests and not as_json:
        typer.echo("no run is waiting for a decision", err=True)


schedule_app = typer.Typer(
    help="Run pipes on a schedule (Temporal Schedules).", no_args_is_help=True
)
app.add_typer(schedule_app, name="schedule")
ScheduleArgument = Annotated[str, typer.Argument(help="The schedule id.", show_default=False)]


@schedule_app.command("create")
@handles_errors
@connection_options
def schedule_create(
    schedule_id: ScheduleArgument,
    pipe: Annotated[str, typer.Argument(help="The pipe to run.", show_default=False)],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Pipeline file (.yaml or .py) \\[required].",
            show_default=False,
            readable=False,
        ),
    ] = None,
    cron: Annotated[str | None, typer.Option("--cron", help="A cron expression.")] = None,
    every: Annotated[
        str | None,
        typer.Option("--every", help="An interval with its unit: 30s, 10m, 1h (no bare numbers)."),
    ] = None,
    overlap: Annotated[
        str,
        typer.Option(
            "--overlap",
            help="skip, buffer_one, buffer_all, cancel_other, terminate_other or allow_all.",
        ),
    ] = "skip",
    input_json: Annotated[
        str | None, typer.Option("--input-json", help="Inputs as a JSON object.")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="One input as name=value, or name=@file."),
    ] = None,
    budget_usd: Annotated[
        float | None, typer.Option("--budget-usd", help="The budget of each run, in USD.")
    ] = None,
    task_queue: TaskQueueOption = dp.DEFAULT_TASK_QUEUE,
    methods: MethodsOption = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Create a schedule that runs PIPE on a cron expression or an interval."""
    file = required_file(file, "schedule create", pipe, before=f"{schedule_id} ")
    pipeline = dp.load(file, methods=methods_for(file, methods))
    values = parse_inputs(input_json, inputs or [], input_types(pipeline, pipe))

    async def create(client: Client) -> str | None:
        await dp.ops.create_schedule(
            client,
            pipeline,
            pipe,
            values,
            schedule_id=schedule_id,
            cron=cron,
            every=every,
            overlap=overlap,  # type: ignore[arg-type]  # checked by create_schedule
            task_queue=task_queue,
            budget_usd=budget_usd,
        )
        # Its runs would otherwise queue in silence, long after this command has returned.
        try:
            return await dp.client.QueuePollers(client).unpolled(task_queue)
        except RPCError:
            return None  # the server cannot tell: say nothing rather than guess

    idle = _with_client(connection, create)
    typer.echo(
        f"created schedule {schedule_id}: pipe {pipe}, {f'cron {cron}' if cron else f'every {every}'}"
    )
    if idle is not None:
        typer.echo(
            f"note: {idle} now: the schedule's runs wait until one does "
            f"(`durapipe worker {file} -t {task_queue}`)",
            err=True,
        )


@schedule_app.command("list")
@handles_errors
@connection_options
def schedule_list(*, connection: dp.ConnectOptions) -> None:
    """List the schedules of durapipe runs."""
    for summary in _with_client(connection, dp.ops.list_schedules):
        state = "paused" if summary.paused else "active"
        upcoming = moment(summary.next_runs[0]) if summary.next_runs else "-"
        typer.echo(
            f"{summary.schedule_id}  {summary.when}  {state}  pipe {summary.pipe or '-'}  "
            f"next: {upcoming}"
        )
        if summary.note:
            typer.echo(f"  note: {summary.note}")
        if summary.recent_runs:
            typer.echo(f"  recent runs: {', '.join(summary.recent_runs)}")


@schedule_app.command("pause")
@handles_errors
@connection_options
def schedule_pause(
    schedule_id: ScheduleArgument,
    unpause: Annotated[bool, typer.Option("--unpause", help="Unpause instead.")] = False,
    note: Annotated[str, typer.Option("--note", help="Why.")] = "",
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Pause a schedule (or --unpause it); runs already started go on."""
    action = dp.ops.unpause_schedule if unpause else dp.ops.pause_schedule
    _with_client(connection, lambda c: action(c, schedule_id, note=note))
    typer.echo(f"{'unpaused' if unpause else 'paused'} schedule {schedule_id}")


@schedule_app.command("trigger")
@handles_errors
@connection_options
def schedule_trigger(
    schedule_id: ScheduleArgument,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Start a run of a schedule now."""
    _with_client(connection, lambda c: dp.ops.trigger_schedule(c, schedule_id))
    typer.echo(f"triggered schedule {schedule_id}")


@schedule_app.command("delete")
@handles_errors
@connection_options
def schedule_delete(
    schedule_id: ScheduleArgument,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Delete a schedule; runs already started go on."""
    _with_client(connection, lambda c: dp.ops.delete_schedule(c, schedule_id))
    typer.echo(f"deleted schedule {schedule_id}")
