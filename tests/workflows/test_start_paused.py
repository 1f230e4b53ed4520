"""A run paused when it starts a child run (a batch's next chunk, once the chunk before it ended)
starts the child paused (patch `durapipe.start-paused`): before, the pause was signalled to the
child once it had started, and the child's first items started before the signal reached it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import durapipe as dp
from durapipe.workflows import _workflow
from durapipe.workflows._patches import START_PAUSED_PATCH
from tests import control_tools
from tests.support import eventually, history_events, patch_markers, replays_clean

# Under a budget the chunks of a batch run one after another, each with all of max_concurrency:
# the two items of the first chunk run at once, and the second chunk starts when they end.
PIPES = """
pipes:
  chunked:
    kind: batch
    inputs: {numbers: 'list[integer]'}
    over: numbers
    item: n
    pipe: gate
    chunk_size: 2
    max_concurrency: 2
  gate:
    kind: tool
    function: tests.control_tools:gated
    inputs: {n: integer}
    output: integer
"""


async def _paused_between_chunks(
    address: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dp.Client, str, list[int]]:
    """Run `chunked` over 0..3, paused while its first chunk's two items run: the run id, and the
    items started in the 2 s after the first chunk ended (the run still paused)."""
    gate = asyncio.Event()
    monkeypatch.setattr(control_tools, "GATE", [gate])
    monkeypatch.setattr(control_tools, "GATED", [])
    pipeline = dp.load_yaml(PIPES)
    client = await dp.connect(address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=queue):
        handle = await dp.start(
            client, pipeline, "chunked", {"numbers": [0, 1, 2, 3]}, task_queue=queue,
            budget_usd=1.0,
        )  # fmt: skip

        async def first_chunk_running() -> bool:
            return sorted(control_tools.GATED) == [0, 1]

        await eventually(first_chunk_running, "the first chunk's two items to start")
        await handle.pause()
        await eventually(handle.paused, "the run to say it is paused")
        gate.set()  # the first chunk ends; the run, paused, starts the second

        async def second_chunk_started() -> bool:
            events = await history_events(client, handle.run_id)
            started = [
                e for e in events
                if e.HasField("child_workflow_execution_started_event_attributes")
            ]  # fmt: skip
            return len(started) == 2

        await eventually(second_chunk_started, "the second chunk's run to start")

        async def more_started() -> bool:
            return len(control_tools.GATED) > 2

        with contextlib.suppress(TimeoutError):  # for 2 s: nothing more may start while paused
            await asyncio.wait_for(eventually(more_started, "another item to start"), 2.0)
        started_while_paused = sorted(control_tools.GATED)[2:]
        with contextlib.suppress(dp.RunNotFound):  # before the change it could end while paused
            assert await handle.paused()
            await handle.resume()
        result = await handle.result()
    assert result.output == [0, 1, 2, 3]
    return client, handle.run_id, started_while_paused


async def test_a_chunk_started_while_the_run_is_paused_starts_no_item_until_resumed(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, run_id, started = await _paused_between_chunks(
        temporal_address, task_queue, monkeypatch
    )
    # Before the change: [2, 3], the pause signalled once the chunk's run had started its items
    # (and, the gate open, the run could end while paused).
    assert started == []
    assert patch_markers(await history_events(client, run_id)) == [START_PAUSED_PATCH]
    await replays_clean(client, run_id, histories=3)  # the run and its two chunks' runs


async def test_a_run_recorded_before_the_change_signals_the_pause_and_replays_as_it_ran(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The code before the change, as a worker of the previous release ran it: the patch unknown.
    before = _workflow._TemporalRuntime.patched

    def patched(self: _workflow._TemporalRuntime, change: str) -> bool:
        return False if change == START_PAUSED_PATCH else before(self, change)

    with monkeypatch.context() as old:
        old.setattr(_workflow._TemporalRuntime, "patched", patched)
        client, run_id, _ = await _paused_between_chunks(temporal_address, task_queue, monkeypatch)
    assert patch_markers(await history_events(client, run_id)) == []
    await replays_clean(client, run_id, histories=3)  # this code finds no marker: as it ran
