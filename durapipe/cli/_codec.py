"""``durapipe codec-server`` and ``durapipe codec-key``: the operator's side of payload encryption."""

from __future__ import annotations

import os
from typing import Annotated

import typer

import durapipe as dp
from durapipe.cli._app import app, fail, handles_errors


@app.command("codec-key")
def codec_key(
    key_id: Annotated[str, typer.Argument(help="The id of the new key, e.g. 2025-06.")],
) -> None:
    """Print a new encryption key entry (id:base64key) for DURAPIPE_ENCRYPTION_KEYS."""
    typer.echo(f"{key_id}:{dp.security.new_encryption_key()}")


@app.command("codec-server")
@handles_errors
def codec_server(
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="DURAPIPE_CODEC_TOKEN",
            help="Bearer token every request must carry (required; prefer the environment).",
            show_default=False,
        ),
    ] = None,
    cors_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            envvar="DURAPIPE_CODEC_CORS_ORIGINS",
            help="Browser origin allowed to call the server, e.g. the Temporal UI's (repeatable).",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8081,
) -> None:
    """Serve /encode and /decode for the Temporal UI and CLI (--codec-endpoint), behind a token.

    Keys come from DURAPIPE_ENCRYPTION_KEYS or DURAPIPE_ENCRYPTION_KEYS_FILE, as for workers.
    """
    from aiohttp import web

    if not token:
        raise fail("a codec server needs a bearer token: set DURAPIPE_CODEC_TOKEN or --token")
    codec = dp.security.encryption_from_env()
    if not codec.key_ids:
        raise fail(
            "no encryption keys: set DURAPIPE_ENCRYPTION_KEYS or DURAPIPE_ENCRYPTION_KEYS_FILE"
        )
    origins = [o for value in cors_origins or [] for o in value.split(",") if o]
    application = dp.ops.codec_app(codec, token=token, cors_origins=origins)
    announce = (
        f"codec server on http://{host}:{port} (keys: {', '.join(codec.key_ids)}; "
        f"CORS: {', '.join(origins) or 'none'})"
    )
    try:  # announced once it listens
        web.run_app(
            application, host=host, port=port, print=lambda _: typer.echo(announce, err=True)
        )
    except OSError as err:
        reason = os.strerror(err.errno).lower() if err.errno else str(err)
        raise fail(f"cannot listen on {host}:{port}: {reason}; choose another --port") from None
