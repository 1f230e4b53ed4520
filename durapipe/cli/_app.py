"""The ``durapipe`` command line (Typer). It only calls durapipe's public API.

Expected errors go to stderr as one sentence per problem with a non-zero exit: 2 for a mistake in
what was asked (a pipeline file, an input, a setting), 1 for a run that did not succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from temporalio.service import RPCError

import durapipe as dp
from durapipe._words import counted
from durapipe.cli import _progress
from durapipe.cli._connection import connect, connection_options
from durapipe.cli._inputs import input_types, parse_inputs
from durapipe.cli._interrupt import interruptible
from durapipe.cli._methods import MethodsOption, methods_for
from durapipe.cli._printable import printable, printable_json
from durapipe.cli._waiting import wait_for
from durapipe.cli._worker import serve_worker, with_limits_of

app = typer.Typer(
    name="durapipe",
    help="Durable AI pipelines on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"durapipe {version('durapipe')}")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Durable AI pipelines on Temporal."""


TaskQueueOption = Annotated[
    str,
    typer.Option(
        "--task-queue", "-t", envvar="DURAPIPE_TASK_QUEUE", help="Task queue of the workers."
    ),
]
UiUrlOption = Annotated[
    str | None,
    typer.Option(
        "--ui-url",
        envvar="DURAPIPE_UI_URL",
        help="Temporal Web UI address \\[default: a local dev server's own].",
    ),
]
FileArgument = Annotated[
    Path,
    typer.Argument(
        help="Pipeline file (.yaml, .py or .mthds, or an MTHDS package folder).",
        show_default=False,
        readable=False,  # durapipe says why it cannot read it, in its own sentence
    ),
]


# Set by `run` for an MTHDS bundle: its errors are the MTHDS CLI contract's JSON object on stderr.
_MTHDS_ERRORS: contextvars.ContextVar[bool] = contextvars.ContextVar("mthds_errors", default=False)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the Exit to raise."""
    if _MTHDS_ERRORS.get():
        from durapipe.cli._mthds import error_json

        typer.echo(error_json(message, code), err=True)
    else:
        typer.echo(f"error: {printable(message)}", err=True)
    return typer.Exit(code)


def handles_errors(command: F) -> F:
    """Turn durapipe's expected errors into one clear message and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _MTHDS_ERRORS.set(False)
        try:
            return command(*args, **kwargs)
        except dp.PipelineError as err:
            count = len(err.problems)
            lines = "\n".join(f"  - {problem}" for problem in err.problems)
            header = (
                "the pipeline has a problem" if count == 1 else f"the pipeline has {count} problems"
            )
            raise fail(f"{header}; nothing was started:\n{lines}") from None
        except dp.StepFailed as err:
            run = f"run '{err.run_id}': " if err.run_id else ""
            raise fail(f"{run}{err}", code=1) from None
        except dp.client.RunExists as err:
            raise fail(str(err)) from None  # a mistake in what was asked: nothing was started
        except dp.RunError as err:
            raise fail(str(err), code=1) from None
        except dp.ops.ScheduleNotFound as err:  # as a run id that names no run (RunNotFound)
            raise fail(str(err), code=1) from None
        except dp.DurapipeError as err:
            raise fail(str(err)) from None
        except RPCError as err:
            # A refusal durapipe did not foresee still gets one sentence, not the SDK's traceback.
            raise fail(f"Temporal refused the request: {err.message}", code=1) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        finally:
            _MTHDS_ERRORS.reset(token)

    return wrapper  # type: ignore[return-value]


@app.command()
@handles_errors
def validate(file: FileArgument, methods: MethodsOption = None) -> None:
    """Check a pipeline file and report every problem, without running anything.

    A YAML file or an MTHDS bundle is checked without importing anything (tool modules and PipeFunc
    functions included); a Python pipeline file is code, so checking it imports it.
    """
    stores = methods_for(file, methods)
    pipeline = dp.load(file, import_tools=False, methods=stores)
    if file.suffix == ".mthds" or file.is_dir():
        from durapipe.adapters.mthds import load_method

        for note in load_method(file, import_functions=False, methods=stores).notes:
            typer.echo(f"note: {note}", err=True)
    if not pipeline.pipes:
        if not pipeline.limits:
            raise fail(
                f"pipeline file '{file}' defines no pipes: write them under `pipes:` (see the "
                "README's Pipes section)"
            )
        typer.echo(
            f"{file}: ok, no pipes, {counted(len(pipeline.limits), 'limit')} (a worker's --limits file)"
        )
        return
    typer.echo(f"{file}: ok, {counted(len(pipeline.pipes), 'pipe')}")
    for name, pipe in pipeline.pipes.items():
        inputs = ", ".join(f"{k}: {v}" for k, v in pipe.inputs.items())
        typer.echo(
            f"  {name} ({pipe.kind}) ({inputs})  {pipe.description.splitlines()[0] if pipe.description else ''}".rstrip()
        )


