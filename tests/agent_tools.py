"""Tools for agent tests: a counter that records each call in a ledger file, and a failing tool."""

from __future__ import annotations

import json
import os

import durapipe as dp


def note(text: str) -> str:
    """Write a note down; returns how many characters it has."""
    ledger = os.environ.get("DURAPIPE_TEST_TOOL_LEDGER")
    if ledger:
        with open(ledger, "a", encoding="utf-8") as file:
            file.write(json.dumps({"tool": "note", "text": text}) + "\n")
    return f"noted {len(text)} characters"


def lookup(key: str) -> str:
    """Look a key up; only 'known' exists."""
    if key != "known":
        raise dp.ToolError(f"no entry '{key}'; try 'known'")
    return "the value"
