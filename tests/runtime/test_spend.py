"""What an attempt paid for: answers from the provider, answers served from the store, and the
failure details that carry them (and those of workers from before them, which carry none)."""

from __future__ import annotations

from durapipe.runtime._calls import FailedAttempt, LeafResult, Usage, spend_detail, spent_in
from durapipe.runtime._spend import counting, done, paid, replayed

A = Usage(input_tokens=10, output_tokens=100, cost_usd=1.0)
B = Usage(input_tokens=20, output_tokens=100, cost_usd=1.5)


def test_details_of_a_worker_from_before_carry_no_spend() -> None:
    # Failures of older workers carry only their attempt; anything else in details is not ours.
    assert spent_in([{"durapipe.attempt": 2}]) == []
    assert (
        spent_in(["text", 3, None, {"durapipe.spent": "x"}, {"durapipe.spent": [{"a": 1}]}]) == []
    )
    failed = [FailedAttempt(attempt=1, input_tokens=10, output_tokens=100, cost_usd=1.0)]
    assert spent_in([{"durapipe.attempt": 1, **spend_detail(failed)}]) == failed


def test_an_answer_replayed_from_the_store_is_counted_once() -> None:
    # Attempt 1 is paid for A, then fails.
    first, token = counting(1)
    paid(A, "m")
    done(token)
    prior = first.failures()
    assert [(a.attempt, a.usage) for a in prior] == [(1, A)]
    # Attempt 2 is served A from the store (counted by attempt 1) and paid for B, and succeeds.
    second, token = counting(2, prior)
    replayed()
    paid(A, "m")
    paid(B, "m")
    done(token)
    assert (second.fresh, second.replayed) == (B, A)
    result = second.settled(LeafResult(output="ok", usage=A + B, attempt=2))
    assert (result.usage, result.failed_attempts, result.spent) == (B, prior, A + B)
    # Had it failed instead, it would add only what it paid for itself.
    assert [a.usage for a in second.failures()] == [A, B]


def test_a_replay_nobody_counted_counts_on_the_attempt_served_it() -> None:
    # Attempt 1's worker died after A arrived: nothing said it, so attempt 2 counts it.
    second, token = counting(2, [])
    replayed()
    paid(A, "m")
    done(token)
    assert second.settled(LeafResult(output="ok", usage=A, attempt=2)).spent == A
    assert [a.usage for a in second.failures()] == [A]
    # Outside an attempt (no wrapper counting), nothing is counted and nothing fails.
    paid(A, "m")
    replayed()
