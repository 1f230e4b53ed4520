"""What the layout tests of the SQLite stores share: a worker refused at start, and the sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

import durapipe as dp
from durapipe._errors import ConfigError
from durapipe.stores._schema import SCHEMA_VERSION


async def refusal_at_start(temporal_address: str, task_queue: str) -> str:
    """The sentence a worker built with this process's settings fails with."""
    client = await dp.connect(temporal_address)
    with pytest.raises(ConfigError) as refused:
        dp.build_worker(client, task_queue=task_queue)
    return str(refused.value)


def newer_layout(variable: str, store: str, path: Path) -> str:
    """The sentence refusing ``path``, a ``store`` file of a newer durapipe named by ``variable``."""
    return (
        f"{variable}: the {store} file '{path}' was written by a newer durapipe "
        f"(layout {SCHEMA_VERSION + 1}; this one reads up to {SCHEMA_VERSION}): upgrade durapipe "
        f"on this worker or set {variable} to another file"
    )
