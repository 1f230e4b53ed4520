"""Issue 15, item 2: a payload-store claim cannot make a worker read a file outside its store."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ExternalStorage,
    StorageDriverClaim,
    StorageDriverStoreContext,
)

import durapipe as dp
from durapipe.adapters import WORKFLOW_NAME, pipe_run
from durapipe.stores._payloads import STORE_ENV, LocalFileDriver

PIPES = """
pipes:
  echo:
    kind: llm
    inputs: {text: text}
    prompt: "{{ text }}"
"""


class PathClaimingDriver(LocalFileDriver):
    """An attacker's client: it stores its payload outside the store and claims it by path."""

    def __init__(self, folder: Path, outside: Path) -> None:
        super().__init__(folder)
        self.outside = outside

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        claims = []
        for index, payload in enumerate(payloads):
            target = self.outside / f"evil{index}.bin"
            target.write_bytes(payload.SerializeToString(deterministic=True))
            claims.append(StorageDriverClaim(claim_data={"sha256": f"../outside/{target.name}"}))
        return claims


async def test_a_run_whose_input_claims_a_path_is_refused_by_the_worker(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, outside = tmp_path / "store", tmp_path / "outside"
    store.mkdir()
    outside.mkdir()
    monkeypatch.setenv(STORE_ENV, str(store))
    pipeline = dp.load_yaml(PIPES)
    worker_client = await dp.connect(temporal_address, pipeline=pipeline)
    converter = dataclasses.replace(
        pydantic_data_converter,
        external_storage=ExternalStorage(
            drivers=[PathClaimingDriver(store, outside)], payload_size_threshold=1
        ),
    )
    attacker = await Client.connect(temporal_address, data_converter=converter)
    run = pipe_run(pipeline, "echo", {"text": "read outside the store"})
    async with dp.build_worker(worker_client, task_queue=task_queue):
        handle = await attacker.start_workflow(
            WORKFLOW_NAME, run, id=run.run_id, task_queue=task_queue
        )
        try:
            failure = await asyncio.wait_for(_first_task_failure(worker_client, run.run_id), 60)
        finally:
            await handle.terminate("test over")
    assert "payload claim refused" in failure
    assert "is not a SHA-256 digest" in failure


async def _first_task_failure(client: Client, run_id: str) -> str:
    """The message of the run's first failed workflow task (the worker could not read its input).

    Raises:
        AssertionError: the run completed, so the worker read the claimed file.
    """
    handle = client.get_workflow_handle(run_id)
    while True:
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                return str(event.workflow_task_failed_event_attributes.failure.message)
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
                raise AssertionError("the worker read the claimed file and ran the workflow")
        await asyncio.sleep(0.2)  # the worker's next workflow task is not in the history yet


def _read(folder: Path, claim: str) -> subprocess.CompletedProcess[str]:
    """Read ``claim`` in a child process with 2 GiB of address space (``/dev/zero`` is endless)."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from temporalio.converter import StorageDriverClaim\n"
        "from durapipe.stores._payloads import LocalFileDriver\n"
        "from durapipe._errors import ConfigError\n"
        "try:\n"
        f"    LocalFileDriver({str(folder)!r})._retrieve([StorageDriverClaim(claim_data={{'sha256': {claim!r}}})])\n"
        "except ConfigError as err:\n"
        "    print('refused:', err)\n"
        "else:\n"
        "    print('read')\n"
    )
    env = {**os.environ, "DURAPIPE_PAYLOAD_MAX": "1KiB"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def test_claims_that_are_not_a_payload_of_the_store_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (tmp_path / "secret.bin").write_bytes(Payload(data=b"secret").SerializeToString())
    big = Payload(data=b"x" * 4096).SerializeToString()
    (store / hashlib.sha256(big).hexdigest()).write_bytes(big)
    wrong = "0" * 64
    (store / wrong).write_bytes(Payload(data=b"not what the digest says").SerializeToString())
    link = "1" * 64
    (store / link).symlink_to("/dev/zero")
    cases = {
        "../secret.bin": "is not a SHA-256 digest",
        str(tmp_path / "secret.bin"): "is not a SHA-256 digest",
        "/dev/zero": "is not a SHA-256 digest",
        link: "refused",  # a link out of the store, here to an endless device
        hashlib.sha256(big).hexdigest(): "more than DURAPIPE_PAYLOAD_MAX",
        wrong: "does not match",
    }
    for claim, reason in cases.items():
        done = _read(store, claim)
        assert done.stdout.startswith("refused:") and reason in done.stdout, (claim, done)
    good = Payload(data=b"ok").SerializeToString()
    (store / hashlib.sha256(good).hexdigest()).write_bytes(good)
    assert _read(store, hashlib.sha256(good).hexdigest()).stdout.strip() == "read"


def test_the_blob_store_reads_only_regular_files_matching_their_address(tmp_path: Path) -> None:
    store = dp.stores.LocalBlobStore(tmp_path / "blobs")
    ref = store.put(b"a document", media_type="text/plain")
    assert store.get(ref) == b"a document"
    linked = dp.Blob(blob="sha256:" + "1" * 64, media_type="text/plain")
    store.path(linked).parent.mkdir(parents=True, exist_ok=True)
    store.path(linked).symlink_to("/dev/zero")
    altered = dp.Blob(blob="sha256:" + "2" * 64, media_type="text/plain")
    store.path(altered).parent.mkdir(parents=True, exist_ok=True)
    store.path(altered).write_bytes(b"not what the address says")
    for bad, reason in ((linked, "cannot be read"), (altered, "does not match its address")):
        with pytest.raises(dp.stores.BlobNotFound, match=reason):
            store.get(bad)
