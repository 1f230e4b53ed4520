"""Tools for the observability tests: one fails once per token, one always fails."""

from __future__ import annotations

SEEN: set[str] = set()


def fail_first(token: str) -> str:
    """Fail with ConnectionError the first time a token is seen, then succeed."""
    if token not in SEEN:
        SEEN.add(token)
        raise ConnectionError(f"first call for {token} failed")
    return token


def always_fail(fail_first: str) -> str:
    """Always fail with ValueError."""
    raise ValueError(f"cannot handle {fail_first}")


def shout(always_fail: str) -> str:
    """Upper-case the text (never reached: the step before it fails)."""
    return always_fail.upper()
