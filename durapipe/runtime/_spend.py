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
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from durapipe.runtime._calls import FailedAttempt, Usage


class AttemptSpend:
    """What one attempt paid for, added to as its answers arrive.

    Attributes:
        attempt: the attempt, from 1.
        fresh: answers the provider sent this attempt (billed now).
        replayed: answers served from the answer store (billed to an earlier attempt).
        model: the model of the last answer.
    """

    __slots__ = ("_replays", "attempt", "fresh", "model", "replayed")

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt
        self.fresh = Usage()
        self.replayed = Usage()
        self.model: str | None = None
        self._replays = 0

    def add(self, usage: Usage, model: str | None) -> None:
        """Count one answer of ``model``."""
        if self._replays:
            self._replays -= 1
            self.replayed = self.replayed + usage
        else:
            self.fresh = self.fresh + usage
        self.model = model

    def replay(self) -> None:
        """The next answer `add` counts was served from the answer store."""
        self._replays += 1

    def failed(self, usage: Usage) -> FailedAttempt:
        """This attempt as a failed one that spent ``usage``."""
        return FailedAttempt(
            attempt=self.attempt,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
        )


def spends(usage: Usage) -> bool:
    """Whether ``usage`` is anything (tokens or money)."""
    return bool(usage.cost_usd or usage.input_tokens or usage.output_tokens)


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


def counting(attempt: int) -> tuple[AttemptSpend, Token[AttemptSpend | None]]:
    """Start counting attempt ``attempt`` in this task: its spend, and the token `done` takes."""
    spend = AttemptSpend(attempt)
    return spend, _ATTEMPT.set(spend)


def done(token: Token[AttemptSpend | None]) -> None:
    """Stop counting (the token `counting` gave)."""
    _ATTEMPT.reset(token)
