"""Tools for tests: one fails a given number of times, then succeeds."""

CALLS: list[int] = []


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
