"""The Temporal activities: one per registered leaf body, a thin wrapper that heartbeats.

Each leaf kind's body lives in its own module (`_llm`, `_tool`, `_extract`, `_image`, `_agent`,
or a user's) and registers under its kind's activity name; `Activities.all()` turns every one
into a Temporal activity of that name whose input type is the kind's call message.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, FailureError

from durapipe._errors import ErrorType
from durapipe._settings import settings
from durapipe.activities._cost import estimate_cost, unpriced_model, unpriced_refusal
from durapipe.activities._metrics import record_spend, record_usage
from durapipe.activities._models import worker_models
from durapipe.activities._registry import (
    ActivityBody,
    CallContext,
    is_metered,
    registered_activities,
)
from durapipe.adapters._plan import (
    ACTIVITY_NAMES,
    ATTEMPT_DETAIL,
    ESTIMATE_ACTIVITY,
    SPEND_CAP_ACTIVITY,
    STEPS_CAP_ACTIVITY,
)
from durapipe.runtime._calls import (
    AgentTurnCall,
    CallBase,
    ImageCall,
    LeafResult,
    LlmCall,
    spend_detail,
    spent_in,
)
from durapipe.runtime._spend import AttemptSpend, counting, done, spends
from durapipe.security._codec import EncryptionError
from durapipe.security._secrets import redact, redact_value
from durapipe.spec import LimitRule, Pipeline, format_duration, limits_for, parse_duration
from durapipe.spec._deck import AllowedModels, ModelDeck
from durapipe.spec._kinds import kinds
from durapipe.stores._checkpoints import CheckpointStore, configured_store
from durapipe.stores._limits import beat_details

LLM_ACTIVITY = ACTIVITY_NAMES["llm"]
TOOL_ACTIVITY = ACTIVITY_NAMES["tool"]
EXTRACT_ACTIVITY = ACTIVITY_NAMES["extract"]
IMAGE_ACTIVITY = ACTIVITY_NAMES["image"]
AGENT_TURN_ACTIVITY = ACTIVITY_NAMES["agent"]

T = TypeVar("T")
C = TypeVar("C", bound=CallBase)


class Activities:
    """The durapipe activities, bound to the tool functions this worker can run.

    Example:
        >>> activities = Activities({"brief_tools:count_words": count_words})  # doctest: +SKIP
        >>> Worker(client, task_queue="durapipe", activities=activities.all())  # doctest: +SKIP
    """

    def __init__(
        self,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        checkpoints: CheckpointStore | Literal["env"] | None = "env",
        deck: ModelDeck | None = None,
        limits: Sequence[LimitRule] = (),
        pipelines: Sequence[Pipeline] = (),
    ) -> None:
        self.tools = dict(tools or {})
        # Connection settings per model: only this worker's configuration decides where calls go,
        # and its cap on a request's output tokens what one may cost (a deck's own cap kept).
        self.deck = deck or ModelDeck()
        if self.deck.max_output_tokens is None:
            self.deck = self.deck.capping(settings().max_output_tokens)
        # The files it loaded: the models they name are ones it calls (see `models()`).
        self._pipelines = tuple(pipelines)
        # The worker's own provider limits: they hold for every call it runs (see `own_limits`).
        self.limits = list(limits)
        # "env": the store DURAPIPE_CHECKPOINTS names, opened when the first call needs it.
        self._checkpoints = checkpoints
        # The longest a call may hold one of this worker's slots: a step's timeout comes from the
        # run's spec, which any client of the namespace sends (see `refuse_long_timeout`).
        configured = settings().max_step_timeout
        self.max_step_timeout = (
            parse_duration(configured.strip()) if configured and configured.strip() else 3600.0
        )

    @property
    def checkpoints(self) -> CheckpointStore | None:
        """The checkpoint store of this worker's calls (None: checkpoints are off)."""
        if self._checkpoints == "env":
            self._checkpoints = configured_store()
        return self._checkpoints

    def all(self) -> list[Callable[..., Any]]:
        """Every activity, for a worker's ``activities=``: one per registered leaf body (the
        built-in kinds' and those of kinds registered in this process, see `register_activity`),
        plus the budget's cost estimate and the caps on a run's size and spend."""
        registered = [
            self._registered(name, call, body)
            for name, (call, body) in registered_activities().items()
        ]
        return [*registered, self.estimate_cost, self.max_run_steps, self.max_run_usd]

    def models(self) -> AllowedModels:
        """The models this worker calls (see `worker_models`), decided once, when first asked:
        `durapipe.build_worker` asks before the worker polls; a worker built another way, at its
        first call. A deck given with its own allowance keeps it.

        Raises:
            ConfigError: a ``DURAPIPE_*`` setting is not valid, or the MTHDS deck cannot be read.
        """
        if self.deck.allowed is None:
            self.deck = self.deck.allowing(worker_models(self._pipelines, self.deck))
        assert self.deck.allowed is not None  # for mypy: set just above
        return self.deck.allowed

    def context(self, attempt: int) -> CallContext:
        """What this worker gives a registered activity body on attempt ``attempt``."""
        if self.deck.allowed is None:
            self.models()  # decided once, before any call: no call goes out unchecked
        return CallContext(attempt, self.checkpoints, self.deck, self.tools)

    def _registered(
        self, name: str, call_type: type[CallBase], body: ActivityBody
    ) -> Callable[..., Any]:
        metrics_kind = next((k.name for k in kinds().values() if k.activity == name), name)
        metered = is_metered(name)

        async def run(call: CallBase) -> LeafResult:
            info = activity.info()  # read once: heartbeats and metrics need it too
            refuse_long_timeout(call, info, self.max_step_timeout)
            if self.limits:
                call = own_limits(call, self.limits)
            # What this attempt pays for, so a failure after a paid answer says so (`paid`),
            # and what the attempts before it paid for (their last heartbeat says).
            prior = spent_in(info.heartbeat_details) if info.attempt > 1 else None
            spend, token = counting(info.attempt, prior)
            try:
                context = self.context(info.attempt)
                # Without a checkpoint store nothing keeps an answer for a retry to count: the
                # attempt says what it paid for as each answer arrives (see `_heartbeating`).
                tell = context.checkpoints is None
                work = _heartbeating(body(call, context), info, spend, tell_paid=tell)
                result = spend.settled(await work)
            except BaseException as err:
                if metered and spends(spend.fresh):
                    record_spend(spend.fresh, metrics_kind, spend.model, info)
                if isinstance(err, asyncio.CancelledError):
                    paid = cancelled_after_paying(call, info, spend)
                    if paid is not None:
                        raise paid from None
                raise
            finally:
                done(token)
            if metered:
                # What this attempt was billed: an answer served from a store was counted by the
                # attempt that received it.
                record_usage(result, metrics_kind, info, spend.fresh)
            return result

        # Temporal reads the input's type from the annotations: the kind's own message, so the
        # payload decodes into it and the UI shows the activity under its recorded name.
        run.__annotations__ = {"call": call_type, "return": LeafResult}
        run.__name__ = run.__qualname__ = getattr(body, "__name__", name)
        run.__doc__ = body.__doc__
        return activity.defn(name=name)(run)

    @activity.defn(name=ESTIMATE_ACTIVITY)
    async def estimate_cost(self, call: LlmCall | AgentTurnCall | ImageCall) -> float:
        """The worst-case cost of a paid call (llm, agent turn, image), checked against a run's
        budget.

        Raises:
            ApplicationError: non-retryable ``durapipe.ModelNotAllowed``: this worker caps what a
                run spends (``DURAPIPE_MAX_RUN_USD``) and a model of the call has no price.
        """
        if settings().max_run_usd is not None and (model := unpriced_model(call)) is not None:
            raise ApplicationError(
                unpriced_refusal(call.pipe_name, model),
                type=ErrorType.MODEL_NOT_ALLOWED,
                non_retryable=True,
            )
        return estimate_cost(call, self.deck.max_output_tokens)

    @activity.defn(name=STEPS_CAP_ACTIVITY)
    async def max_run_steps(self) -> int:
        """The steps this worker lets one run start (``DURAPIPE_MAX_RUN_STEPS``), asked as a
        local activity by a run that may grow that large."""
        return settings().max_run_steps

    @activity.defn(name=SPEND_CAP_ACTIVITY)
    async def max_run_usd(self) -> float | None:
        """What this worker lets one run spend (``DURAPIPE_MAX_RUN_USD``; None: no cap), asked as
        a local activity by a top-level run that starts on a worker with the cap set."""
        return settings().max_run_usd


