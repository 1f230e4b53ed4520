"""Fixtures of the MTHDS tests: one worker, on the session's dev server, for every bundle."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import durapipe as dp

BUNDLES = Path(__file__).resolve().parent / "bundles"
PACKAGES = Path(__file__).resolve().parent / "packages"
INVALID = Path(__file__).resolve().parent / "invalid"
sys.path.insert(0, str(BUNDLES))  # the PipeFunc functions of the bundles (mthds_funcs)

import mthds_funcs  # noqa: E402

# The functions the bundles' PipeFunc pipes name, registered on the one worker by reference.
TOOLS = {
    f"mthds_funcs:{name}": getattr(mthds_funcs, name)
    for name in ("word_count", "shout", "total", "tags_of")
}


@pytest.fixture(scope="session")
async def mthds_worker(temporal_address: str) -> AsyncIterator[tuple[object, str]]:
    """A client and the task queue of one worker that runs every test bundle."""
    task_queue = f"mthds-{uuid.uuid4().hex[:10]}"
    client = await dp.connect(temporal_address, tools=TOOLS)
    async with dp.build_worker(client, task_queue=task_queue):
        yield client, task_queue
