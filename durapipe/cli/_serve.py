"""`durapipe serve`: the MTHDS protocol over HTTP, backed by runs on Temporal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

import durapipe as dp
from durapipe.cli._app import TaskQueueOption, app, fail, handles_errors
from durapipe.cli._connection import connect, connection_options
from durapipe.cli._methods import MethodsOption, check_methods_folder

TOKEN_ENV = "DURAPIPE_SERVE_TOKEN"


def _token(token_file: Path | None) -> str | None:
    """The token in ``token_file``; None: `serve_config` takes the settings' (or refuses)."""
    if token_file is None:
        return None
    try:
        return token_file.read_text(encoding="utf-8").strip()
    except OSError as err:
        raise fail(f"--token-file: cannot read '{token_file}': {err.strerror}") from None


@app.command()
@handles_errors
@connection_options
def serve(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="The file the workers load (.yaml, .py or .mthds): its tool functions and models "
            "are what clients may use, and its pipes can be run by name.",
            show_default=False,
            readable=False,  # durapipe says why it cannot read it, in its own sentence
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: a free one).")] = 8081,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help=f"File holding the bearer token (else the {TOKEN_ENV} variable).",
            readable=False,
        ),
    ] = None,
    models: Annotated[
        list[str] | None,
        typer.Option("--model", help="A model string the workers can reach (repeatable)."),
    ] = None,
    deck: Annotated[
        Path | None,
        typer.Option(
            "--deck",
            envvar="DURAPIPE_MTHDS_DECK",
            help="The MTHDS model deck (TOML) bundles' model references resolve through.",
            readable=False,
        ),
    ] = None,
    execute_wait: Annotated[
        float,
        typer.Option(
            "--execute-wait",
            help="Seconds execute waits for its run before answering 202 with the run id.",
        ),
    ] = 600.0,
    allow_urls: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-url",
            help="A URL prefix (https://files.example.com/) whose Document and Image inputs this "
            "server may fetch (repeatable; default: none, clients send data: URLs).",
        ),
    ] = None,
    head_timeout: Annotated[
        float,
        typer.Option(
            "--head-timeout",
            help="Seconds a connection has to send its request line and headers (then 408).",
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            help="Seconds a request body may take, plus 1 s per --body-min-rate bytes received "
            "(then 408).",
        ),
    ] = 10.0,
    body_min_rate: Annotated[
        int,
        typer.Option("--body-min-rate", help="The slowest upload, in bytes per second, never cut."),
    ] = 32 * 1024,
    max_connections: Annotated[
        int,
        typer.Option("--max-connections", help="Open connections at most (then 503)."),
    ] = 256,
    max_connections_per_peer: Annotated[
        int,
        typer.Option(
            "--max-connections-per-peer",
            help="Open connections from one address at most (then 503; 0: no cap; raise it "
            "behind a reverse proxy).",
        ),
    ] = 64,
    max_executes: Annotated[
        int,
        typer.Option(
            "--max-executes",
            help="execute requests waiting for their runs at most (then 503, nothing started); "
            "they count apart from the connection caps.",
        ),
    ] = 128,
    max_executes_per_peer: Annotated[
        int,
        typer.Option(
            "--max-executes-per-peer",
            help="execute requests from one address waiting for their runs at most (then 503, "
            "nothing started; 0: no cap; raise it behind a reverse proxy).",
        ),
    ] = 32,
    max_loads: Annotated[
        int,
        typer.Option(
            "--max-loads",
            help="Methods clients send that load at once at most (then 503, nothing read or "
            "started; 0: no cap): each load holds Python's GIL while it runs.",
        ),
    ] = 2,
    task_queue: TaskQueueOption = dp.DEFAULT_TASK_QUEUE,
    methods: MethodsOption = None,
    *,
    connection: dp.ConnectOptions,
) -> None:
    """Serve the MTHDS protocol (execute, start, validate, models, version, run lifecycle) on HTTP.

    Each run is a durapipe run on Temporal; start workers for it with `durapipe worker FILE`.
    """
    # Imported here: the CLI starts fast, and only this command needs the server.
    from durapipe.serve import ClientLimits, serve_config
    from durapipe.serve import serve as serve_forever

    for folder in methods or ():  # they serve every method a client sends, with no file here
        check_methods_folder(folder)
    config = serve_config(
        _token(token_file),
        file=file,
        models=models or (),
        deck_file=deck,
        connection=connection,
        task_queue=task_queue,
        execute_wait_s=execute_wait,
        allow_urls=tuple(allow_urls or ()),
        methods=methods or None,
        limits=ClientLimits(
            head_timeout_s=head_timeout,
            body_timeout_s=body_timeout,
            body_min_rate=body_min_rate,
            max_connections=max_connections,
            max_connections_per_peer=max_connections_per_peer,
            max_executes=max_executes,
            max_executes_per_peer=max_executes_per_peer,
        ),
        max_loads=max_loads,
    )

    async def connected_serve() -> None:
        # Connected here: a connect left unanswered is said after 3 s, as by every command.
        client = await connect(config.connection, checkpoints=None)
        await serve_forever(config, host=host, port=port, client=client)

    asyncio.run(connected_serve())
