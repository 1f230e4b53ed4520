"""Cost budgets: a run stops before a paid call that could take its spend past its budget.

Pure bookkeeping shared by the Temporal runtime and the local runner; the worst-case estimate of a
call comes from `durapipe.activities.estimate_cost`, which runs where litellm's price data lives.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from durapipe._errors import ErrorType, RunCancelled, StepFailed
from durapipe.runtime._calls import AgentTurnCall, ImageCall, LeafCall, LeafResult, LlmCall, Usage

BUDGET_EXCEEDED = ErrorType.BUDGET_EXCEEDED
SPEND_CAP_SETTING = "DURAPIPE_MAX_RUN_USD"
# Spend and estimates are sums of float prices; equal must not read as "over".
_SLACK = 1e-9


def estimated(call: LeafCall) -> bool:
    """Whether a budget estimates ``call`` before it runs: the calls priced before they are made
    (an llm step, an agent's turn, an image step; see `durapipe.activities.estimate_cost`)."""
    return isinstance(call, (LlmCall, AgentTurnCall, ImageCall))


def effective_budget(*limits: float | None) -> float | None:
    """The tightest of the given budgets (None when none is set)."""
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


class Budget:
    """What one part of a run may still spend, and what it has spent.

    Args:
        limit: the budget in USD; None means no budget (nothing is checked or estimated).
        cap: the worker's cap on one run's spend (``DURAPIPE_MAX_RUN_USD``), when the run has
            one: a refusal names it, since the budget may be the cap's and not the client's.
    """

    def __init__(self, limit: float | None, cap: float | None = None) -> None:
        self.limit = limit
        self.cap = cap
        self.spent = 0.0

    @property
    def active(self) -> bool:
        """Whether calls must be estimated and checked."""
        return self.limit is not None

    def check(self, call: LeafCall, estimate: float) -> None:
        """Allow ``call`` only if spend so far plus its worst case stays within the budget.

        Raises:
            StepFailed: type ``durapipe.BudgetExceeded``; the call must not be made.
        """
        if self.limit is None or self.spent + estimate <= self.limit + _SLACK:
            return
        raise StepFailed(
            path=call.path,
            kind=call.pipe.kind,
            model=getattr(call.pipe, "model", None),
            cause_type=BUDGET_EXCEEDED,
            cause=(
                f"budget exceeded: the run has spent ${self.spent:.6f} of its "
                f"${self.limit:.6f} budget and this step could cost up to ${estimate:.6f}; "
                f"no further paid call was made{self._capped()}"
            ),
        )

    async def spend(
        self,
        call: LeafCall,
        estimate: Callable[[LeafCall], Awaitable[float | None]],
        run: Callable[[LeafCall], Awaitable[LeafResult]],
    ) -> LeafResult:
        """Run a leaf call if the budget allows its worst case, and count what it spent.

        ``estimate`` gives a call's worst case, or None for a call that is not estimated (a tool,
        an extract: see `durapipe.activities.estimate_cost`).

        Raises:
            StepFailed: the budget would be exceeded (nothing was called), or the call failed.
        """
        if self.active:
            worst = await estimate(call)
            if worst is not None:
                self.check(call, worst)
        try:
            result = await run(call)
        except (StepFailed, RunCancelled) as err:
            if err.spent is not None:  # paid for before it failed: spent all the same
                self.add(err.spent)
            raise
        self.add(result.spent)
        return result

    def _capped(self) -> str:
        if self.cap is None:
            return ""
        return f" (its worker lets one run spend at most ${self.cap:.6f}: {SPEND_CAP_SETTING})"

    def add(self, usage: Usage) -> None:
        """Count what a step (or a nested run) spent."""
        self.spent += usage.cost_usd

    def child(self, child_limit: float | None) -> dict[str, float | None]:
        """The budget fields of a nested run's `PipeRun` (see `for_child`): what it may spend, and
        the worker's cap for its refusals (when the run has one)."""
        fields = {"budget_usd": self.for_child(child_limit)}
        if self.cap is not None:
            fields["spend_cap"] = self.cap
        return fields

    def for_child(self, child_limit: float | None) -> float | None:
        """The budget a nested run gets: what is left here, or its own budget if tighter."""
        left = None if self.limit is None else max(0.0, self.limit - self.spent)
        return effective_budget(left, child_limit)
