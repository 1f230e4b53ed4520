"""The worker's data converter: bound to a serialization or store context only when a part of it
reads the context (then once per context), in process and in a worker on the real dev server."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Self

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import (
    ActivitySerializationContext,
    ExternalStorage,
    PayloadCodec,
    SerializationContext,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
    StorageDriverWorkflowInfo,
    WithSerializationContext,
    WorkflowSerializationContext,
)

import durapipe as dp
from durapipe.stores._payloads import (
    STORE_ENV,
    THRESHOLD_ENV,
    LocalFileDriver,
    reads_store_context,
)
from durapipe.worker import ContextCachingConverter, DurapipePlugin, durapipe_converter
from tests.support import history_events

LEAVES = 12


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


class ContextCodec(PayloadCodec, WithSerializationContext):
    """A user's codec that reads its context: notes the context of every payload it encodes."""

    def __init__(self, seen: list[SerializationContext | None], context: SerializationContext | None = None) -> None:  # fmt: skip
        self.seen = seen
        self.context = context

    def with_context(self, context: SerializationContext) -> Self:
        return type(self)(self.seen, context)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.seen.extend(self.context for _ in payloads)
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


class ContextDriver(StorageDriver):
    """A user's storage driver that reads the store context: keeps payloads in memory and notes
    whose they are."""

    def __init__(self) -> None:
        self.payloads: list[Payload] = []
        self.targets: list[object] = []

    def name(self) -> str:
        return "tests.memory"

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        self.targets.extend(context.target for _ in payloads)
        self.payloads.extend(payloads)
        start = len(self.payloads) - len(payloads)
        return [StorageDriverClaim(claim_data={"i": str(start + i)}) for i in range(len(payloads))]

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return [self.payloads[int(c.claim_data["i"])] for c in claims]


@pytest.fixture
def payload_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A payload store of this test's own, with a threshold a few kilobytes pass."""
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "payloads"))
    monkeypatch.setenv(THRESHOLD_ENV, "1KiB")
    return tmp_path / "payloads"


async def test_durapipes_converter_is_its_own_binding_and_still_stores_large_payloads(
    payload_store: Path,
) -> None:
    converter = durapipe_converter()
    assert isinstance(converter, ContextCachingConverter)
    assert converter.with_context(_activity("ask")) is converter
    assert converter.with_context(WorkflowSerializationContext("default", "brief-1")) is converter
    assert converter._with_contexts(_activity("ask"), _store("brief-1")) is converter
    assert not reads_store_context(converter.external_storage)

    text = "x" * 5000
    [payload] = await converter.encode([text])
    assert payload.ByteSize() < 1000  # a claim, not the text
    assert any(payload_store.rglob("*")), "the payload store holds the text"
    assert await converter.decode([payload], [str]) == [text]


async def test_a_context_aware_codec_is_bound_once_per_context_and_sees_it(
    payload_store: Path,
) -> None:
    seen: list[SerializationContext | None] = []
    converter = durapipe_converter(ContextCodec(seen))
    bound = converter.with_context(_activity("ask"))
    assert bound is not converter
    assert converter.with_context(_activity("ask")) is bound  # an equal context: the same copy
    assert converter.with_context(_activity("other")) is not bound
    # durapipe's store reads no store context: the codec's binding is kept, not copied again.
    assert bound._with_store_context(_store("brief-1")) is bound
    await bound.encode(["small"])
    assert seen == [_activity("ask")]


async def test_a_store_driver_that_reads_the_store_context_is_bound_to_it(
    payload_store: Path,
) -> None:
    driver = ContextDriver()
    converter = dataclasses.replace(
        durapipe_converter(),
        external_storage=ExternalStorage(drivers=[driver], payload_size_threshold=1024),
    )
    assert reads_store_context(converter.external_storage)
    stored = converter._with_store_context(_store("brief-1"))
    assert converter._with_store_context(_store("brief-1")) is stored
    [payload] = await stored.encode(["y" * 5000])
    assert driver.targets == [_store("brief-1").target]
    assert await stored.decode([payload], [str]) == ["y" * 5000]


