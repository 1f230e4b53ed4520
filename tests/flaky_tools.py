"""Tools for tests: one fails a given number of times, then succeeds."""

import asyncio

CALLS: list[int] = []
# Set by `slow` when a call starts, if a test put an event here.
STARTED: asyncio.Event | None = None


def flaky(failures: int) -> str:
    """Fail with ConnectionError for the first ``failures`` calls."""
    CALLS.append(failures)
    if len(CALLS) <= failures:
        raise ConnectionError(f"call {len(CALLS)} failed")
    return f"ok after {len(CALLS)} calls"


def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


def refuse(question: str) -> str:
    """Always fail with ConnectionError."""
    raise ConnectionError(f"refused: {question}")


async def slow(seconds: float) -> str:
    """Sleep ``seconds`` on the first call, answer at once on later ones."""
    CALLS.append(1)
    if STARTED is not None:
        STARTED.set()
    if len(CALLS) == 1:
        await asyncio.sleep(seconds)
    return f"answered on call {len(CALLS)}"
