"""The client side of a run: connecting, starting and waiting (`RunHandle`), listing runs, and the
run-control calls (`pause`, `resume`, `cancel`, `approve`, `reject`, `pending`, `redrive`) that
`RunHandle` also offers as methods."""

from durapipe.client._connection import DEFAULT_ADDRESS, ConnectOptions
from durapipe.client._handle import RunHandle, connect, run, start
from durapipe.client._run_control import approve, cancel, pause, pending, reject, resume
from durapipe.client._runs import RunSummary, list_runs
from durapipe.client._runs import retry as redrive
from durapipe.client._telemetry import Telemetry

__all__ = [
    "DEFAULT_ADDRESS",
    "ConnectOptions",
    "RunHandle",
    "RunSummary",
    "Telemetry",
    "approve",
    "cancel",
    "connect",
    "list_runs",
    "pause",
    "pending",
    "redrive",
    "reject",
    "resume",
    "run",
    "start",
]