@app.command()
@handles_errors
@connection_options
def run(
    pipe: Annotated[str, typer.Argument(help="Name of the pipe to run.", show_default=False)],
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Pipeline file (.yaml, .py or .mthds, or an MTHDS package folder) \\[required].",
            show_default=False,
            readable=False,
        ),
    ] = None,
    input_json: Annotated[
        str | None, typer.Option("--input-json", help="Inputs as a JSON object.")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="One input as name=value, or name=@file (document/image inputs are uploaded).",
        ),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option("--id", help="Run id (the workflow id) \\[default: new].")
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Run in this process, without Temporal.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the run's output, as JSON.")
    ] = False,
    budget_usd: Annotated[
        float | None,
        typer.Option("--budget-usd", help="Stop before a paid call could exceed this spend (USD)."),
    ] = None,
    approve_all: Annotated[
        bool,
        typer.Option("--approve-all", help="With --local: approve every approval step as is."),
    ] = False,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach", help="Start the run and print its id without waiting for it to finish."
        ),
    ] = False,
    searchable_totals: Annotated[
        bool | None,
        typer.Option(
            "--searchable-totals/--no-searchable-totals",
            help="Keep the run's totals as search attributes (one history event, a billed action "
            "on Temporal Cloud) \\[default: env DURAPIPE_SEARCHABLE_TOTALS, else on].",
            show_default=False,
        ),
    ] = None,
    task_queue: TaskQueueOption = dp.DEFAULT_TASK_QUEUE,
    ui_url: UiUrlOption = None,
    mthds_inputs: Annotated[
        str | None,
        typer.Option(
            "--inputs",
            help="MTHDS bundles: inputs in MTHDS's format, inline JSON or a JSON file "
            "(default: stdin when piped).",
        ),
    ] = None,
    with_memory: Annotated[
        bool,
        typer.Option("--with-memory", help="MTHDS bundles: print the working memory too."),
    ] = False,
    methods: MethodsOption = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Run a pipe on Temporal (or in this process with --local) and print its output.

    Only the output goes to stdout (JSON); steps, totals, the run id and its UI link go to stderr.
    For an MTHDS bundle or package (.mthds, a folder with METHODS.toml) the output follows the MTHDS
    CLI contract: the output concept as compact JSON, or the working memory with --with-memory.
    """
    # Imported here: the MTHDS adapter's models cost ~0.1 s to build, and the CLI must start fast.
    from durapipe.adapters.mthds import is_mthds_path, load_method, memory_pipeline
    from durapipe.cli import _mthds

    file = required_file(file, "run", pipe)
    method = None
    memory_main: str | None = None
    memory_concepts: dict[str, str] = {}
    stores = methods_for(file, methods)
    if is_mthds_path(file):
        _MTHDS_ERRORS.set(True)
        # Also checks that every PipeFunc function imports.
        method = load_method(file, methods=stores)
        pipeline = method.pipeline
        pipe = _mthds.pipe_name(method, pipe)
        folder = file if file.is_dir() else None
        values = _mthds.read_inputs(method, pipe, mthds_inputs, folder=folder) or {}
        if with_memory:
            # The sequence returns every step result, so the working memory can show them.
            pipeline, memory_main, memory_concepts = memory_pipeline(method, pipe)
        values.update(parse_inputs(input_json, inputs or []))
        as_json = True
    else:
        if mthds_inputs is not None or with_memory:
            raise fail("--inputs and --with-memory apply to MTHDS bundles (.mthds) only")
        pipeline = dp.load(file)
        values = parse_inputs(input_json, inputs or [], input_types(pipeline, pipe))

    def emit(result: dp.RunResult) -> None:
        if method is None:
            print_result(result, as_json=as_json)
            return
        _mthds.print_output(
            method,
            pipe,
            result.output,
            values,
            with_memory=with_memory,
            main=memory_main,
            concepts=memory_concepts,
        )
        _print_totals(result.usage)  # stderr: the contract's stdout stays the output alone

    if budget_usd is not None and budget_usd <= 0:
        raise fail(f"--budget-usd must be positive, got {budget_usd}")
    if approve_all and not local:
        raise fail("--approve-all only applies with --local; on Temporal use `durapipe approve`")
    if detach and local:
        raise fail("--detach only applies on Temporal; a --local run lives in this process")
    if run_id is not None and local:
        # Refused rather than honoured: in-process the id names nothing a user can find again
        # (no history, no `show` or `result` of it).
        raise fail(
            f"--id only applies on Temporal; a --local run keeps no history to find as '{run_id}' "
            "(run it without --local to name it, or without --id)"
        )
    if searchable_totals is not None and local:
        raise fail(
            "--[no-]searchable-totals only applies on Temporal; a --local run has no search attributes"
        )
    if local:
        # The steps that ended, and those Ctrl-C stopped after they paid: what the run spent.
        ended: dict[str, dp.StepRecord] = {}

        def on_step(record: dp.StepRecord) -> None:
            ended[record.path] = record
            _progress.print_step(record)

        try:
            result = asyncio.run(
                interruptible(
                    dp.run_local(
                        pipeline,
                        pipe,
                        values,
                        budget_usd=budget_usd,
                        approve_all=approve_all,
                        on_step=on_step,
                        on_notice=_progress.print_notice,
                    )
                )
            )
        except KeyboardInterrupt:
            from durapipe.runtime._calls import spent_by  # the run imported it already

            spent = spent_by(ended.values())
            typer.echo(
                f"stopped by Ctrl-C; what its calls had spent (those in flight included): "
                f"tokens: {spent.input_tokens} in / {spent.output_tokens} out, "
                f"cost: ${spent.cost_usd:.6f}",
                err=True,
            )
            raise typer.Exit(130) from None
        emit(result)
        return
    started: dict[str, str] = {}
    try:
        asyncio.run(
            _run_on_temporal(
                pipeline,
                pipe,
                values,
                run_id,
                connection,
                task_queue,
                started=started,
                detach=detach,
                as_json=as_json,
                ui_url=ui_url,
                budget_usd=budget_usd,
                searchable_totals=searchable_totals,
                emit=emit,
            )
        )
    except KeyboardInterrupt:
        if "run_id" in started:
            raise stopped_following(started["run_id"]) from None
        raise typer.Exit(130) from None


async def _run_on_temporal(
    pipeline: dp.Pipeline,
    pipe: str,
    values: dict[str, Any],
    run_id: str | None,
    connection: dp.ConnectOptions,
    task_queue: str,
    *,
    started: dict[str, str],
    detach: bool,
    as_json: bool,
    ui_url: str | None,
    budget_usd: float | None = None,
    searchable_totals: bool | None = None,
    emit: Callable[[dp.RunResult], None] | None = None,
) -> None:
    # With OTEL_TRACES_EXPORTER set, the start is the root span of the run's one trace.
    telemetry = dp.Telemetry.from_env()
    try:
        client = await connect(connection, telemetry=telemetry)
        handle = await dp.start(
            client,
            pipeline,
            pipe,
            values,
            run_id=run_id,
            task_queue=task_queue,
            budget_usd=budget_usd,
            searchable_totals=searchable_totals,
        )
    finally:
        telemetry.shutdown()  # export the start span now: this process exits without teardown
    started["run_id"] = handle.run_id
    link = _progress.ui_line(
        ui_url, client.service_client.config.target_host, client.namespace, handle.run_id
    )
    if detach:
        if as_json:
            typer.echo(json.dumps({"run_id": handle.run_id, "task_queue": task_queue}))
        else:
            typer.echo(handle.run_id)
        if link:
            typer.echo(link, err=True)
        why = await handle.stalled()
        if why:
            typer.echo(f"warning: run {handle.run_id} cannot make progress yet: {why}", err=True)
        return
    typer.echo(f"started run {handle.run_id} on task queue '{task_queue}'", err=True)
    if link:
        typer.echo(link, err=True)
    result = await _progress.follow(handle)
    if emit is None:
        print_result(result, as_json=as_json)
    else:
        emit(result)
    typer.echo(f"run id: {handle.run_id}", err=True)


def required_file(file: Path | None, command: str, pipe: str, before: str = "") -> Path:
    """``--file``, which ``command`` needs: missing, one sentence saying how to give it (Typer's
    usage box said only "Missing option"; a pipeline file given in the pipe's place is said).
    ``before`` is what the command takes before the pipe (a schedule's id and a space)."""
    if file is not None:
        return file
    if Path(pipe).suffix in (".yaml", ".yml", ".py", ".mthds") or Path(pipe).exists():
        raise fail(
            f"--file is missing: '{pipe}' looks like a pipeline file, and `{command}` takes the "
            f"pipe's name first: `durapipe {command} {before}PIPE --file {pipe}` (`durapipe validate "
            f"{pipe}` lists its pipes)"
        )
    raise fail(
        f"--file is missing: give the pipeline file that defines pipe '{pipe}' "
        f"(`durapipe {command} {before}{pipe} --file FILE`)"
    )


def stopped_following(run_id: str) -> typer.Exit:
    """Ctrl-C stops the waiting, not the run: say how to get back to it or stop it."""
    typer.echo(
        f"stopped following run {run_id}; it goes on: `durapipe result {run_id}` waits for "
        f"it, `durapipe cancel {run_id}` stops it",
        err=True,
    )
    return typer.Exit(130)


@app.command()
@handles_errors
@connection_options
def result(
    run_id: Annotated[str, typer.Argument(help="Run id (the workflow id).", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only the run's output, as JSON.")
    ] = False,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Print the output of a run on Temporal, waiting for it to finish if it has not."""
    try:
        output = asyncio.run(_result(run_id, connection))
    except KeyboardInterrupt:
        typer.echo(
            f"stopped waiting for run {run_id}; it goes on: `durapipe result {run_id}` waits for "
            f"it again, `durapipe cancel {run_id}` stops it",
            err=True,
        )
        raise typer.Exit(130) from None
    print_result(output, as_json=as_json)


async def _result(run_id: str, connection: dp.ConnectOptions) -> dp.RunResult:
    client = await connect(connection)
    handle = dp.RunHandle(client, run_id)
    since = time.monotonic()
    looked = 0.0
    waits: set[str] = set()

    async def say_what_it_waits_for() -> None:
        # A run that has not ended within a second gets one line, so a wait is not mistaken
        # for a hang; then, looked at each second, each step that waits for a human (or a
        # resume) says so with the command that ends the wait, as `run` does.
        nonlocal looked
        now = time.monotonic()
        if now - since < RESULT_QUIET_S or now - looked < RESULT_QUIET_S:
            return
        if not looked:
            typer.echo(
                f"waiting for run {run_id} to end (Ctrl-C stops the waiting, not the run)",
                err=True,
            )
        looked = now
        with contextlib.suppress(Exception):  # a query can race the run's end; the end says it all
            for line in _progress.new_wait_lines(await handle.steps(), waits, run_id):
                typer.echo(line, err=True)

    return await wait_for(handle, say_what_it_waits_for)


RESULT_QUIET_S = 1.0  # how long `result` waits for a run before it says that it waits


def print_result(result: dp.RunResult, *, as_json: bool) -> None:
    """The output alone on stdout (compact with --json); the totals on stderr."""
    output = json.dumps(result.output, ensure_ascii=False, indent=None if as_json else 2)
    typer.echo(printable_json(output))
    _print_totals(result.usage)


def _print_totals(usage: dp.Usage) -> None:
    typer.echo(
        f"tokens: {usage.input_tokens} in / {usage.output_tokens} out, cost: ${usage.cost_usd:.6f}",
        err=True,
    )


@app.command()
@handles_errors
@connection_options
def worker(
    file: FileArgument,
    task_queue: TaskQueueOption = dp.DEFAULT_TASK_QUEUE,
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            help="A task queue to serve (repeatable) \\[default: --task-queue]; queues that "
            "routing rules send leaves to get activities only.",
        ),
    ] = None,
    max_concurrent: Annotated[
        int | None,
        typer.Option(
            "--max-concurrent", help="Most activities this worker runs at once, per queue."
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            "--rate",
            help="Most activities per second per queue, enforced by the server across all workers.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve Prometheus metrics on HOST:PORT/metrics.",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            "--metrics-host",
            envvar="DURAPIPE_METRICS_HOST",
            help="Address the metrics endpoint binds (0.0.0.0 in a container, for scrapers).",
        ),
    ] = "127.0.0.1",
    secrets_file: Annotated[
        Path | None,
        typer.Option(
            "--secrets-file",
            envvar="DURAPIPE_SECRETS_FILE",
            help="KEY=VALUE file of provider credentials, loaded into this worker's environment.",
            readable=False,
        ),
    ] = None,
    limits_file: Annotated[
        Path | None,
        typer.Option(
            "--limits",
            help="A YAML file whose limits: hold for every call this worker runs, beside FILE's "
            "own (an MTHDS bundle has none); a limit of the same name is this file's.",
            readable=False,
        ),
    ] = None,
    methods: MethodsOption = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Run a worker for the pipes in FILE until interrupted (SIGINT or SIGTERM).

    Traces go where the OTEL_TRACES_EXPORTER variable says (console, otlp; none by default).
    """
    if secrets_file is not None:
        names = dp.security.load_secrets_file(secrets_file)
        # Names only: the values are the point of keeping the file out of logs.
        loaded = counted(len(names), "secret")
        typer.echo(f"loaded {loaded} from {secrets_file}: {', '.join(names)}", err=True)
    pipeline = dp.load(file, methods=methods_for(file, methods))
    if limits_file is not None:
        pipeline = with_limits_of(pipeline, limits_file)
    served = queues or [task_queue]
    telemetry = dp.Telemetry.from_env(metrics_port, metrics_host)
    asyncio.run(serve_worker(pipeline, connection, served, max_concurrent, rate, telemetry))


@app.command()
@handles_errors
def dev(
    port: Annotated[int, typer.Option("--port", help="gRPC port of the server.")] = 7233,
    ui_port: Annotated[
        int | None, typer.Option("--ui-port", help="Web UI port \\[default: port + 1000].")
    ] = None,
    db_file: Annotated[
        str | None,
        typer.Option(
            "--db-file", help="SQLite file that keeps runs across restarts \\[default: memory]."
        ),
    ] = None,
    headless: Annotated[bool, typer.Option("--headless", help="Run without the Web UI.")] = False,
    ip: Annotated[str, typer.Option("--ip", help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Start a local Temporal dev server (the real one) and keep it running until interrupted."""
    server = dp.ops.DevServer(
        port=port, ui_port=ui_port or port + 1000, db_file=db_file, headless=headless, ip=ip
    )
    server.start()
    typer.echo(f"Temporal dev server: {server.address}", err=True)
    if server.ui_url:
        typer.echo(f"Temporal UI: {server.ui_url}", err=True)
    typer.echo("press Ctrl-C to stop", err=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        typer.echo("stopping the dev server", err=True)
    finally:
        server.stop()


@app.command()
@handles_errors
def demo(
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Leave the server and UI running afterwards."),
    ] = False,
    file: Annotated[
        Path, typer.Option("--file", help="Pipeline file of the demo.", readable=False)
    ] = Path("examples/brief.yaml"),
) -> None:
    """Start a dev server and a worker, run the example pipeline, print the result and stop."""
    from durapipe.cli._demo import run_demo

    if file == Path("examples/brief.yaml") and not file.exists():
        # The example is in the repository, not in the installed package.
        raise fail(
            f"pipeline file '{file}' does not exist: the demo runs the example of durapipe's "
            "repository; run it in the clone's folder (as `make demo` does), or name a pipeline "
            "file with --file"
        )
    run_demo(file, keep=keep)


# Commands that start servers or workers clean up on exit; the others are short client processes.


def main() -> None:
    """Entry point of the ``durapipe`` command (``durapipe_entry.main`` loads it)."""
    try:
        # While the CLI loaded, Ctrl-C ended the process at once; from here it raises
        # KeyboardInterrupt again, which each command turns into its own message.
        if signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
            signal.signal(signal.SIGINT, signal.default_int_handler)
        app(prog_name="durapipe")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except KeyboardInterrupt:  # before a command's own handling (typer still building it)
        code = 130
    else:
        code = 0
    # Leave without interpreter teardown: the Temporal client's native threads can abort a
    # finalizing interpreter (temporalio/sdk-python#300), turning a finished command into SIGABRT.
    # atexit handlers do not run after this, so log handlers are flushed here.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
