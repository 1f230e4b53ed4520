"""The worker's data converter: bound to each serialization and store context once, then reused."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.converter import (
    ActivitySerializationContext,
    StorageDriverStoreContext,
    StorageDriverWorkflowInfo,
)

from durapipe.stores._payloads import STORE_ENV, THRESHOLD_ENV
from durapipe.worker import ContextCachingConverter, durapipe_converter


def _activity(activity_id: str) -> ActivitySerializationContext:
    return ActivitySerializationContext(
        namespace="default",
        activity_id=activity_id,
        activity_type="durapipe.llm",
        activity_task_queue="durapipe",
        workflow_id="brief-1",
        workflow_type="durapipe.pipe",
        is_local=False,
    )


def _store(workflow_id: str) -> StorageDriverStoreContext:
    return StorageDriverStoreContext(
        target=StorageDriverWorkflowInfo(namespace="default", id=workflow_id)
    )


async def test_each_context_is_bound_once_and_large_payloads_still_go_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STORE_ENV, str(tmp_path))
    monkeypatch.setenv(THRESHOLD_ENV, "1KB")
    converter = durapipe_converter()
    assert isinstance(converter, ContextCachingConverter)

    bound = converter.with_context(_activity("ask"))
    assert converter.with_context(_activity("ask")) is bound  # an equal context: the same copy
    stored = bound._with_store_context(_store("brief-1"))
    assert bound._with_store_context(_store("brief-1")) is stored
    other = bound._with_store_context(_store("brief-2"))
    assert other is not stored
    assert other.external_storage is not None and stored.external_storage is not None
    assert other.external_storage._store_context == _store("brief-2")
    assert stored.external_storage._store_context == _store("brief-1")

    # A bound copy still claim-checks a large payload and reads it back.
    text = "x" * 5000
    [payload] = await stored.encode([text])
    assert payload.ByteSize() < 1000  # a claim, not the text
    assert any(tmp_path.rglob("*")), "the payload store holds the text"
    assert await stored.decode([payload], [str]) == [text]
