"""`durapipe worker`'s serving: the worker's own limits, its workers until a signal, a server
that goes away said in one line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import typer

import durapipe as dp
from durapipe.cli._connection import connect
from durapipe.cli._waiting import OutageFilter, ServerWatch
from durapipe.worker import check_worker, unkeyed_providers


def with_limits_of(pipeline: dp.Pipeline, path: Path) -> dp.Pipeline:
    """``pipeline`` with the limits of the file at ``path`` first (a name both have is the file's).

    Raises:
        PipelineError: the file does not load.
        ConfigError: it has no limits.
    """
    for wrong, why in (
        (path.is_dir(), "it is a folder"),
        (not path.exists(), "no such file"),
        (not os.access(path, os.R_OK), "it cannot be read (permission denied)"),
    ):
        if wrong:
            raise dp.ConfigError(
                f"--limits {path}: {why}; give a YAML file whose `limits:` the worker holds "
                "for every call"
            )
    extra = dp.load(path).limits
    if not extra:
        raise dp.ConfigError(f"--limits {path}: no limits in it (write them under `limits:`)")
    names = {rule.bucket for rule in extra}
    kept = [rule for rule in pipeline.limits if rule.bucket not in names]
    return pipeline.model_copy(update={"limits": [*extra, *kept]})


WORKER_MEANWHILE = "the worker keeps reconnecting (runs wait on the server meanwhile)"


async def serve_worker(
    pipeline: dp.Pipeline,
    connection: dp.ConnectOptions,
    queues: list[str],
    max_concurrent: int | None,
    rate: float | None,
    telemetry: dp.Telemetry,
) -> None:
    client = await connect(connection, pipeline=pipeline, telemetry=telemetry)
    await dp.ops.check_search_attributes(client)
    plugin = check_worker(client, max_concurrent_activities=max_concurrent, rate=rate)
    if "litellm" not in sys.modules:  # its import takes seconds (tens on a busy host): say so
        typer.echo(
            "worker starting: loading the model library (litellm), a few seconds ...", err=True
        )
    await dp.ops.warm_up()
    for line in key_warnings(pipeline, queues):  # litellm, imported by now, knows the variables
        typer.echo(line, err=True)
    workers = dp.build_workers(client, queues, max_concurrent_activities=max_concurrent, rate=rate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as running:
        for built in workers:
            await running.enter_async_context(built)
        dp.ops.freeze_startup_objects()  # what the worker built lives as long as it does
        target = client.service_client.config.target_host
        names = ", ".join(f"'{q}'" for q in dict.fromkeys(queues))
        typer.echo(
            f"worker ready: task queue {names} on {target} (namespace {client.namespace}); "
            f"pipes: {', '.join(pipeline.pipes)}",
            err=True,
        )
        typer.echo(plugin.models().describe(), err=True)
        if telemetry.metrics_address:
            typer.echo(f"metrics: http://{telemetry.metrics_address}/metrics", err=True)
        # A server that goes away is said in one line, not in the SDK core's retry lines.
        core = logging.getLogger("temporalio.core")
        outage = OutageFilter(ServerWatch(client, meanwhile=WORKER_MEANWHILE), loop)
        core.addFilter(outage)
        try:
            await stop.wait()
        finally:
            core.removeFilter(outage)
            outage.close()
        typer.echo("worker stopping: finishing in-flight work", err=True)
    telemetry.shutdown()


def key_warnings(pipeline: dp.Pipeline, queues: list[str]) -> list[str]:
    """One line per provider the worker's pipes call without its key in the environment (the
    secrets file is loaded by then): a warning, not an error, since another worker may hold it."""
    lines = []
    for provider, (variables, pipes) in unkeyed_providers(pipeline, queues).items():
        named = ", ".join(f"'{pipe}'" for pipe in pipes)
        lines.append(
            f"warning: provider '{provider}' has no key in this worker's environment (litellm "
            f"looks for {', '.join(variables)}): "
            f"{f'pipe {named} fails' if len(pipes) == 1 else f'pipes {named} fail'} here with "
            "durapipe.AuthenticationError until it is set (in the "
            "environment or --secrets-file), unless a worker that has it takes them"
        )
    return lines
