"""Functions the test bundles' PipeFunc pipes call (the worker registers them by dotted path)."""

from __future__ import annotations

from typing import Any


def word_count(text: str) -> dict[str, Any]:
    """How many words ``text`` has, as a WordCount concept."""
    return {"words": len(text.split()), "text": text}


def shout(text: str) -> str:
    """``text`` in capitals."""
    return text.upper()


def total(numbers: list[float]) -> float:
    """The sum of ``numbers``."""
    return float(sum(numbers))


def tags_of(text: str) -> list[str]:
    """The distinct lowercase words of ``text`` longer than 4 letters, sorted."""
    return sorted({w.strip(".,!?").lower() for w in text.split() if len(w.strip(".,!?")) > 4})
