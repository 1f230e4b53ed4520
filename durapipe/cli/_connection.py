"""One set of connection options shared by every command that talks to Temporal.

The flags are named as the temporal CLI names them; their environment variables and the
``temporal.toml`` profile are read by `durapipe.ConnectOptions` (through the SDK's envconfig), so a
shell set up for ``temporal`` works for ``durapipe`` unchanged.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer
from temporalio.client import Client

import durapipe as dp

F = TypeVar("F", bound=Any)
_PANEL = "Connection (also TEMPORAL_* environment variables and temporal.toml profiles)"


def _option(name: str, annotation: Any, flag: str, help_text: str, default: Any = None) -> Any:
    # "--namespace|-n": the temporal CLI's short flag too.
    flags = flag.split("|")
    # readable=False (Typer reads it for the Path flags only): a file durapipe cannot read is
    # its own one sentence (`ConnectOptions`), not Typer's usage box.
    option = typer.Option(*flags, help=help_text, rich_help_panel=_PANEL, readable=False)
    return inspect.Parameter(
        name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, option],
    )


CONNECTION_PARAMETERS = [
    _option("address", str | None, "--address", "Temporal frontend host:port (env TEMPORAL_ADDRESS; default localhost:7233)."),
    _option("namespace", str | None, "--namespace|-n", "Temporal namespace (env TEMPORAL_NAMESPACE; default default)."),
    _option("api_key", str | None, "--api-key", "API key, e.g. for Temporal Cloud; implies TLS (env TEMPORAL_API_KEY)."),
    _option("tls", bool | None, "--tls/--no-tls", "Force TLS on or off (env TEMPORAL_TLS)."),
    _option("tls_cert", Path | None, "--tls-cert-path", "Client certificate (PEM) for mTLS (env TEMPORAL_TLS_CLIENT_CERT_PATH)."),
    _option("tls_key", Path | None, "--tls-key-path", "Client private key (PEM) for mTLS (env TEMPORAL_TLS_CLIENT_KEY_PATH)."),
    _option("tls_ca", Path | None, "--tls-ca-path", "CA of the server's certificate (PEM) (env TEMPORAL_TLS_SERVER_CA_CERT_PATH)."),
    _option("tls_server_name", str | None, "--tls-server-name", "Server name to verify (SNI) (env TEMPORAL_TLS_SERVER_NAME)."),
    _option("profile", str | None, "--profile", "Profile of the temporal.toml file (env TEMPORAL_PROFILE)."),
    _option("config_file", Path | None, "--config-file", "The temporal.toml file (env TEMPORAL_CONFIG_FILE)."),
    _option("grpc_compression", str | None, "--grpc-compression", "gzip (default) or none: none saves a worker ~10% CPU near its cluster (env DURAPIPE_GRPC_COMPRESSION)."),
]  # fmt: skip
_NAMES = [p.name for p in CONNECTION_PARAMETERS]


def connection_options(command: F) -> F:
    """Give ``command`` the shared connection flags; it receives them as ``connection``."""
    # Evaluated: Typer reads a __signature__ as it is, and this module's callers postpone annotations.
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "connection"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name, None) for name in _NAMES}
        return command(*args, connection=dp.ConnectOptions(**values), **kwargs)

    shown = signature.replace(parameters=[*own, *CONNECTION_PARAMETERS])
    cast(Any, wrapper).__signature__ = shown
    wrapper.__annotations__ = {p.name: p.annotation for p in shown.parameters.values()}
    return cast(F, wrapper)


# How long a connect may go unanswered before the command says what it waits for. A server that
# is there answers within milliseconds; a listener that took the connection and never answers
# (a hung server, a firewall that holds the connection) keeps the SDK waiting ~30 s before it
# gives up, and that wait must not be silent.
CONNECT_NOTE_S = 3.0


async def connect(connection: dp.ConnectOptions, **kwargs: Any) -> Client:
    """`durapipe.connect` with ``connection``, saying on stderr once, after `CONNECT_NOTE_S`,
    that the server has not answered yet (the failure, if it comes, is still one sentence).

    Raises:
        ConfigError: as `durapipe.connect`.
    """
    connecting = asyncio.ensure_future(dp.connect(options=connection, **kwargs))
    done, _ = await asyncio.wait({connecting}, timeout=CONNECT_NOTE_S)
    if not done:
        try:
            target = connection.client_config()["target_host"]
        except dp.ConfigError:  # connect reports it in its own sentence
            target = "the server"
        typer.echo(
            f"waiting for Temporal at {target} to answer ({CONNECT_NOTE_S:g} s so far; the "
            "connect gives up after about 30 s) ...",
            err=True,
        )
    return await connecting
