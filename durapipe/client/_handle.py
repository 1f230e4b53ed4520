"""Starting runs on Temporal and following them: the client side of durapipe."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Literal

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import (
    ApplicationError,
    CancelledError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode

from durapipe._errors import (
    ConfigError,
    RunCancelled,
    RunError,
    RunExists,
    RunNotFound,
    RunStalled,
    StepFailed,
)
from durapipe._settings import settings
from durapipe.adapters import DEFAULT_TASK_QUEUE, WORKFLOW_NAME, child_workflow_id, pipe_run
from durapipe.client import _run_control
from durapipe.client._connection import ConnectOptions
from durapipe.client._pending import with_pending
from durapipe.client._stalls import (
    QueueLoad,
    QueuePollers,
    RunQueues,
    failing_task,
    read_queues,
    why_stalled,
)
from durapipe.client._telemetry import Telemetry
from durapipe.runtime import RunResult, StepFailure, StepRecord
from durapipe.spec import Pipeline, is_controller_kind
from durapipe.stores import CheckpointStore
from durapipe.worker import DurapipePlugin
from durapipe.workflows import STEPS_QUERY
from durapipe.workflows._search import PIPE, start_totals

SPEC_VERSION = 1
SERVER_OUTAGE_S = 300.0  # how long waiting for a run's result rides out an unreachable server
# A run whose workers are gone cannot answer a query; asking it must not hang the caller.
QUERY_TIMEOUT = timedelta(seconds=5)


async def connect(
    address: str | None = None,
    namespace: str | None = None,
    *,
    pipeline: Pipeline | None = None,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    telemetry: Telemetry | None = None,
    checkpoints: CheckpointStore | Literal["env"] | None = "env",
    options: ConnectOptions | None = None,
) -> Client:
    """A Temporal client with durapipe's plugin; workers built on it run ``pipeline``'s tools.

    The address and namespace come from the arguments, else ``options``, else the environment
    (``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_TLS_*``, ``TEMPORAL_API_KEY``) and the
    ``temporal.toml`` profile, as the temporal CLI reads them, else ``localhost:7233`` / ``default``.
    Payloads are encrypted when ``DURAPIPE_ENCRYPTION_KEYS`` (or ``..._FILE``) is set.
    ``telemetry`` adds tracing and a metrics endpoint (see `Telemetry`). Workers built on it
    checkpoint leaf results in ``checkpoints`` (default: the store ``DURAPIPE_CHECKPOINTS`` names).

    Raises:
        ConfigError: the server cannot be reached, the TLS/encryption settings are wrong, or a
            ``DURAPIPE_*`` setting is not valid.
    """
    options = options or ConnectOptions()
    if address:
        options = dataclasses.replace(options, address=address)
    if namespace:
        options = dataclasses.replace(options, namespace=namespace)
    config = options.client_config()
    plugin = DurapipePlugin(pipeline, tools=tools, checkpoints=checkpoints)
    target, namespace = config["target_host"], config["namespace"]
    settings()  # validated when the client starts: a bad value fails here, naming the variable
    telemetry = telemetry or Telemetry()
    # Outside the try: a taken metrics port is not a reachability error.
    runtime = telemetry.runtime()
    try:
        client = await Client.connect(
            **config, plugins=[plugin], interceptors=telemetry.interceptors(), runtime=runtime
        )
    except Exception as err:  # the SDK raises RuntimeError with the transport's reason
        raise ConfigError(
            f"cannot reach Temporal at {target} (namespace {namespace}): "
            f"{_unreachable_reason(str(err), target)}; "
            "start a dev server with `durapipe dev`, or check TEMPORAL_ADDRESS and the TLS settings"
        ) from None
    await _check_namespace(client, target)
    return client


def _unreachable_reason(error: str, target: str) -> str:
    """The reason the SDK gives for a failed connect, in words for the common cases (its text
    is a nested Rust error: ``tonic::transport::Error(Transport, ConnectError(...))``); any
    other reason as the SDK wrote it."""
    if "ConnectionRefused" in error:
        return "connection refused (nothing listens there)"
    if "call error after connection" in error:
        # Connected, then no gRPC answer: an HTTP server (the UI's port given for the
        # frontend's), a TLS server asked in plain text, or a listener that never answers.
        answer = "gives no answer" if "Timeout expired" in error else "does not answer"
        return (
            f"something took the connection but {answer} as a Temporal frontend (gRPC) does: "
            "another service (the Web UI listens on the frontend's port + 1000), or a server "
            "that expects TLS"
        )
    lookup = re.search(r'"dns error", .*?error: "([^"]+)"', error)
    if lookup:
        host = target.rsplit(":", 1)[0]
        return f"cannot resolve host '{host}' ({lookup.group(1)})"
    return error


async def _check_namespace(client: Client, target: str) -> None:
    """Fail with one sentence now, not with a traceback at the first call, on a wrong namespace."""
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=client.namespace)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ConfigError(
                f"namespace '{client.namespace}' does not exist on {target}; pass an existing one "
                f"with -n/--namespace (or TEMPORAL_NAMESPACE), or create it with "
                f"`temporal operator namespace create -n {client.namespace}`"
            ) from None
        # Other refusals (e.g. a key allowed to run workflows but not to describe the
        # namespace) say nothing about the namespace: the calls that follow report their own.


class RunHandle:
    """A run on Temporal: its id, its step records while it goes, and its result."""

    def __init__(self, client: Client, run_id: str, *, queues: RunQueues | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self._queues = queues
        self._load = QueueLoad(client)  # a follower's looks at busy queues, kept a second
        self._handle: WorkflowHandle[Any, RunResult] = client.get_workflow_handle(
            run_id, result_type=RunResult
        )

    @property
    def task_queue(self) -> str | None:
        """The task queue the run's workflows run on, when known without asking the server (the
        run was started or re-driven by this client, or its queues were read already)."""
        return self._queues.workflow if self._queues is not None else None

    async def stalled(self, *, pollers: QueuePollers | None = None) -> str | None:
        """Why the run cannot make progress (a task queue it needs has no worker, or its workflow
        task keeps failing on the workers it has), else None.

        The queues come from the run's start (read from its history for a run started
        elsewhere); Temporal's DescribeTaskQueue says who polls them, asked anew unless
        ``pollers`` (the queues' pollers as asked for this command) already knows.
        """
        if self._queues is None:
            self._queues = await self._read_queues()
            if self._queues is None:
                return None
        why = await why_stalled(self.client, self._queues, pollers)
        return why or await failing_task(self.client, self.run_id, pollers)

    async def _read_queues(self) -> RunQueues | None:
        return await read_queues(self.client, self.run_id)

    async def result(self) -> RunResult:
        """Wait for the run to finish.

        Raises:
            StepFailed: a step failed (names the step, its kind, model and cause).
            RunError: the run ended another way (terminated, cancelled, timed out), or the
                server stayed unreachable for `SERVER_OUTAGE_S`.
        """
        deadline = time.monotonic() + SERVER_OUTAGE_S
        while True:
            try:
                return await self._handle.result()
            except WorkflowFailureError as err:
                raise run_error(err, self.run_id) from None
            except RPCError as err:
                # A restarting server is not a missing run: the run goes on, so wait for it.
                if err.status == RPCStatusCode.UNAVAILABLE:
                    if time.monotonic() < deadline:
                        await asyncio.sleep(1.0)
                        continue
                    address = self.client.service_client.config.target_host
                    raise RunError(
                        f"lost Temporal at {address}: it did not answer for "
                        f"{SERVER_OUTAGE_S:g} s ({err.message}); run '{self.run_id}' goes on "
                        f"there if it comes back: `durapipe result {self.run_id}` follows it then",
                        run_id=self.run_id,
                    ) from None
                raise RunNotFound(
                    f"no run '{self.run_id}': {err.message}", run_id=self.run_id
                ) from None

    async def steps(self, *, pollers: QueuePollers | None = None) -> list[StepRecord]:
        """Step records of the run, including those of nested runs still in progress.

        A running run answers the ``durapipe.steps`` query; a closed one needs no worker: its
        records travel in its result (or in its failure). ``pollers``: as for `stalled`; its
        description of the run (and of its running nested runs) is read too.

        Raises:
            RunNotFound: no run with this id.
            RunStalled: the run is running but no worker polls its task queue (nobody can answer).
        """
        pollers = pollers or QueuePollers(self.client)
        try:
            description = await pollers.description(self.run_id)
        except RPCError as err:
            raise RunNotFound(
                f"no run '{self.run_id}': {err.message}", run_id=self.run_id
            ) from None
        if description.status == WorkflowExecutionStatus.RUNNING:
            # Without a worker the query would wait for its timeout; the queue says so at once.
            why = await why_stalled(
                self.client, RunQueues(workflow=description.task_queue), pollers
            ) or await failing_task(self.client, self.run_id, pollers)
            if why is not None:
                raise RunStalled(
                    f"run '{self.run_id}' is running but cannot make progress: {why}",
                    run_id=self.run_id,
                )
            try:
                return await _steps(
                    self.client, self.run_id, self.run_id, pollers, description, self._load
                )
            except RPCError as err:
                why = await self.stalled(pollers=pollers) or f"no worker answered: {err.message}"
                raise RunError(
                    f"run '{self.run_id}' is running but its steps cannot be read: {why}",
                    run_id=self.run_id,
                ) from None
        try:
            return (await self.result()).steps
        except StepFailed as err:
            return [StepRecord.model_validate(s) for s in err.steps]
        except RunError:
            # A cancelled or terminated run carries no records of its own: ask a worker, if any.
            try:
                return await _steps(self.client, self.run_id, self.run_id, pollers)
            except RPCError:
                return []

    async def pause(self) -> None:
        """Pause the run: steps in flight finish, no new step starts until `resume`.

        Raises:
            RunNotFound: the run is not running.
        """
        await _run_control.pause(self.client, self.run_id)

    async def resume(self) -> None:
        """Resume the paused run.

        Raises:
            RunNotFound: the run is not running.
        """
        await _run_control.resume(self.client, self.run_id)

    async def paused(self, *, pollers: QueuePollers | None = None) -> bool:
        """Whether the run is paused, as its workflow answers (see `durapipe.client.paused`;
        ``pollers``: the command's, as there).

        Raises:
            RunNotFound: the run is not running.
            RunStalled: no worker answered (the sentence says why).
            RunError: its workers answered with an error.
        """
        return await _run_control.paused(self.client, self.run_id, pollers=pollers)

    async def cancel(self) -> None:
        """Cancel the run: in-flight calls are cancelled, the run ends as cancelled.

        Raises:
            RunNotFound: the run is not running.
        """
        await _run_control.cancel(self.client, self.run_id)

    async def approve(
        self,
        step: str,
        *,
        data: Any = _run_control.UNSET,
        reason: str = "",
        reviewer: str = "",
    ) -> None:
        """Approve the waiting approval step ``step``; ``data`` (when given) replaces the reviewed
        value.

        Raises:
            DecisionRefused: the step is not waiting, or ``data`` does not fit its type.
            RunNotFound: no such run.
        """
        await _run_control.approve(
            self.client, self.run_id, step, data=data, reason=reason, reviewer=reviewer
        )

    async def reject(self, step: str, *, reason: str = "", reviewer: str = "") -> None:
        """Reject the waiting approval step ``step``: the run fails with type ``durapipe.Rejected``.

        Raises:
            DecisionRefused: the step is not waiting for a decision.
            RunNotFound: no such run.
        """
        await _run_control.reject(self.client, self.run_id, step, reason=reason, reviewer=reviewer)


async def _steps(
    client: Client,
    run_id: str,
    workflow_id: str,
    pollers: QueuePollers,
    description: WorkflowExecutionDescription | None = None,
    load: QueueLoad | None = None,
) -> list[StepRecord]:
    """The records of workflow ``workflow_id`` and of its running nested workflows; a running step
    carries the server's view of its retries and waits (see `with_pending`).
    ``description``: the workflow's, when the caller has it (else asked with the query, of the
    command's ``pollers``, which a stall check may have asked already). ``load``: asked why a
    step no worker has taken waits (see `with_pending`), None for a run that has ended."""
    handle = client.get_workflow_handle(workflow_id)
    query = handle.query(STEPS_QUERY, result_type=list[StepRecord], rpc_timeout=QUERY_TIMEOUT)
    if description is None:
        answer, described = await asyncio.gather(query, pollers.description(workflow_id))
    else:
        answer, described = await query, description
    records = await with_pending(
        client,
        answer,
        described.raw_description.pending_activities,
        load=load,
        task_queue=described.task_queue,
    )
    merged: list[StepRecord] = []
    for record in records:
        merged.append(record)
        if is_controller_kind(record.kind) and record.status == "running":
            try:
                nested = await _steps(
                    client, run_id, child_workflow_id(run_id, record.path), pollers, load=load
                )
            except RPCError:
                continue  # the child has not started yet
            merged.extend(r for r in nested if all(r.path != m.path for m in records))
    return merged


def run_error(err: WorkflowFailureError, run_id: str) -> RunError:
    """The durapipe error for a failed workflow."""
    cause = err.cause
    if isinstance(cause, ApplicationError) and cause.details:
        try:
            failure = StepFailure.model_validate(cause.details[0])
        except Exception:  # not one of ours: fall through to the generic message
            pass
        else:
            return failure.error(run_id)
    if isinstance(cause, CancelledError):
        return RunCancelled(f"run '{run_id}' was cancelled", run_id=run_id)
    reason = cause.message if isinstance(cause, ApplicationError) else str(cause or err)
    return RunError(f"run '{run_id}' did not complete: {reason}", run_id=run_id)


async def start(
    client: Client,
    pipeline: Pipeline,
    pipe: str,
    inputs: Mapping[str, Any],
    *,
    run_id: str | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
    budget_usd: float | None = None,
    searchable_totals: bool | None = None,
) -> RunHandle:
    """Start a run of pipe ``pipe`` on Temporal; the inputs are checked before anything is sent.

    A `Path` (or bytes) given for a ``document``/``image``/``file`` input is uploaded to the blob
    store first, so the run carries a reference, not the bytes.
    ``budget_usd`` caps what the run may spend (with the pipe's own ``budget_usd``, the tighter
    wins): before each paid call the run checks its spend plus the call's worst case.
    ``searchable_totals=False`` starts a run that keeps no totals as search attributes (no
    history event for them, so no billed action on Temporal Cloud; `list_runs` reads its totals
    from the run); None takes ``DURAPIPE_SEARCHABLE_TOTALS`` (default on).

    Raises:
        PipelineError: the pipe is unknown or the inputs do not fit it.
        RunExists: a run with this id is running (nothing was started; the id of a run that has
            ended starts a new run under it).
        ConfigError: ``DURAPIPE_SEARCHABLE_TOTALS`` (or another setting) is not valid.
    """
    run = pipe_run(
        pipeline,
        pipe,
        inputs,
        run_id=run_id,
        budget_usd=budget_usd,
        searchable_totals=searchable_totals,
    )
    run_id = run.run_id
    try:
        await client.start_workflow(
            WORKFLOW_NAME,
            run,
            id=run_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"pipe {pipe}",
            # No memo: nothing reads one (the pipe is a search attribute, the spec's version is in
            # the input), and the worker decodes a memo's every field at each start of the run's
            # workflow (~38 µs of CPU per run for two fields, alternating in one process).
            # The pipe is set at the start, so `durapipe runs` lists a run before any worker has
            # picked it up (see `start_totals`).
            search_attributes=start_totals(pipe, run.workflow_version),
        )
    except WorkflowAlreadyStartedError:
        raise RunExists(
            f"a run with id '{run_id}' already exists; choose another --id", run_id=run_id
        ) from None
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT and PIPE.name in err.message:
            raise ConfigError(
                f"namespace '{client.namespace}' lacks durapipe's search attributes; register "
                f"them once with `durapipe setup-search-attributes -n {client.namespace}`"
            ) from None
        raise
    return RunHandle(client, run_id, queues=RunQueues.of(run, task_queue))


async def run(
    client: Client,
    pipeline: Pipeline,
    pipe: str,
    inputs: Mapping[str, Any],
    *,
    run_id: str | None = None,
    task_queue: str = DEFAULT_TASK_QUEUE,
    budget_usd: float | None = None,
    searchable_totals: bool | None = None,
) -> RunResult:
    """Start a run on Temporal and wait for its result (see `start` and `RunHandle.result`)."""
    handle = await start(
        client,
        pipeline,
        pipe,
        inputs,
        run_id=run_id,
        task_queue=task_queue,
        budget_usd=budget_usd,
        searchable_totals=searchable_totals,
    )
    return await handle.result()