def refuse_long_timeout(call: CallBase, info: activity.Info, cap: float) -> None:
    """Refuse a call whose timeout is longer than this worker's cap (``DURAPIPE_MAX_STEP_TIMEOUT``).

    Otherwise a run could hold a worker slot as long as it likes (a 30-year timeout, and a model
    that takes its time or a provider limit it waits for), and as many runs as the worker has
    slots would stop every other run's steps on it.

    Raises:
        ApplicationError: non-retryable ``durapipe.TimeoutNotAllowed`` naming the pipe.
    """
    asked = info.start_to_close_timeout
    if asked is None or asked.total_seconds() <= cap:
        return
    raise ApplicationError(
        f"pipe '{call.pipe_name}', field 'timeout': {format_duration(asked.total_seconds())} is "
        f"longer than this worker lets a step run ({format_duration(cap)}, "
        "DURAPIPE_MAX_STEP_TIMEOUT); give the pipe a shorter timeout",
        {ATTEMPT_DETAIL: info.attempt},
        type=ErrorType.TIMEOUT_NOT_ALLOWED,
        non_retryable=True,
    )


def cancelled_after_paying(
    call: CallBase, info: activity.Info, spend: AttemptSpend
) -> ApplicationError | None:
    """The failure that says what a cancelled call paid for (its attempts, this one included),
    or None when it paid for nothing or was not cancelled by its run.

    Temporal's SDK reports an activity that ends as cancelled with a `CancelledError` of its
    own, without details, so the workflow would never learn of an answer received before the
    cancellation reached the call (a re-ask's, a fallback model's): it fails instead, with type
    ``durapipe.Cancelled``, non-retryable, which the workflow reads as the cancellation it is.
    """
    failures = spend.failures()
    details = activity.cancellation_details()
    if not failures or details is None or not details.cancel_requested:
        return None
    return ApplicationError(
        f"pipe '{call.pipe_name}' was cancelled after its provider answered",
        {ATTEMPT_DETAIL: info.attempt, **spend_detail(failures)},
        type=ErrorType.CANCELLED,
        non_retryable=True,
    )


