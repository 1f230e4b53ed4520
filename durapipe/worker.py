"""The durapipe plugin and worker assembly.

`DurapipePlugin` is the one object a user adds to a Temporal client or worker: it wires the pydantic
data converter, the workflow sandbox passthroughs, the workflow and the activities.

Example:
    >>> client = await Client.connect("localhost:7233", plugins=[DurapipePlugin(pipeline)])  # doctest: +SKIP
    >>> worker = Worker(client, task_queue="durapipe")  # the worker inherits the plugin  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import hashlib
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    SerializationContext,
    StorageDriverStoreContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.exceptions import ApplicationError
from temporalio.plugin import SimplePlugin
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from durapipe._errors import ConfigError
from durapipe._settings import settings
from durapipe.activities import Activities
from durapipe.activities._models import unkeyed_providers as unkeyed_providers
from durapipe.adapters import DEFAULT_TASK_QUEUE, tool_functions
from durapipe.adapters._answers import warm as warm_answer_client
from durapipe.adapters._litellm import litellm_module, litellm_tasks, warm_provider_clients
from durapipe.security._codec import EncryptionCodec, EncryptionError, encryption_from_env
from durapipe.spec import Pipeline
from durapipe.spec._deck import ModelDeck
from durapipe.stores import CheckpointStore
from durapipe.stores._payloads import reads_store_context, with_external_storage
from durapipe.stores._writable import check_stores
from durapipe.workflows import PipeWorkflow, SandboxedPipeWorkflow
from durapipe.workflows._details import DetailsInterceptor

# Modules the workflow sandbox shares with the worker instead of re-importing per run.
PASSTHROUGH_MODULES = {
    # Specs, the interpreter and translation rules: pure code with no I/O; its module state is
    # caches of pure functions and the pipe-kind registry (filled at import, read by the workflow
    # when it reads its input), so sharing them is deterministic and saves a re-import per run.
    "durapipe": "pure specs and interpreter",
    # The spec models are pydantic models; re-importing pydantic per workflow run is slow.
    "pydantic": "spec models",
    "pydantic_core": "spec models",
    "annotated_types": "pydantic dependency",
    # Templates and (later) condition expressions; jinja2 is pure and slow to import.
    "jinja2": "templates",
    "markupsafe": "jinja2 dependency",
}


# The plugin's name, in the worker heartbeats Temporal keeps: how a client knows a durapipe worker.
PLUGIN_NAME = "durapipe.DurapipePlugin"


class DurapipePlugin(SimplePlugin):
    """Wires durapipe into a Temporal client and worker.

    Payloads above ``DURAPIPE_PAYLOAD_THRESHOLD`` go to the payload store (see `durapipe.stores._payloads`).

    Args:
        pipeline: the pipeline whose tool functions this worker runs (none for a client-only use);
            its models are the worker's deck and its limits hold for every call the worker runs.
            The worker calls only the models its operator allowed: those this pipeline names,
            ``DURAPIPE_MODELS`` (or the providers its environment holds keys or endpoints for),
            ``durapipe/*`` (see `durapipe.activities._models`); ``models()`` says which.
        tools: tool functions by ``module:name`` reference, in addition to the pipeline's.
        checkpoints: where leaf results are checkpointed; by default the store
            ``DURAPIPE_CHECKPOINTS`` names (see `durapipe.activities.open_store`), None for none.
        codec: the payload codec; by default payload encryption as configured by
            ``DURAPIPE_ENCRYPTION_KEYS`` / ``DURAPIPE_ENCRYPTION_KEYS_FILE`` (see `durapipe.security._codec`).

    Raises:
        ConfigError: the encryption keys are malformed.
    """

    def __init__(
        self,
        pipeline: Pipeline | None = None,
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        checkpoints: CheckpointStore | Literal["env"] | None = "env",
        codec: PayloadCodec | None = None,
    ) -> None:
        functions = {**(tool_functions(pipeline) if pipeline else {}), **(tools or {})}
        # The worker's model deck: connection settings from the pipelines it loaded, never a run's.
        deck = ModelDeck.of(pipeline.models) if pipeline else None
        # Its provider limits too: they hold for every call it runs, whatever a run carries.
        # The models it calls are those its files and its operator name (`Activities.models()`).
        activities = Activities(
            functions,
            checkpoints,
            deck,
            pipeline.limits if pipeline else (),
            pipelines=[pipeline] if pipeline else (),
        )
        # The models its activities call (decided once: `check_worker` asks before it polls).
        self.models = activities.models
        # The modules of the tool functions this worker runs: part of its build id.
        self.tool_modules = tuple(sorted({f.__module__ for f in functions.values()}))
        # Whether the worker's steps use the store DURAPIPE_CHECKPOINTS names (checked at start).
        self.checkpoints_from_env = checkpoints == "env"
        super().__init__(
            PLUGIN_NAME,
            data_converter=durapipe_converter(codec),
            activities=activities.all(),
            workflows=[SandboxedPipeWorkflow if sandbox_on() else PipeWorkflow],
            workflow_runner=sandbox_runner(),
            # The runs' current details, written when the Temporal UI reads them.
            interceptors=[DetailsInterceptor()],
        )


def durapipe_converter(codec: PayloadCodec | None = None) -> DataConverter:
    """The data converter of durapipe's clients, workers and replays: pydantic, the payload codec
    (encryption from the environment by default) and external storage for large payloads.

    Raises:
        ConfigError: the encryption keys are malformed.
    """
    # The codec runs on every payload before it leaves the process; the SDK applies it before
    # external storage (claim check), so the store never holds plain text either.
    codec = codec or encryption_from_env()
    converter = dataclasses.replace(pydantic_data_converter, payload_codec=codec)
    if not isinstance(codec, EncryptionCodec) or codec.current is not None:
        # Failure messages and stack traces travel as one encoded payload too: a message
        # such as "... not found for <customer data>" is as private as the data itself.
        converter = dataclasses.replace(
            converter, failure_converter_class=DefaultFailureConverterWithEncodedAttributes
        )
    stored = with_external_storage(converter)
    return ContextCachingConverter(
        **{f.name: getattr(stored, f.name) for f in dataclasses.fields(stored) if f.init}
    )


# Contexts a converter keeps its bound copies for (about 1.4 KB each), when it binds any: a
# context's copies are reused within one activation or activity task, so more than a busy worker's
# runs in flight is not needed; past it the cache starts again (it only saves work).
CONTEXTS_KEPT = 1024

# Contexts to ask a payload converter whether it binds anything (see `_reads_context`).
_PROBES: tuple[SerializationContext, ...] = (
    WorkflowSerializationContext(namespace="", workflow_id=""),
    ActivitySerializationContext(
        namespace="",
        workflow_id="",
        workflow_type="",
        activity_type="",
        activity_id="",
        activity_task_queue="",
        is_local=False,
    ),
)


class ContextCachingConverter(DataConverter):
    """A `DataConverter` bound to a serialization or store context only when one of its parts
    reads it, and then once per context.

    The SDK binds the worker's converter to a serialization context (the workflow id, the activity
    id) for every activity task, heartbeat, activation and command, and with external storage on,
    to a store context as well, several times per payload. A store binding always copied the
    converter (building a new payload and failure converter) and its external storage; a
    serialization binding copies it when a part reads the context. durapipe's own parts read
    neither (the pydantic converter, the encryption codec, the failure converter, the payload
    store's drivers and selector), so this converter is then its own binding: nothing is copied or
    kept (a cache of bindings missed on every activity, whose id is new). A part that reads a
    context (a user's codec that is `WithSerializationContext`, a storage driver of theirs) is bound
    as the SDK binds it; a bound copy is immutable and depends only on the context, so it is made
    once per context and reused (the workflow side binds the same context many times).
    """

    _by_context: dict[SerializationContext, ContextCachingConverter]
    _by_store: dict[StorageDriverStoreContext, DataConverter]
    _reads_context: bool
    _reads_store_context: bool

    def __post_init__(self) -> None:
        super().__post_init__()
        # Frozen dataclass: set past __setattr__ (each copy gets its own caches).
        object.__setattr__(self, "_by_context", {})
        object.__setattr__(self, "_by_store", {})
        object.__setattr__(self, "_reads_context", _reads_context(self))
        object.__setattr__(self, "_reads_store_context", reads_store_context(self.external_storage))

    def with_context(self, context: SerializationContext) -> ContextCachingConverter:
        """This converter bound to ``context`` (see `DataConverter.with_context`): itself when no
        part of it reads the context."""
        if not self._reads_context:
            return self
        return _kept(self._by_context, context, super().with_context)

    def _with_store_context(self, store_ctx: StorageDriverStoreContext) -> DataConverter:
        if not self._reads_store_context:
            return self
        return _kept(self._by_store, store_ctx, super()._with_store_context)


def _reads_context(converter: DataConverter) -> bool:
    """Whether binding ``converter`` to a serialization context can change what it does.

    The codec, the failure converter and the external storage are bound only when they are
    `WithSerializationContext` (durapipe's are not). Every payload converter is one (temporalio
    wraps each in a converter of its own transfer types), and it returns itself when none of its
    encoders reads the context: asked with a workflow's and an activity's context, it says so.
    """
    parts = (converter.payload_codec, converter.failure_converter, converter.external_storage)
    if any(isinstance(part, WithSerializationContext) for part in parts):
        return True
    payloads = converter.payload_converter
    return isinstance(payloads, WithSerializationContext) and any(
        payloads.with_context(probe) is not payloads for probe in _PROBES
    )


_K = TypeVar("_K")
_V = TypeVar("_V")


def _kept(cache: dict[_K, _V], key: _K, bind: Callable[[_K], _V]) -> _V:
    """``bind(key)``, made once per key; the cache starts over past `CONTEXTS_KEPT` keys."""
    bound = cache.get(key)
    if bound is None:
        bound = bind(key)
        if len(cache) >= CONTEXTS_KEPT:
            cache.clear()
        cache[key] = bound
    return bound


SANDBOX_ENV = "DURAPIPE_WORKFLOW_SANDBOX"


class _ExpectedFailures(logging.Filter):
    """One line, not a traceback, for an activity that failed on purpose: a non-retryable
    `ApplicationError` (a 401, a bad request, durapipe's own validation). Its stack says nothing
    an operator can use; the step, the type and the message do. Other failures keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ApplicationError) and error.non_retryable:
            record.msg = (
                f"{record.getMessage()}: {error.type or 'ApplicationError'}: {error.message}"
            )
            record.args = None
            record.exc_info = record.exc_text = None
        return True


_EXPECTED_FAILURES = _ExpectedFailures()


# The workflow's error for a run whose input does not decode (`workflows._refusals.RunInputError`),
# by name: a sandboxed workflow raises its own copy of the class.
_INPUT_ERROR = "RunInputError"


class _UndecodableTasks(logging.Filter):
    """One line, not the SDK's traceback, for a workflow task this worker cannot decode: for want
    of an encryption key (an operator's mistake: keys on the clients, none or others here), or
    because the run's input does not fit this worker's `PipeRun` (the line names the run and the
    field). The run and what is wrong are the whole story; the codec's or pydantic's stack is not.
    Temporal retries the task, so the line comes again at each attempt. The SDK core's warning
    about the same task, which carries that stack in its text, is dropped. Other task failures
    keep theirs."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, EncryptionError):
            run = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = f"a workflow task of run ID {run} cannot be decoded here: {error}"
            record.args = None
            record.exc_info = record.exc_text = None
            return True
        if error is not None and type(error).__name__ == _INPUT_ERROR:
            details = getattr(record, "temporal_workflow", None)
            details = details if isinstance(details, dict) else {}
            record.msg = (
                f"a workflow task of run '{details.get('workflow_id', '?')}' (run ID "
                f"{details.get('run_id', '?')}) cannot be decoded here: {error}"
            )
            record.args = None
            record.exc_info = record.exc_text = None
            return True
        message = record.getMessage()
        return not (
            "] Failing workflow task " in message
            and any(f'r#type: "{name}"' in message for name in ("EncryptionError", _INPUT_ERROR))
        )


_UNDECODABLE_TASKS = _UndecodableTasks()


def quiet_expected_failures() -> None:
    """Log non-retryable activity failures, and workflow tasks that cannot be decrypted or whose
    run's input does not decode, as one line (workers call it; safe to call again)."""
    for name, quiet in (
        ("temporalio.activity", _EXPECTED_FAILURES),
        ("temporalio.worker._workflow", _UNDECODABLE_TASKS),
        ("temporalio.worker._workflow_instance", _UNDECODABLE_TASKS),
        ("temporalio.core", _UNDECODABLE_TASKS),
    ):
        logger = logging.getLogger(name)
        if quiet not in logger.filters:
            logger.addFilter(quiet)


def sandbox_on() -> bool:
    """Whether workers run the workflow in Temporal's sandbox (``DURAPIPE_WORKFLOW_SANDBOX=on``)."""
    return settings().workflow_sandbox


def sandbox_runner() -> SandboxedWorkflowRunner:
    """The workflow sandbox with durapipe's passthrough modules (workers and the replayer)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH_MODULES)
    )


def check_worker(
    client: Client, *, max_concurrent_activities: int | None = None, rate: float | None = None
) -> DurapipePlugin:
    """What `build_worker` checks before it loads anything slow: the client's plugin, the limits,
    the settings and the local stores (so a mistake is one sentence before seconds of loading).

    Raises:
        ConfigError: as `build_worker`.
    """
    plugin = next(
        (p for p in client.config().get("plugins", []) if isinstance(p, DurapipePlugin)), None
    )
    if plugin is None:
        raise ConfigError(
            "the client has no DurapipePlugin: connect with durapipe.connect(pipeline=...)"
        )
    if max_concurrent_activities is not None and max_concurrent_activities < 1:
        raise ConfigError(f"--max-concurrent must be at least 1, not {max_concurrent_activities}")
    if rate is not None and rate <= 0:
        raise ConfigError(f"--rate must be a positive number of activities per second, not {rate}")
    quiet_expected_failures()
    plugin.models()  # decided now: a bad setting fails here, in one sentence
    check_stores(
        settings(), checkpoints=plugin.checkpoints_from_env
    )  # fail here, in one sentence, not at the first step that needs one
    return plugin


def build_worker(
    client: Client,
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    max_concurrent_activities: int | None = None,
    rate: float | None = None,
) -> Worker:
    """A worker for durapipe workflows and activities on ``task_queue``.

    ``client`` must carry a `DurapipePlugin` (see `durapipe.connect`); the worker inherits it, with
    the pipeline's tools, from the client.

    Args:
        client: a client made by `durapipe.connect`.
        task_queue: the queue to poll.
        max_concurrent_activities: most activities this worker runs at once.
        rate: most activities per second started on ``task_queue``, enforced by the server across
            every worker of the queue (Temporal's ``max_task_queue_activities_per_second``).

    Raises:
        ConfigError: the client has no `DurapipePlugin`, a limit is not positive, a
            ``DURAPIPE_*`` setting is not valid, or a local store's folder cannot be written.
    """
    plugin = check_worker(client, max_concurrent_activities=max_concurrent_activities, rate=rate)
    # Import litellm now: importing it inside the first llm activity would stall the worker's
    # event loop (workflow tasks included) for seconds.
    litellm_module()
    options: dict[str, Any] = {}
    if max_concurrent_activities is not None:
        options["max_concurrent_activities"] = max_concurrent_activities
    if rate is not None:
        options["max_task_queue_activities_per_second"] = rate
    return Worker(client, task_queue=task_queue, build_id=build_id(plugin.tool_modules), **options)


@functools.cache
def build_id(tool_modules: tuple[str, ...] = ()) -> str:
    """The build id a worker reports: a hash of the code that decides what it does.

    temporalio's default hashes the bytecode of every module loaded (over 3,600 once litellm is:
    0.4-0.8 s of a worker's start, on two busy cores). durapipe's workers run durapipe's
    workflow and activities, the pipeline's tool functions, and libraries at fixed versions: the
    id hashes durapipe's and the tool modules' source and the versions of the libraries that
    shape a run (milliseconds).
    """
    digest = hashlib.sha256()
    for name in ("durapipe", "temporalio", "litellm", "pydantic"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            digest.update(f"{name}=={importlib.metadata.version(name)}\n".encode())
    # Every source file of the package, not the modules imported so far: which of those a process
    # has loaded depends on what it did before, and one install must give one id.
    package = Path(__file__).parent
    sources = [(f"durapipe/{p.relative_to(package)}", p) for p in sorted(package.rglob("*.py"))]
    for name in tool_modules:
        source = getattr(sys.modules.get(name), "__file__", None)
        if source and source.endswith(".py"):
            sources.append((name, Path(source)))
    for name, path in sources:
        with contextlib.suppress(OSError):
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return "durapipe-" + digest.hexdigest()[:32]


def build_workers(
    client: Client,
    queues: Sequence[str],
    *,
    max_concurrent_activities: int | None = None,
    rate: float | None = None,
) -> list[Worker]:
    """One worker per task queue in ``queues``, each with the same limits (see `build_worker`).

    Runs start on the main task queue, so its worker runs the workflows; a queue that routing rules
    send leaves to (``llm-openai``) only ever receives activities. ``rate`` is per queue: each
    queue's limit holds across every worker of that queue, on every host.
    """
    return [
        build_worker(
            client,
            task_queue=queue,
            max_concurrent_activities=max_concurrent_activities,
            rate=rate,
        )
        for queue in dict.fromkeys(queues)
    ]


_FROZEN: list[int] = []  # the count frozen by the first call, once made


def freeze_startup_objects() -> int:
    """Take every object alive now out of the cyclic garbage collector's sight (`gc.freeze`), once
    per process; how many objects the freeze took.

    A worker calls this once it is built, before it polls. What it imported (litellm, temporalio,
    pydantic, durapipe: ~455,000 objects) lives as long as the process, yet every full collection
    walked all of it again, holding the GIL (0.15-0.2 s each on this 2-core host: a pause of every
    run the worker drives). Frozen, those objects are never walked again; objects made later are
    collected as before, and reference counting frees frozen ones as usual. No `gc.collect`
    first: the ~300 unreachable objects the start leaves (about 50 KB) are not worth a full walk at
    every start. Only the first call freezes: a later one, with runs in flight, would keep their
    garbage for good.
    """
    if not _FROZEN:
        gc.freeze()
        _FROZEN.append(gc.get_freeze_count())
    return _FROZEN[0]


WARM_UP_LOGGING_S = 2.0  # the longest `warm_up` waits for litellm's logging of its call


async def warm_up() -> None:
    """Do litellm's first-call setup for OpenAI-compatible providers now, offline.

    A worker calls this before it polls, so its first provider request leaves as promptly as the
    later ones (provider limits count requests as they leave; see `durapipe.LimitRule`). That
    includes building the HTTP client that keeps answers (tens of milliseconds: an SSL context and
    a connection pool), which would otherwise happen inside the first step's provider limit.
    """
    before = asyncio.all_tasks()
    await warm_answer_client()
    await warm_provider_clients()
    # litellm logs each call on a task of its own (its service hooks build pydantic models:
    # milliseconds). Left alone, the warm-up call's would run inside the first step's request.
    # Only litellm's: a task something else started meanwhile (a pool's timer, the caller's own
    # work) may run for as long as it likes, and the worker must not wait for it.
    logging = litellm_tasks(asyncio.all_tasks() - before)
    if logging:
        # They end in milliseconds: the wait ends with them, bounded should one never end.
        await asyncio.wait(logging, timeout=WARM_UP_LOGGING_S)
