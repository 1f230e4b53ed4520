"""Where a run's workflow gets its allowance of steps (see `durapipe.runtime.Steps`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durapipe._settings import STEPS_ALWAYS_ALLOWED
    from durapipe.adapters._plan import STEPS_CAP_ACTIVITY
    from durapipe.runtime._calls import PipeRun

# Since this change a run that may start more steps than any worker allows asks its worker's cap
# when it starts (a local activity: the answer is in its history, so a replay reads the same cap);
# runs recorded before had no cap. Asked only by such runs (a top-level run that reaches a batch or
# holds more than STEPS_ALWAYS_ALLOWED steps), so other runs' histories carry no marker.
RUN_STEPS_PATCH = "durapipe.max-run-steps"


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
        start_to_close_timeout=timedelta(seconds=30),
        summary="this worker's cap on a run's steps",
    )
    return cap, True
