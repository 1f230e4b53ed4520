"""Tools used by the `research` example pipeline (both spellings import them from here)."""

from typing import Any


def find_evidence(claim_text: str, article: str) -> str:
    """The article's sentences that share a word with the claim (a stand-in for a search tool)."""
    words = {w.strip(".,").lower() for w in claim_text.split() if len(w) > 3}
    sentences = [s.strip() for s in article.split(".") if s.strip()]
    hits = [s for s in sentences if words & {w.strip(",").lower() for w in s.split()}]
    return ". ".join(hits) or "no evidence found"


def count_unsupported(checks: list[Any]) -> int:
    """How many checked claims the evidence does not support."""
    return sum(1 for check in checks if not check["supported"])