async def test_a_subclass_of_durapipes_driver_that_overrides_store_is_bound(
    payload_store: Path, tmp_path: Path
) -> None:
    # durapipe's drivers say they read no store context for their own ``store``; a user's
    # subclass with a ``store`` of its own may read it, so it is bound as the SDK binds it.
    targets: list[object] = []

    class Noting(LocalFileDriver):
        async def store(
            self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
        ) -> list[StorageDriverClaim]:
            targets.extend(context.target for _ in payloads)
            return await super().store(context, payloads)

    class Plain(LocalFileDriver):
        pass

    def storage(driver: StorageDriver) -> ExternalStorage:
        return ExternalStorage(drivers=[driver], payload_size_threshold=1024)

    assert not reads_store_context(storage(LocalFileDriver(tmp_path / "a")))
    assert not reads_store_context(storage(Plain(tmp_path / "b")))
    converter = dataclasses.replace(
        durapipe_converter(), external_storage=storage(Noting(tmp_path / "c"))
    )
    assert reads_store_context(converter.external_storage)
    await converter._with_store_context(_store("brief-1")).encode(["z" * 5000])
    assert targets == [_store("brief-1").target]


def _pipeline() -> dp.Pipeline:
    ask = dp.llm("ask", model="durapipe/offline", inputs={"note": str}, prompt="Sum up: {{ note }}")
    return dp.pipeline(
        dp.batch("notes", inputs={"notes": list[str]}, over="notes", item="note", pipe=ask)
    )


def _notes(run_id: str) -> list[str]:
    # Each over the threshold: every leaf's input goes through the payload store.
    return [f"{run_id} note {i}: " + "words " * 400 for i in range(LEAVES)]


@pytest.fixture
def bindings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The converters and external storages built while the test runs (every bound copy is one)."""
    made: list[str] = []
    for cls in (ContextCachingConverter, ExternalStorage):
        post_init = cls.__post_init__

        def counted(self: object, post_init: Callable[[object], None] = post_init) -> None:
            made.append(type(self).__name__)
            post_init(self)

        monkeypatch.setattr(cls, "__post_init__", counted)
    yield made


async def _run_notes(
    client: Client,
    pipeline: dp.Pipeline,
    task_queue: str,
    run_id: str,
    worker_started: Callable[[], object] = lambda: None,
) -> None:
    """Run the batch of `LEAVES` notes on a worker of ``client`` and check every leaf answered."""
    async with dp.build_worker(client, task_queue=task_queue):
        worker_started()
        result = await dp.run(
            client,
            pipeline,
            "notes",
            {"notes": _notes(run_id)},
            run_id=run_id,
            task_queue=task_queue,
        )
    assert len(result.output) == LEAVES


async def test_a_worker_binds_no_converter_per_activity_and_large_payloads_go_to_the_store(
    temporal_address: str, task_queue: str, payload_store: Path, bindings: list[str]
) -> None:
    pipeline = _pipeline()
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"bind-{uuid.uuid4().hex[:8]}"
    # Once the worker runs, the client's and worker's own converters are made: count from there.
    await _run_notes(client, pipeline, task_queue, run_id, worker_started=bindings.clear)
    assert bindings == [], f"{len(bindings)} converter parts built over {LEAVES} activities"
    converter = client.data_converter
    assert isinstance(converter, ContextCachingConverter)
    assert converter._by_context == {} and converter._by_store == {}  # nothing kept either
    # Each leaf's input was stored: one file each, under a folder named by its digest's first two
    # hex digits (the folders alone undercount: 12 digests share a prefix about 1 time in 4).
    assert len(list(payload_store.glob("*/*"))) >= LEAVES
    largest = max(event.ByteSize() for event in await history_events(client, run_id))
    assert largest <= 1024, f"a history event carries {largest} bytes"


async def test_a_context_aware_codec_in_a_worker_sees_each_activitys_and_workflows_context(
    temporal_address: str, task_queue: str, payload_store: Path
) -> None:
    pipeline = _pipeline()
    seen: list[SerializationContext | None] = []
    client = await Client.connect(
        temporal_address, plugins=[DurapipePlugin(pipeline, codec=ContextCodec(seen))]
    )
    run_id = f"ctx-{uuid.uuid4().hex[:8]}"
    await _run_notes(client, pipeline, task_queue, run_id)
    activities = {
        (c.workflow_id, c.activity_type)
        for c in seen
        if isinstance(c, ActivitySerializationContext)
    }
    ids = {
        c.activity_id
        for c in seen
        if isinstance(c, ActivitySerializationContext) and c.activity_type == "durapipe.llm"
    }
    workflows = {c.workflow_id for c in seen if isinstance(c, WorkflowSerializationContext)}
    # A batch of a few items asks its worker nothing (the steps' cap, a local activity, is asked
    # only by a run that needs more steps than every worker allows).
    assert activities == {(run_id, "durapipe.llm")}, activities
    assert len(ids) == LEAVES, ids  # every leaf's own activity id
    assert run_id in workflows, workflows
    assert len(list(payload_store.glob("*/*"))) >= LEAVES  # large payloads still stored