def own_limits(call: C, rules: Sequence[LimitRule]) -> C:
    """``call`` with the worker's ``rules`` that match one of its requests before the limits the
    run carries (a name both have is the worker's rule).

    A worker's limits (its pipeline file's, `durapipe worker --limits`) are its operator's caps: a
    run started from another file, a client that left them out, an MTHDS method (whose format has
    no limits) or a method sent to `durapipe serve` cannot lift them.
    """
    own = limits_for(call.pipe, rules)
    if not own:
        return call
    names = {rule.bucket for rule in own}
    carried = [rule for rule in call.limits if rule.bucket not in names]
    return call.model_copy(update={"limits": [*own, *carried]})


async def _heartbeating(
    work: Awaitable[T],
    info: activity.Info | None = None,
    spend: AttemptSpend | None = None,
    *,
    tell_paid: bool = False,
) -> T:
    """Await ``work`` while heartbeating, so a lost worker or a cancel is noticed promptly.

    Heartbeats carry the attempt number (see `ATTEMPT_DETAIL`), and so does a failure: it is
    re-raised as the same application error plus the stamp, and what the attempt paid for before
    it failed (``spend``, see `SPENT_DETAIL`). ``info``: the activity's (read here when not given).

    ``tell_paid``: each answer billed to the attempt is heartbeated as it arrives, so a retry
    after this worker dies learns of it from the heartbeat details Temporal hands it (the first
    heartbeat of an attempt leaves at once; a later one waits out the SDK's throttle, 80% of the
    heartbeat timeout, and a worker killed meanwhile takes it along).
    """
    info = info or activity.info()
    stamp: dict[str, Any] = {ATTEMPT_DETAIL: info.attempt}
    if spend is not None and spend.prior:
        # Heartbeat details replace the last ones: this attempt's beats carry the earlier ones'.
        stamp.update(spend_detail(spend.prior))
    timeout = info.heartbeat_timeout
    beats = _Beats(_beat_interval(timeout), stamp) if timeout else None
    if tell_paid and beats is not None and spend is not None:
        spend.on_fresh = functools.partial(_tell_paid, stamp)
    # What the call waits for (room in a provider limit) rides on the same beats.
    said = beat_details.set(stamp) if beats is not None else None
    # One coroutine awaits the work and words its failure: each further layer of the await chain
    # runs again every time the work resumes (several times a step).
    try:
        return await work
    except ApplicationError as err:
        # A tool's own failure (`ToolError`, Temporal's `ApplicationError`) may quote a credential
        # of this worker as a plain exception may; then its cause, which quotes it too, stays out.
        # Its details (recorded as its message is) are masked too.
        message, details = _said(err.message), [redact_value(d) for d in err.details]
        raise ApplicationError(
            message,
            *details,
            _stamped(stamp, spend),
            type=err.type,
            non_retryable=err.non_retryable,
            next_retry_delay=err.next_retry_delay,
            category=err.category,
        ) from (err if message == err.message and details == list(err.details) else None)
    except FailureError:
        raise  # Temporal's own (cancellation and the like): keep them as they are
    except EncryptionError as err:
        # Sealed content (a blob, a checkpoint) this worker has no key for, or a wrong one: a retry
        # on this worker would fail the same way, so the step fails now, saying what to set.
        raise ApplicationError(
            str(err),
            _stamped(stamp, spend),
            type=ErrorType.ENCRYPTION_KEY_ERROR,
            non_retryable=True,
        ) from None
    except Exception as err:
        # What the SDK would report for a plain exception: its class name as the type. A message
        # quoting a credential of this worker loses its cause too: the cause would quote it again.
        message = _said(str(err))
        failure = ApplicationError(message, _stamped(stamp, spend), type=type(err).__name__)
        raise failure from (err if message == str(err) else None)
    finally:
        if beats is not None:
            beats.timer.cancel()
        if said is not None:
            beat_details.reset(said)


