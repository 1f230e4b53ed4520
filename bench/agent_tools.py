"""The agent bench's one tool, registered on both sides' workers (`bench.agent`).

Cheap on purpose (the bench prices the loop around it, not the tool): a string built from the query.
When ``BENCH_AGENT_TOOL_LEDGER`` names a file, each call appends one line to it (``pid``, then the
query) with a single ``os.write`` on an ``O_APPEND`` descriptor, as the offline model's ledger
does: the bench counts each side's tool calls there, not from what it expected. Standard library
only, so importing it adds nothing to a worker.
"""

from __future__ import annotations

import os

LEDGER_ENV = "BENCH_AGENT_TOOL_LEDGER"


async def lookup(query: str) -> str:
    """The facts filed under ``query`` (a made-up one-line record)."""
    ledger = os.environ.get(LEDGER_ENV)
    if ledger:
        descriptor = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, f"{os.getpid()} {query}\n".encode())
        finally:
            os.close(descriptor)
    return f"record {len(query)}: {query[:40]}"
