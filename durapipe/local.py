"""The in-process runner: the same specs, interpreter and activity code, no Temporal server.

Retries follow the step's `RetrySpec` exactly as Temporal applies a `RetryPolicy`: the delay grows by
``backoff`` up to ``max_interval``, a non-retryable error (or one whose type is listed in
``non_retryable``) stops at once, and a provider's Retry-After replaces the computed delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

from temporalio.exceptions import ApplicationError

from durapipe._errors import ConfigError, ErrorType, StepFailed
from durapipe._settings import settings
from durapipe.activities import (
    CallContext,
    activity_body,
    estimate_cost,
)
from durapipe.activities._cost import unpriced_model, unpriced_refusal
from durapipe.activities._models import worker_models
from durapipe.adapters import pipe_run, tool_functions
from durapipe.adapters._litellm import litellm_imported, litellm_module
from durapipe.runtime import (
    LeafCall,
    LeafResult,
    LlmCall,
    PipeRun,
    RunResult,
    StepRecord,
    Usage,
)
from durapipe.runtime._approvals import ApprovalDecision, ApprovalRequest
from durapipe.runtime._budget import Budget, effective_budget, estimated
from durapipe.runtime._calls import AgentTurnCall, FailedAttempt, ImageCall, failed_spend, spent_by
from durapipe.runtime._interpret import Interpreter
from durapipe.runtime._spend import STEP_TIMED_OUT, counting, done
from durapipe.security._codec import encryption_from_env
from durapipe.spec import Pipeline, RetrySpec, kind_of
from durapipe.spec._deck import ModelDeck
from durapipe.stores._checkpoints import (
    CheckpointStore,
    SqliteCheckpoints,
    configured_store,
    memoized,
)

logger = logging.getLogger("durapipe.local")

# A local run's own results are written to the store in one transaction per this many (and when
# the run ends).
FLUSH_EVERY = 256
# The activities whose bodies call litellm (models): a run with a step of these imports it.
MODEL_ACTIVITIES = frozenset(
    {"durapipe.llm", "durapipe.extract", "durapipe.image", "durapipe.agent_turn"}
)
# How long a step waits for litellm's import before the run says why nothing shows.
MODELS_NOTICE_S = 0.5


class ModelLibrary:
    """litellm's import for one local run, started on a thread as the run starts.

    ``import litellm`` takes seconds (3.5 s idle, 12-19 s on a loaded two-core machine). In the
    first step that called a model it stalled the whole run in silence; imported on a thread from
    the run's start, it overlaps the steps before the first model call, the steps that do not
    call one go on meanwhile, and a step that has to wait for it says so once (``on_notice``).

    Args:
        on_notice: called once with one sentence when a step has waited `MODELS_NOTICE_S`.
    """

    def __init__(self, on_notice: Callable[[str], None] | None) -> None:
        self.ready = litellm_imported()
        self._on_notice = on_notice
        self._import: asyncio.Future[None] | None = None
        self._said = False

    def start(self) -> None:
        """Start the import on a thread (nothing if litellm is imported already).

        A daemon thread, not the loop's executor: a run that ends (or a Ctrl-C) while it imports
        must not wait for it at the loop's shutdown.
        """
        if self.ready or self._import is not None:
            return
        loop = asyncio.get_running_loop()
        imported = self._import = loop.create_future()

        def load() -> None:
            # A failed import is left to the step that needs litellm: it fails there, as before.
            with contextlib.suppress(BaseException):
                litellm_module()
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, imported)

        threading.Thread(target=load, name="durapipe-litellm-import", daemon=True).start()

    async def wait(self, path: str) -> None:
        """Wait for the import before step ``path`` calls a model; say why once it takes long."""
        self.start()
        imported = self._import
        if imported is not None and not imported.done():
            done, _ = await asyncio.wait({imported}, timeout=MODELS_NOTICE_S)
            if not done and not self._said and self._on_notice is not None:
                self._said = True
                self._on_notice(
                    f"step '{path}' waits for the model library (litellm) to load: once per "
                    "process, a few seconds (more on a busy machine)"
                )
            await asyncio.shield(imported)
        self.ready = True


def _settle(imported: asyncio.Future[None]) -> None:
    if not imported.done():
        imported.set_result(None)


class RunCheckpoints:
    """The checkpoints of one local run's steps that are not memoised, written in batches.

    A local run's scope is new for every run and never handed out (a local run cannot be
    re-driven), so what its steps store under their keys can be read back only by this run: by a
    later attempt of the same step. The results are kept here for those, and written to the
    configured store in one transaction per `FLUSH_EVERY` results and when the run ends, instead
    of one transaction (one WAL append and its locks) per step on the step's path. Memoised
    steps, which other runs read, go to the store itself (see `LocalRuntime`); provider answers
    kept as they arrive (HTTP providers) are written through at once, as before.

    Args:
        store: the configured SQLite store.
    """

    def __init__(self, store: SqliteCheckpoints) -> None:
        self.store = store
        self._pending: dict[str, LeafResult] = {}
        self._writing: dict[str, LeafResult] = {}  # a batch handed to a thread, until committed
        # Keys of this run already written: only those can be in the store (nobody else knows
        # the run's scope), so a step whose key is not here is not looked up there.
        self._written: set[str] = set()
        self._refused = False  # the file refused a batch: held until the run's end from then on

    def get(self, key: str) -> LeafResult | None:
        """The result this run stored under ``key``, if any."""
        held = self._held(key)
        return held if held is not None or key not in self._written else self.store.get(key)

    def get_nowait(self, key: str) -> LeafResult | None:
        """Like `get`, on the calling thread; raises `BlockingIOError` rather than wait."""
        held = self._held(key)
        if held is not None or key not in self._written:
            return held
        return self.store.get_nowait(key)

    def put(self, key: str, result: LeafResult) -> bool:
        """Keep ``result`` for this run unless ``key`` holds one; True if this one won."""
        if key in self._written or self._held(key) is not None:
            return False
        self._pending[key] = result
        return True

    def put_nowait(self, key: str, result: LeafResult) -> bool:
        """Like `put` (which never waits); writes a full batch to the store if it is free."""
        won = self.put(key, result)
        if len(self._pending) >= FLUSH_EVERY and not self._refused:
            try:
                self._write_nowait()
            except BlockingIOError:
                pass  # locked elsewhere: the next batch tries again, and the run's end
            except (sqlite3.Error, OSError):
                # The file cannot take them (a full disk): trying again at every step would
                # rewrite the whole growing batch each time; the run's end tries once more (see
                # `_flush`), never this step's result.
                self._refused = True
        return won

    def get_answer(self, key: str) -> bytes | None:
        """The provider answer kept under ``key`` in the store."""
        return self.store.get_answer(key)

    def put_answer(self, key: str, answer: bytes) -> None:
        """Keep a provider answer in the store at once."""
        self.store.put_answer(key, answer)

    def get_answer_nowait(self, key: str) -> bytes | None:
        """Like `get_answer`, on the calling thread; raises `BlockingIOError` rather than wait."""
        return self.store.get_answer_nowait(key)

    def put_answer_nowait(self, key: str, answer: bytes) -> None:
        """Like `put_answer`, on the calling thread; raises `BlockingIOError` rather than wait."""
        self.store.put_answer_nowait(key, answer)

    async def flush(self) -> None:
        """Write every result still held to the store (on a thread if another holds its lock)."""
        if not self._pending:
            return
        try:
            self._write_nowait()
        except BlockingIOError:
            self._writing, self._pending = self._pending, {}
            try:
                await asyncio.to_thread(self.store.put_many, self._writing)
                self._written.update(self._writing)
            finally:
                self._writing = {}

    def _held(self, key: str) -> LeafResult | None:
        held = self._pending.get(key)
        return held if held is not None else self._writing.get(key)

    def _write_nowait(self) -> None:
        self.store.put_many_nowait(self._pending)  # BlockingIOError: nothing was written
        self._written.update(self._pending)
        self._pending = {}


class LocalRuntime:
    """Runs leaves by calling the activity bodies directly, with Temporal's retry semantics.

    Args:
        tools: tool functions by ``module:name`` reference.
        budget_usd: what this (part of the) run may spend; None for no budget.
        spend_cap: this process's cap on one run's spend (``DURAPIPE_MAX_RUN_USD``), named by a
            refusal; None: no cap.
        approve_all: approve every approval step as is; without it an approval step fails, since
            only a run on Temporal can wait for a human.
        checkpoints: where leaf results are checkpointed (None: nowhere).
        run_checkpoints: where the results of steps that are not memoised go instead (see
            `RunCheckpoints`); None: to ``checkpoints``.
        deck: the connection settings per model (the run's own pipeline is this process's deck).
        on_step: called with each step's record as the step succeeds or fails (nested runs too),
            and with the record of a leaf step cancelled in flight after it paid (see `_cancelled`).
        models: litellm's import, awaited before the first step that calls a model (None: that
            step imports it).
    """

    def __init__(
        self,
        tools: Mapping[str, Callable[..., Any]],
        *,
        budget_usd: float | None = None,
        spend_cap: float | None = None,
        approve_all: bool = False,
        checkpoints: CheckpointStore | None = None,
        run_checkpoints: RunCheckpoints | None = None,
        deck: ModelDeck | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
        models: ModelLibrary | None = None,
    ) -> None:
        self.tools = dict(tools)
        self.models = models
        self.deck = deck
        self.budget = Budget(budget_usd, spend_cap)
        self.approve_all = approve_all
        self.checkpoints = checkpoints
        self.run_checkpoints = run_checkpoints
        self.on_step = on_step

    def leaf(self, call: LeafCall) -> Coroutine[Any, Any, LeafResult]:
        models = self.models
        if models is not None and not models.ready and _calls_a_model(call):
            return self._after_models(call, models)
        # Without a budget there is nothing to check or count: the retrying coroutine itself,
        # not one more coroutine around it (each layer runs again whenever the call resumes).
        if not self.budget.active:
            return self._retrying(call)
        return self.budget.spend(call, self._estimate, self._retrying)

    async def _estimate(self, call: LeafCall) -> float | None:
        if not estimated(call):
            return None
        assert isinstance(call, LlmCall | AgentTurnCall | ImageCall)
        if self.budget.cap is not None and (model := unpriced_model(call)) is not None:
            raise StepFailed(
                path=call.path,
                kind=call.pipe.kind,
                model=getattr(call.pipe, "model", None),
                cause_type=ErrorType.MODEL_NOT_ALLOWED,
                cause=unpriced_refusal(call.pipe_name, model),
            )
        cap = self.deck.max_output_tokens if self.deck is not None else None
        return estimate_cost(call, cap)

    async def _after_models(self, call: LeafCall, models: ModelLibrary) -> LeafResult:
        # Before the budget's estimate and the attempt's timeout: both need litellm, and its
        # import is not the call's time (a worker imports it before it polls).
        await models.wait(call.path)
        return await self.leaf(call)

    async def _retrying(self, call: LeafCall) -> LeafResult:
        retry = call.pipe.retry or RetrySpec()
        attempt = 1
        # What attempts paid for before they failed: the provider billed them (see `paid`).
        failed: list[FailedAttempt] = []
        while True:
            spend, token = counting(attempt, failed)
            try:
                return spend.settled(await self._within_timeout(call, attempt))
            except ApplicationError as err:
                error_type, message = err.type or "ApplicationError", err.message
                stop = err.non_retryable or error_type in retry.non_retryable
                delay = err.next_retry_delay.total_seconds() if err.next_retry_delay else None
            except TimeoutError:
                error_type, message, stop, delay = (
                    ErrorType.TIMEOUT,
                    "start-to-close timeout exceeded",
                    False,
                    None,
                )
            except Exception as err:
                error_type, message = type(err).__name__, str(err)
                stop, delay = error_type in retry.non_retryable, None
            except asyncio.CancelledError:
                self._cancelled(call, attempt, spend.failures())  # Ctrl-C: say what it paid for
                raise
            finally:
                done(token)
            failed = spend.failures()
            if stop or attempt >= retry.max_attempts:
                failure = StepFailed(
                    path=call.path,
                    kind=call.pipe.kind,
                    model=getattr(call.pipe, "model", None),
                    cause_type=error_type,
                    cause=message,
                    attempts=attempt,
                )
                if failed:
                    failure.failed_attempts, failure.spent = failed, failed_spend(failed)
                raise failure
            if delay is None:
                delay = min(
                    retry.initial_interval * retry.backoff ** (attempt - 1), retry.max_interval
                )
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self._cancelled(call, attempt, failed)
                raise
            attempt += 1

    def _cancelled(self, call: LeafCall, attempts: int, failed: list[FailedAttempt]) -> None:
        """Tell ``on_step`` what a step cancelled in flight (Ctrl-C) paid for, if anything: its
        record, cancelled, with its attempts' spend. A cancelled task carries nothing out, so
        nothing else can say it (the interpreter's records see only a step that ends)."""
        if self.on_step is None or not failed:
            return
        spent = failed_spend(failed)
        record = StepRecord(
            path=call.path,
            pipe=call.pipe_name,
            kind=call.pipe.kind,
            status="cancelled",
            attempts=attempts,
            model=getattr(call.pipe, "model", None),
            input_tokens=spent.input_tokens,
            output_tokens=spent.output_tokens,
            cost_usd=spent.cost_usd,
            failed_attempts=failed,
            error_type=ErrorType.CANCELLED,
            error="the run was cancelled after its provider answered",
        )
        self.on_step(record)

    async def _within_timeout(self, call: LeafCall, attempt: int) -> LeafResult:
        """One attempt, cut off as Temporal's start-to-close timeout would (`TimeoutError`).

        What ``asyncio.timeout`` does, inlined: a timer that cancels this task, and a
        cancellation it caused becomes TimeoutError while any other (Ctrl-C) goes on as it is.
        The context manager's object, state and two coroutines per attempt were ~30k
        instructions a step (~7 us), more than the timer itself. Not ``wait_for``: no task per
        attempt.
        """
        seconds = call.pipe.timeout
        if seconds is None:
            return await self._attempt(call, attempt)
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # a local run's steps run in tasks
        cancelling = task.cancelling()
        fired: list[bool] = []
        timer = loop.call_at(loop.time() + seconds, _expire, task, fired)
        try:
            return await self._attempt(call, attempt)
        except asyncio.CancelledError:
            if fired:
                fired.clear()  # its cancellation is taken back here, not again below
                if task.uncancel() <= cancelling:
                    raise TimeoutError from None
            raise
        finally:
            timer.cancel()
            if fired:  # it fired, and the attempt swallowed the cancellation: take it back
                task.uncancel()

    def _attempt(self, call: LeafCall, attempt: int) -> Awaitable[LeafResult]:
        # The body its activity runs on a worker, built-in kind or registered (the interpreter
        # made the call only because the kind declares an activity); its own awaitable, not a
        # coroutine around it.
        kind = kind_of(call.pipe.kind)
        body = activity_body(kind.activity or "") if kind else None
        if body is None:
            raise ApplicationError(
                f"pipe '{call.pipe_name}': no activity body is registered for kind "
                f"'{call.pipe.kind}' in this process (see durapipe.activities.register_activity)",
                type=ErrorType.UNKNOWN_KIND,
                non_retryable=True,
            )
        checkpoints: CheckpointStore | None = self.checkpoints
        if self.run_checkpoints is not None and not memoized(call):
            checkpoints = self.run_checkpoints
        return body(call, CallContext(attempt, checkpoints, self.deck, self.tools))

    async def child(self, run: PipeRun) -> RunResult:
        limit = self.budget.for_child(run.spec.pipes[run.pipe].budget_usd)
        nested = LocalRuntime(
            self.tools,
            budget_usd=limit,
            spend_cap=self.budget.cap,
            approve_all=self.approve_all,
            checkpoints=self.checkpoints,
            run_checkpoints=self.run_checkpoints,
            deck=self.deck,
            on_step=self.on_step,
            models=self.models,
        )
        try:
            result = await Interpreter(
                run.model_copy(update={"budget_usd": limit}), nested
            ).execute()
        except StepFailed as err:
            # What the nested run's steps paid for before it failed counts here too (the error
            # may carry its own failed step's spend: this level's is its whole records').
            spent = spent_by(StepRecord.model_validate(s) for s in err.steps)
            err.spent, err.failed_attempts = (spent if spent != Usage() else None), []
            if err.spent is not None:
                self.budget.add(err.spent)
            raise
        self.budget.add(result.usage)
        return result

    async def steps_allowed(self, run: PipeRun, asks: bool) -> tuple[int | None, bool]:
        # The top-level run's allowance is this process's setting (`run_local`), a nested run's
        # its parent's share: both set on the run.
        return run.steps_left, not run.path and run.slice is None

    async def approval(self, request: ApprovalRequest) -> ApprovalDecision:
        if self.approve_all:
            return ApprovalDecision(step=request.path, approved=True, reviewer="--approve-all")
        raise StepFailed(
            path=request.path,
            kind="approval",
            cause_type=ErrorType.APPROVAL_UNAVAILABLE,
            cause="a local run cannot wait for a human decision; run it on Temporal, "
            "or pass --approve-all (approve_all=True) to approve every approval step as is",
        )

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def step_starting(self, record: StepRecord) -> None:
        return None

    def step_finished(self, record: StepRecord) -> None:
        if self.on_step is not None:
            self.on_step(record)

    def continue_as_new_suggested(self, turns: int) -> bool:
        return False  # no history to bound in-process

    def patched(self, change: str) -> bool:
        return True  # nothing recorded to replay in-process


async def run_local(
    pipeline: Pipeline,
    pipe: str,
    inputs: Mapping[str, Any],
    *,
    run_id: str | None = None,
    tools: Mapping[str, Callable[..., Any]] | None = None,
    budget_usd: float | None = None,
    approve_all: bool = False,
    on_step: Callable[[StepRecord], None] | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> RunResult:
    """Run pipe ``pipe`` of ``pipeline`` in this process.

    Args:
        pipeline: a loaded (and validated) pipeline.
        pipe: the name of the pipe to run.
        inputs: the pipe's inputs; a `Path` (or bytes) for a ``document``/``image``/``file`` input
            is uploaded to the blob store and passed as a reference.
        run_id: the run's id (used in step paths of nested runs); a new one by default.
        tools: tool functions by reference; imported from the pipeline's references by default.
        budget_usd: the most the run may spend (the pipe's ``budget_usd`` too, the tighter wins).
        approve_all: approve every approval step as is (a local run cannot wait for a human).
        on_step: called with each step's record as the step succeeds or fails, so a caller can
            show progress while the run goes; cancelled (Ctrl-C, or the caller's task), a leaf step
            in flight that had paid for answers is reported too, ``cancelled`` with its spend.
        on_notice: called with one sentence when the run waits for something that is not a
            step (litellm's import, which a run with model steps starts on a thread at once).

    Raises:
        ConfigError: a ``DURAPIPE_*`` setting or the encryption keys are not valid (one sentence
            naming the variable), before any step runs.
        PipelineError: the pipe is unknown or the inputs do not fit it.
        ConfigError: the pipe reaches an approval step and ``approve_all`` is not set (refused
            before any step runs: nobody can decide it in-process).
        StepFailed: a step failed after its retries.
    """
    # Validated at start, as `connect` and `build_worker` do: a bad value fails here, naming the
    # variable, not at the first step that happens to read it.
    settings()
    encryption_from_env()
    # This process's caps, as a worker's: the run's steps, and what it spends (the tighter of the
    # caller's budget, the pipe's and DURAPIPE_MAX_RUN_USD).
    spend_cap = settings().max_run_usd
    budget_usd = effective_budget(budget_usd, spend_cap)
    run = pipe_run(pipeline, pipe, inputs, run_id=run_id, budget_usd=budget_usd)
    run = run.model_copy(update={"steps_left": settings().max_run_steps})
    if not approve_all:
        _refuse_approvals(run.spec, pipe)
    models = None
    if any(_kind_calls_a_model(p.kind) for p in run.spec.pipes.values()):
        models = ModelLibrary(on_notice)
        models.start()
    store = configured_store()
    # The run's own pipeline is this process's deck: its models are the ones it calls, checked
    # by the same bodies as on a worker.
    deck = ModelDeck.of(pipeline.models)
    own = RunCheckpoints(store) if isinstance(store, SqliteCheckpoints) else None
    runtime = LocalRuntime(
        tools if tools is not None else tool_functions(run.spec),
        budget_usd=run.budget_usd,
        spend_cap=spend_cap,
        approve_all=approve_all,
        checkpoints=store,
        run_checkpoints=own,
        deck=deck.allowing(worker_models([pipeline, run.spec], deck)).capping(
            settings().max_output_tokens
        ),
        on_step=on_step,
        models=models,
    )
    try:
        return await Interpreter(run, runtime).execute()
    finally:
        if own is not None:
            await _flush(own)  # a failed or cancelled run's results are written too


def _refuse_approvals(spec: Pipeline, pipe: str) -> None:
    """Refuse, before any step runs, a run that reaches an approval step nobody can decide.

    Without this the paid steps before the approval ran first, and the run then failed at it.
    """
    approvals = [name for name, spec_pipe in spec.pipes.items() if spec_pipe.kind == "approval"]
    if not approvals:
        return
    names = ", ".join(f"'{name}'" for name in approvals)
    which = f"approval steps {names}" if len(approvals) > 1 else f"approval step {names}"
    raise ConfigError(
        f"pipe '{pipe}' reaches {which}, and a local run cannot wait for a human decision: pass "
        "--approve-all (approve_all=True) to approve every approval step as is, or run it on "
        "Temporal (without --local) and decide with `durapipe approve`; nothing was run"
    )


async def _flush(own: RunCheckpoints) -> None:
    # Only this run could have read these results, and it has them: a file that cannot take them
    # (a full disk) is worth a warning, not the run's result or its own error.
    try:
        await own.flush()
    except (sqlite3.Error, OSError) as err:
        logger.warning(
            "could not write this local run's step results to the checkpoint store %s: %s",
            own.store.path,
            err,
        )


def _expire(task: asyncio.Task[Any], fired: list[bool]) -> None:
    # The attempt's timer: as asyncio.timeout's, it cancels the task and marks why.
    fired.append(True)
    task.cancel(STEP_TIMED_OUT)


def _kind_calls_a_model(kind_name: str) -> bool:
    kind = kind_of(kind_name)
    return kind is not None and kind.activity in MODEL_ACTIVITIES


def _calls_a_model(call: LeafCall) -> bool:
    return _kind_calls_a_model(call.pipe.kind)