# The longest failure message a step's activity reports. A failure is not a payload (no payload
# store takes it): a tool raising with a 3 MB message could not be recorded by Temporal (its 2 MB
# limit), and the step failed 30 s later as `durapipe.Timeout: heartbeat timeout exceeded`.
MAX_FAILURE_MESSAGE = 10_000


def _said(message: str) -> str:
    """A failure's message as history may keep it: credentials masked, at most
    `MAX_FAILURE_MESSAGE` characters (the rest cut, saying how much)."""
    message = redact(message)
    if len(message) <= MAX_FAILURE_MESSAGE:
        return message
    cut = len(message) - MAX_FAILURE_MESSAGE
    return f"{message[:MAX_FAILURE_MESSAGE]}... ({cut:,} more characters cut)"


def _stamped(stamp: dict[str, Any], spend: AttemptSpend | None) -> dict[str, Any]:
    """A failure's stamp: the attempt, and what it paid for before it failed (if anything).

    Answers it was served from the answer store count too: the attempts that received them failed
    before this one, and Temporal keeps only the last attempt's failure, so the workflow learns
    of them here or not at all.
    """
    if spend is None:
        return stamp
    failures = spend.failures()
    if not failures:
        return stamp
    stamped = {**stamp, **spend_detail(failures)}
    if len(failures) > len(spend.prior):
        # The next attempt (if the policy allows one) learns of it from its heartbeat details.
        activity.heartbeat(stamped)
    return stamped


def _tell_paid(stamp: dict[str, Any], spend: AttemptSpend) -> None:
    """Heartbeat what ``spend``'s attempt has paid for so far, as if it had failed now (it may
    never say otherwise: see `_heartbeating`); its later beats (``stamp``) carry it too."""
    stamp.update(spend_detail(spend.failures()))
    activity.heartbeat(stamp)


class _Beats:
    """The heartbeats of one activity: one every ``interval`` seconds while it runs.

    A timer, not a task: a task per step (created, cancelled, awaited) cost more CPU than the
    heartbeats. The first beat waits one interval, so a call that ends sooner sends none.
    """

    __slots__ = ("interval", "loop", "stamp", "timer")

    def __init__(self, interval: float, stamp: dict[str, Any]) -> None:
        self.interval = interval
        self.stamp = stamp
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(interval, self.beat)

    def beat(self) -> None:
        # Runs in this activity's context: call_later copies the caller's context variables.
        activity.heartbeat(self.stamp)
        self.timer = self.loop.call_later(self.interval, self.beat)


@functools.lru_cache(maxsize=64)
def _beat_interval(timeout: timedelta) -> float:
    """Seconds between heartbeats for a heartbeat timeout: a third of it, at least 200 ms.

    A worker's steps share a handful of timeouts, so each is worked out once, not per step.
    """
    return max(timeout / 3, timedelta(milliseconds=200)).total_seconds()
