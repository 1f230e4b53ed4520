"""A tool whose failure message quotes its input, as lookups often do."""

from __future__ import annotations


def lookup(customer: str) -> str:
    """Fail the way a record lookup does, naming what it looked for."""
    raise LookupError(f"no record found for {customer}")
