"""What one attempt of a leaf call has paid for so far, so a failure can say what was billed.

A provider bills every answer it sends, whether or not the step then succeeds: an answer that
never fits its type after its re-asks, a re-ask whose next request fails, an image whose download
fails. The activity bodies report each answer with `paid` as it arrives; the attempt's wrapper (a
worker's activity, or a local run's retry loop) reads the total when the attempt fails and carries
it out in the failure's details (`durapipe.runtime._calls.SPENT_DETAIL`), where Temporal's history
keeps it.

An answer served from the answer store (`durapipe.adapters._answers`: the same request, sent again
by a retry, gets the answer an earlier attempt received) was paid for once, by that attempt: the
transport says so with `replayed`, and it counts as ``replayed``, not ``fresh``.

A retry learns what the attempts before it paid for (``prior``): a local run's retry loop keeps
them, and on a worker the failed attempt's last heartbeat carries them to the next attempt
(Temporal keeps only the last attempt's failure, but hands each attempt the heartbeat details of
the one before). An answer the retry is served from the store that a prior attempt counted is not
counted again; one it did not count (its worker died before it could say) is.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token

from durapipe.runtime._calls import FailedAttempt, LeafResult, Usage, failed_spend


class AttemptSpend:
    """What one attempt paid for, added to as its answers arrive.

    Attributes:
        attempt: the attempt, from 1.
        fresh: answers the provider sent this attempt (billed now).
        replayed: answers served from the answer store (billed to an earlier attempt).
        model: the model of the last answer.
    """

    __slots__ = ("_replays", "attempt", "fresh", "model", "on_fresh", "prior", "replayed")

    def __init__(self, attempt: int, prior: list[FailedAttempt] | None = None) -> None:
        self.attempt = attempt
        # Shared zeros until something is counted (never changed in place: `add` replaces them):
        # every leaf call makes one of these, most ask once.
        self.fresh = _NOTHING
        self.replayed = _NOTHING
        self.model: str | None = None
        # What the attempts before this one paid for before they failed, as far as known.
        self.prior = prior or []
        self._replays = 0
        # Called after each answer billed to this attempt, to say so at once where the attempt's
        # end may never come (a worker killed later: see `durapipe.activities._activities`).
        self.on_fresh: Callable[[AttemptSpend], None] | None = None

    def add(self, usage: Usage, model: str | None) -> None:
        """Count one answer of ``model``."""
        self.model = model
        if self._replays:
            self._replays -= 1
            self.replayed = usage if self.replayed is _NOTHING else self.replayed + usage
            return
        self.fresh = usage if self.fresh is _NOTHING else self.fresh + usage
        if self.on_fresh is not None:
            self.on_fresh(self)

    def replay(self) -> None:
        """The next answer `add` counts was served from the answer store."""
        self._replays += 1

    def failures(self) -> list[FailedAttempt]:
        """The failed attempts' spend, this attempt included (it failed)."""
        own = self.fresh + _less(self.replayed, failed_spend(self.prior))
        if not spends(own):
            return list(self.prior)
        mine = FailedAttempt(
            attempt=self.attempt,
            input_tokens=own.input_tokens,
            output_tokens=own.output_tokens,
            cost_usd=own.cost_usd,
        )
        return [*self.prior, mine]

    def settled(self, result: LeafResult) -> LeafResult:
        """``result`` of this attempt (it succeeded) with the failed attempts before it, less the
        answers it was served from the store that those attempts counted already."""
        if not self.prior:
            return result
        counted = _least(self.replayed, failed_spend(self.prior))
        usage = _less(result.usage, counted)
        return result.model_copy(update={"failed_attempts": self.prior, "usage": usage})


def spends(usage: Usage) -> bool:
    """Whether ``usage`` is anything (tokens or money)."""
    return bool(usage.cost_usd or usage.input_tokens or usage.output_tokens)


# The message of the cancellation a local run's step timer sends its attempt (Temporal's
# worker says why it cancels an activity in its cancellation details): a call cancelled by it
# does not wait for an answer on its way, as one its run's cancel (or Ctrl-C) stops does.
STEP_TIMED_OUT = "durapipe: the step's timeout"

_NOTHING = Usage()
_ATTEMPT: ContextVar[AttemptSpend | None] = ContextVar("durapipe_attempt_spend", default=None)


def paid(usage: Usage, model: str | None) -> None:
    """Count an answer on the current attempt (nothing when no attempt is counting)."""
    spend = _ATTEMPT.get()
    if spend is not None:
        spend.add(usage, model)


def replayed() -> None:
    """The next answer `paid` counts was served from the answer store, not billed again."""
    spend = _ATTEMPT.get()
    if spend is not None:
        spend.replay()


def counting(
    attempt: int, prior: list[FailedAttempt] | None = None
) -> tuple[AttemptSpend, Token[AttemptSpend | None]]:
    """Start counting attempt ``attempt`` (after ``prior`` failed ones) in this task: its spend,
    and the token `done` takes."""
    spend = AttemptSpend(attempt, prior)
    return spend, _ATTEMPT.set(spend)


def done(token: Token[AttemptSpend | None]) -> None:
    """Stop counting (the token `counting` gave)."""
    _ATTEMPT.reset(token)


def _less(usage: Usage, less: Usage) -> Usage:
    """``usage`` less ``less``, never below zero."""
    return Usage(
        input_tokens=max(0, usage.input_tokens - less.input_tokens),
        output_tokens=max(0, usage.output_tokens - less.output_tokens),
        cost_usd=max(0.0, usage.cost_usd - less.cost_usd),
    )


def _least(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=min(a.input_tokens, b.input_tokens),
        output_tokens=min(a.output_tokens, b.output_tokens),
        cost_usd=min(a.cost_usd, b.cost_usd),
    )
