"""Running the protocol server until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web
from temporalio.client import Client
from temporalio.service import RPCError

from durapipe._errors import ConfigError
from durapipe._settings import settings
from durapipe.adapters import DEFAULT_TASK_QUEUE, load
from durapipe.client._connection import ConnectOptions
from durapipe.client._handle import connect
from durapipe.client._stalls import QueuePollers
from durapipe.serve._app import DEFAULT_EXECUTE_WAIT_S, ServeConfig, create_app
from durapipe.serve._loads import DEFAULT_MAX_LOADS
from durapipe.serve._slow import ClientLimits, GuardedSite
from durapipe.serve._trust import Capabilities

TOKEN_ENV = "DURAPIPE_SERVE_TOKEN"


async def serve(
    config: ServeConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8081,
    ready: Callable[[str], None] | None = None,
    client: Client | None = None,
) -> None:
    """Serve the MTHDS protocol on ``host:port`` until SIGINT or SIGTERM.

    Args:
        config: the token, capabilities, Temporal connection and task queue.
        host: the interface to listen on.
        port: the port; 0 picks a free one (the address is passed to ``ready``).
        ready: called with the base URL once the server listens (default: print it to stderr).
        client: the Temporal client runs start through (default: one connected with
            ``config.connection``, without a checkpoint store).

    Raises:
        ConfigError: Temporal cannot be reached, or ``host:port`` cannot be listened on.
    """
    if client is None:
        client = await connect(options=config.connection, checkpoints=None)
    app = create_app(config, client)
    # A handler whose client closed its connection is cancelled: an execute stops waiting for its
    # run (which goes on), instead of waiting out --execute-wait for nobody, out of the caps.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = GuardedSite(runner, host, port, config.limits)
    try:
        await site.start()
    except OSError as err:
        await runner.cleanup()
        raise ConfigError(listen_error(host, port, err)) from None
    bound = runner.addresses[0][1] if runner.addresses else port  # the port 0 picked
    url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"  # IPv6: [::1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    (ready or _announce)(url)
    idle = await _unpolled(client, config.task_queue)
    if idle is not None:  # runs would otherwise queue in silence: say so before a client comes
        print(
            f"note: {idle} now: runs wait until one does "
            f"(`durapipe worker FILE -t {config.task_queue}`)",
            file=sys.stderr,
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def _unpolled(client: Client, task_queue: str) -> str | None:
    """`QueuePollers.unpolled` of the workers' queue; None when the server cannot tell."""
    try:
        return await QueuePollers(client).unpolled(task_queue)
    except RPCError:
        return None  # say nothing rather than guess


def listen_error(host: str, port: int, err: OSError) -> str:
    """One sentence for a server that cannot listen on ``host:port`` (taken, not permitted)."""
    reason = os.strerror(err.errno).lower() if err.errno else str(err)
    return f"cannot listen on {host}:{port}: {reason}; choose another --port"


def _announce(url: str) -> None:
    print(f"durapipe serve: MTHDS protocol on {url}/v1", file=sys.stderr, flush=True)


def serve_config(
    token: str | None = None,
    *,
    file: Path | None = None,
    models: Sequence[str] = (),
    deck_file: Path | None = None,
    connection: ConnectOptions | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
    execute_wait_s: float = DEFAULT_EXECUTE_WAIT_S,
    allow_urls: tuple[str, ...] = (),
    methods: Sequence[Path] | None = None,
    limits: ClientLimits | None = None,
    max_loads: int = DEFAULT_MAX_LOADS,
) -> ServeConfig:
    """The configuration of a server in front of workers started on ``file``.

    Args:
        token: the bearer token clients must send (default ``DURAPIPE_SERVE_TOKEN``).
        file: the file the workers load (.yaml, .py, .mthds): its tools and models are what clients
            may use, and its pipes can be run by name.
        models: more model strings the workers can reach.
        deck_file: the MTHDS model deck (TOML); default ``DURAPIPE_MTHDS_DECK``, else the offline deck.
        connection: how to reach Temporal.
        task_queue: the workers' task queue.
        execute_wait_s: how long ``execute`` waits before answering ``202`` with the run id.
        allow_urls: the URL prefixes whose Document and Image inputs this server may fetch.
        methods: the folders of installed methods MTHDS package addresses resolve from, for
            ``file`` and for the methods clients send (default ``DURAPIPE_MTHDS_METHODS``).
        limits: how long a request may take to arrive and how many connections may be open.
        max_loads: how many methods clients send may load at once (0: no cap).

    Raises:
        ConfigError: no token, a limit below its least, or the file or the deck cannot be read.
        PipelineError: the file has mistakes.
    """
    from durapipe.adapters.mthds import load_deck

    if token is None:
        configured = settings().serve_token
        token = configured.get_secret_value().strip() if configured else ""
    if not token:
        raise ConfigError(
            f"durapipe serve needs a bearer token: set {TOKEN_ENV} or pass --token-file FILE "
            "(clients send it as 'Authorization: Bearer <token>')"
        )

    limits = limits or ClientLimits()
    if faults := limits.problems():
        raise ConfigError(f"durapipe serve: {faults[0]}")
    if max_loads < 0:
        raise ConfigError(
            f"durapipe serve: --max-loads must be 0 (no cap) or more, not {max_loads}"
        )
    stores = None if methods is None else tuple(methods)
    pipeline = load(file, methods=stores) if file is not None else None
    deck = load_deck(deck_file)
    return ServeConfig(
        token=token,
        capabilities=Capabilities.of(pipeline, models, deck),
        pipeline=pipeline,
        connection=connection or ConnectOptions(),
        task_queue=task_queue,
        deck=deck,
        execute_wait_s=execute_wait_s,
        allow_urls=allow_urls,
        methods=stores,
        limits=limits,
        max_loads=max_loads,
    )
