"""Where a run's workflow gets its allowance of steps (see `durapipe.runtime.Steps`) and its
worker's cap on what it spends."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from durapipe._errors import ErrorType, StepFailed
    from durapipe._settings import STEPS_ALWAYS_ALLOWED, settings
    from durapipe.adapters._plan import ESTIMATE_ACTIVITY, SPEND_CAP_ACTIVITY, STEPS_CAP_ACTIVITY
    from durapipe.runtime._budget import Budget, effective_budget
    from durapipe.runtime._calls import LeafCall, PipeRun

# Since this change a run that may start more steps than any worker allows asks its worker's cap
# when it starts (a local activity: the answer is in its history, so a replay reads the same cap);
# runs recorded before had no cap. Asked only by such runs (a top-level run that reaches a batch or
# holds more than STEPS_ALWAYS_ALLOWED steps), so other runs' histories carry no marker.
RUN_STEPS_PATCH = "durapipe.max-run-steps"
# Since this change a top-level run that starts on a worker with DURAPIPE_MAX_RUN_USD set asks it
# for the cap (a local activity, its answer in the history); on other workers it asks nothing, so
# their runs' histories, and the cost of their steps, are as before.
RUN_USD_PATCH = "durapipe.max-run-usd"
# Since this change an agent's fresh run (continue-as-new) counts what its earlier runs spent
# against the run's budget; runs recorded before began each fresh run with nothing spent, so an
# agent of many turns spent its budget (and its worker's cap) once per 25 turns.
RESUMED_SPEND_PATCH = "durapipe.resumed-spend"
# A local activity runs inside its workflow task: while the worker's answer is held (a worker whose
# slots are all busy, a stalled event loop), the task stays open, and the run answers no query and
# takes no signal until the SDK completes it to go on waiting, every 8 s (80% of the task's 10 s
# timeout): `durapipe pause` and `show` found the run stalled. Answers take milliseconds, so an
# attempt held longer than this is given up, and the next is asked after a timer (above
# `local_retry_threshold`): the task completes between attempts, and the run answers meanwhile.
# Only a held question records more (the timer); a replay reads the answer from its marker.
QUESTION_TIMEOUT = timedelta(seconds=2)
# The wait between attempts doubles from 0.5 s up to a minute: an attempt given up costs the run's
# history about 6 events (its marker, the timer's two, a workflow task's three), every 4 s while
# the wait stopped at 2 s (5,400 an hour), about once a minute at the cap (some 350 an hour).
# A replay follows the attempts and timers its history recorded: a history recorded with the old
# waits replays unchanged (tests/workflows/test_held_question.py), so the change needs no patch.
QUESTION_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
)
QUESTION_RETRY_HERE = timedelta(milliseconds=100)


async def steps_allowed(
    run: PipeRun, asks: bool, patched: Callable[[str], bool]
) -> tuple[int | None, bool]:
    """The steps the run of this workflow may start, and whether that is the worker's whole cap
    (see `durapipe.runtime.Runtime.steps_allowed`)."""
    # A nested run's share comes from its parent's workflow code (no client starts a child); a
    # top-level run's input may come from any client, so what it says is never read.
    if run.steps_left is not None and workflow.info().parent is not None:
        return run.steps_left, False
    if not asks:
        return STEPS_ALWAYS_ALLOWED, True
    if not patched(RUN_STEPS_PATCH):
        return None, True  # recorded before the cap: it ran with none
    cap: int = await workflow.execute_local_activity(
        STEPS_CAP_ACTIVITY,
        result_type=int,
        start_to_close_timeout=QUESTION_TIMEOUT,
        retry_policy=QUESTION_RETRY,
        local_retry_threshold=QUESTION_RETRY_HERE,
        summary="this worker's cap on a run's steps",
    )
    return cap, True


def may_cap_spend(info: workflow.Info, run: PipeRun) -> bool:
    """Whether the run of this workflow may have a cap on its spend from its worker (see
    `capped_budget`): a top-level run, on a worker with ``DURAPIPE_MAX_RUN_USD`` set or replaying
    (or whose input names a cap, a client's word that `capped_budget` drops).

    Checked before `capped_budget` is awaited: other runs (nested ones, and every run on a worker
    without the setting) pay for no coroutine, no patch and no local activity.
    """
    # A nested run's budget comes from its parent's workflow code, the cap already in it.
    if info.parent is not None:
        return False
    return run.spend_cap is not None or _asks_history_or_worker()


def _asks_history_or_worker() -> bool:
    # Whether to ask is this worker's setting, read once per run where the run starts: a replay
    # asks the history instead (the patch's marker is there only if the worker that started the
    # run had the cap), so a worker set otherwise replays the run as it ran.
    return workflow.unsafe.is_replaying() or settings().max_run_usd is not None


async def capped_budget(run: PipeRun, patched: Callable[[str], bool]) -> PipeRun:
    """A top-level ``run`` (see `may_cap_spend`) with its worker's cap (``DURAPIPE_MAX_RUN_USD``)
    when it started on a worker with one: its budget the tighter of its own and the cap, and the
    cap kept for refusals to name (``spend_cap``)."""
    if run.spend_cap is not None:  # a top-level input's: never read
        run = run.model_copy(update={"spend_cap": None})
    if not _asks_history_or_worker() or not patched(RUN_USD_PATCH):
        return run  # started where no cap was set, or recorded before the cap
    cap: float | None = await workflow.execute_local_activity(
        SPEND_CAP_ACTIVITY,
        result_type=float | None,  # type: ignore[arg-type]
        start_to_close_timeout=QUESTION_TIMEOUT,
        retry_policy=QUESTION_RETRY,
        local_retry_threshold=QUESTION_RETRY_HERE,
        summary="this worker's cap on a run's spend",
    )
    if cap is None:
        return run
    return run.model_copy(
        update={"budget_usd": effective_budget(run.budget_usd, cap), "spend_cap": cap}
    )


def run_budget(run: PipeRun, patched: Callable[[str], bool]) -> Budget:
    """The budget of the run of this workflow: an agent's fresh run (continue-as-new) has spent
    what its earlier runs did (their usage, in ``resume``), asked only of such a run under a
    budget."""
    budget = Budget(run.budget_usd, run.spend_cap)
    if run.resume is None or not budget.active or not patched(RESUMED_SPEND_PATCH):
        return budget
    usage = run.resume.get("usage")
    spent = usage.get("cost_usd") if isinstance(usage, dict) else None
    # A top-level input may come from any client: what it says was spent never adds budget.
    budget.spent = spent if isinstance(spent, int | float) and spent > 0 else 0.0
    return budget


async def estimate(call: LeafCall) -> float:
    """The worst case of a paid call, asked of the worker (a local activity: its answer is in the
    history).

    Raises:
        StepFailed: ``durapipe.ModelNotAllowed``, the worker refused to price the call (a model
            with no price on a worker that caps a run's spend, see
            `durapipe.activities.Activities.estimate_cost`); nothing was called.
    """
    try:
        worst: float = await workflow.execute_local_activity(
            ESTIMATE_ACTIVITY,
            call,
            result_type=float,
            start_to_close_timeout=timedelta(seconds=30),
            summary=f"estimate cost of {call.path}",
        )
    except (ActivityError, ApplicationError) as err:
        # The refusal arrives as the activity's own error here; as an ActivityError's cause too.
        cause = err.cause if isinstance(err, ActivityError) else err
        if not isinstance(cause, ApplicationError) or cause.type != ErrorType.MODEL_NOT_ALLOWED:
            raise
        raise StepFailed(
            path=call.path,
            kind=call.pipe.kind,
            model=getattr(call.pipe, "model", None),
            cause_type=ErrorType.MODEL_NOT_ALLOWED,
            cause=cause.message,
        ) from None
    return worst
