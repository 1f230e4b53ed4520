"""The client side of a run: connecting, starting and waiting (`RunHandle`), listing runs, and the
run-control calls (`pause`, `resume`, `paused`, `cancel`, `approve`, `reject`, `pending`, `redrive`) that
`RunHandle` also offers as methods."""

from durapipe._errors import RunExists
from durapipe.client._connection import DEFAULT_ADDRESS, ConnectOptions
from durapipe.client._details import StepDetail, step_detail
from durapipe.client._handle import RunHandle, connect, run, start
from durapipe.client._run_control import (
    PendingRequests,
    approve,
    cancel,
    pause,
    paused,
    pending,
    reject,
    resume,
)
from durapipe.client._runs import RunListing, RunSummary, describe_run, find_runs, list_runs
from durapipe.client._runs import retry as redrive
from durapipe.client._stalls import QueuePollers
from durapipe.client._telemetry import Telemetry

__all__ = [
    "DEFAULT_ADDRESS",
    "ConnectOptions",
    "PendingRequests",
    "QueuePollers",
    "RunExists",
    "RunHandle",
    "RunListing",
    "RunSummary",
    "StepDetail",
    "Telemetry",
    "approve",
    "cancel",
    "connect",
    "describe_run",
    "find_runs",
    "list_runs",
    "pause",
    "paused",
    "pending",
    "redrive",
    "reject",
    "resume",
    "run",
    "start",
    "step_detail",
]
