"""A leaf result is dumped to JSON once: the checkpoint store's bytes are what Temporal receives.

The store dumps the result it keeps; the activity returns that very object, and durapipe's payload
converter sends the same bytes instead of dumping it again. The bytes must be those temporalio's
pydantic converter makes, in process and in a worker on the real dev server.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

import durapipe as dp
from durapipe.runtime._calls import LeafResult, Usage, dumped_json
from durapipe.stores import SqliteCheckpoints, _payloads
from durapipe.stores._checkpoints import _Codec
from durapipe.worker import durapipe_converter
from tests.support import history_events

RESULTS = [
    LeafResult(output="an answer"),
    LeafResult(
        output={"claims": [{"text": "é", "n": 2}], "none": None},
        usage=Usage(input_tokens=12, output_tokens=30, cost_usd=4e-5),
        model="openai/gpt-x",
        attempt=3,
    ),
    LeafResult(output=["a", 1, 2.5, True], cache_hit=True, usage=Usage(output_tokens=1)),
]


@pytest.fixture
def reused(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The payloads durapipe's converter sent as a dumped result's bytes, in order."""
    sent: list[bytes] = []

    def noting(value: object) -> bytes | None:
        data = dumped_json(value)
        if data is not None:
            sent.append(data)
        return data

    monkeypatch.setattr(_payloads, "dumped_json", noting)
    return sent


@pytest.mark.parametrize("result", RESULTS)
async def test_a_result_the_store_dumped_goes_out_as_the_pydantic_converters_bytes(
    result: LeafResult, reused: list[bytes]
) -> None:
    expected = pydantic_data_converter.payload_converter.to_payloads([result])
    converter = durapipe_converter().payload_converter

    async def activity() -> list[Any]:
        stored = _Codec(None).dump(result)
        payloads = converter.to_payloads([result])
        assert stored.encode() == payloads[0].data
        return payloads

    assert await asyncio.create_task(activity()) == expected
    assert reused == [expected[0].data]
    # Another task, or another object with the same content, is dumped as before.
    assert converter.to_payloads([result]) == expected
    assert converter.to_payloads([result.model_copy()]) == expected
    assert len(reused) == 1


async def test_a_workers_activity_result_is_the_checkpoint_stores_json(
    temporal_address: str, task_queue: str, tmp_path: Path, reused: list[bytes]
) -> None:
    ask = dp.llm("ask", model="durapipe/offline", inputs={"note": str}, prompt="Sum up: {{ note }}")
    pipeline = dp.pipeline(
        dp.batch("notes", inputs={"notes": list[str]}, over="notes", item="note", pipe=ask)
    )
    store = SqliteCheckpoints(tmp_path / "checkpoints.sqlite")
    client = await dp.connect(temporal_address, pipeline=pipeline, checkpoints=store)
    run_id = f"once-{uuid.uuid4().hex[:8]}"
    notes = [f"note {i}" for i in range(3)]
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client, pipeline, "notes", {"notes": notes}, run_id=run_id, task_queue=task_queue
        )
    assert len(result.output) == len(notes)
    with sqlite3.connect(store.path) as db:
        kept = sorted(row[0].encode() for row in db.execute("SELECT result FROM checkpoints"))
    completed = sorted(
        event.activity_task_completed_event_attributes.result.payloads[0].data
        for event in await history_events(client, run_id)
        if event.HasField("activity_task_completed_event_attributes")
    )
    assert len(kept) == len(notes)
    assert completed == kept == sorted(reused)
