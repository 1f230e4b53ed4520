"""Tools of the research examples.

`search` and `calculator` serve the `researcher` agent (researcher.yaml/.py); `find_evidence` and
`count_unsupported` serve the `research` pipeline (research.yaml/.py).
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Any

import durapipe as dp

CORPUS = {
    "bridge": "The council approved the new bridge on Monday; it will cost 40 million dollars.",
    "library": "The city library lends 120000 books a year and opens seven days a week.",
    "river": "The river is 312 kilometres long and floods about once every 12 years.",
    "budget": "The city's yearly budget is 900 million dollars, 4 percent of it for transport.",
}
_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def search(query: str) -> list[str]:
    """Search the city's document corpus; returns the passages that share words with the query."""
    words = set(re.findall(r"\w+", query.lower()))
    hits = [text for text in CORPUS.values() if words & set(re.findall(r"\w+", text.lower()))]
    return hits[:3]


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression such as `40 * 1.5 / 3` (+, -, *, /, ** and parentheses)."""
    try:
        return float(_evaluate(ast.parse(expression, mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError) as err:
        # The model can fix its expression: tell it what went wrong instead of failing the run.
        raise dp.ToolError(f"cannot evaluate {expression!r}: {err}") from None


def _evaluate(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    raise ValueError("only numbers and + - * / ** are allowed")


def find_evidence(claim_text: str, article: str) -> str:
    """The article's sentences that share a word with the claim (a stand-in for a search tool)."""
    words = {w.strip(".,").lower() for w in claim_text.split() if len(w) > 3}
    sentences = [s.strip() for s in article.split(".") if s.strip()]
    hits = [s for s in sentences if words & {w.strip(",").lower() for w in s.split()}]
    return ". ".join(hits) or "no evidence found"


def count_unsupported(checks: list[Any]) -> int:
    """How many checked claims the evidence does not support."""
    return sum(1 for check in checks if not check["supported"])
