"""The content store's S3 driver against a real S3-speaking server (moto, see conftest.py): the
payload and blob stores on one bucket, claims of the earlier S3 driver, and failures at start."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid
from typing import Any

import boto3
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    ExternalStorage,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
    StorageDriverWorkflowInfo,
)

import durapipe as dp
from durapipe.ops._dev import free_port
from durapipe.stores._content import ContentNotFound, ContentRefused, Limit
from durapipe.stores._payloads import EarlierS3Claims, external_storage, reads_store_context
from durapipe.testing import text_pdf


def _objects(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def test_put_get_exists_by_content_hash_with_reads_checked(s3_bucket: str) -> None:
    store = dp.stores.open_content_store(f"s3://{s3_bucket}/some/prefix/")
    assert isinstance(store, dp.stores.S3ContentStore)
    digest = store.put(b"hello")
    assert digest == hashlib.sha256(b"hello").hexdigest()
    assert store.put(b"hello") == digest  # the same bytes, the same object
    assert store.exists(digest) and store.get(digest) == b"hello"
    assert _objects(s3_bucket, "some/prefix/") == {f"some/prefix/{digest}": b"hello"}
    missing = "1" * 64
    assert not store.exists(missing)
    with pytest.raises(ContentNotFound):
        store.get(missing)
    with pytest.raises(ContentRefused, match="more than DURAPIPE_PAYLOAD_MAX=3"):
        store.get(digest, limit=Limit(3, "DURAPIPE_PAYLOAD_MAX"))
    altered = "2" * 64
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"some/prefix/{altered}", Body=b"other")
    with pytest.raises(ContentRefused, match="does not match its address"):
        store.get(altered)
    with pytest.raises(ContentRefused, match="is not a SHA-256 digest"):
        store.get("../" + digest)


async def test_a_run_keeps_its_large_payloads_and_blobs_in_the_bucket(
    s3_bucket: str,
    temporal_address: str,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DURAPIPE_PAYLOAD_STORE", f"s3://{s3_bucket}/payloads")
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", f"s3://{s3_bucket}/blobs")
    monkeypatch.setenv("DURAPIPE_PAYLOAD_THRESHOLD", "1KiB")
    pipeline = dp.pipeline(
        dp.llm("echo", inputs={"text": str}, prompt="Repeat: {{ text }}"), dp.extract("read")
    )
    client = await dp.connect(temporal_address, pipeline=pipeline)
    # Two drivers (writing, and reading the earlier claims) and a selector: none reads the store
    # context, so the worker's converter is never copied per workflow or activity.
    assert not reads_store_context(client.data_converter.external_storage)
    text = "a long input " * 400  # 5 KiB: above the threshold
    async with dp.build_worker(client, task_queue=task_queue):
        echoed = await dp.run(client, pipeline, "echo", {"text": text}, task_queue=task_queue)
        pdf = text_pdf(["kept in s3"])
        read = await dp.run(client, pipeline, "read", {"document": pdf}, task_queue=task_queue)
    assert isinstance(echoed.output, str) and read.output == [{"page": 1, "text": "kept in s3"}]
    payloads = _objects(s3_bucket, "payloads/")
    # The run's input went to the bucket (its claim to the history), named by its digest.
    assert any(text.encode() in data for data in payloads.values())
    assert all(key == f"payloads/{hashlib.sha256(d).hexdigest()}" for key, d in payloads.items())
    assert f"blobs/{hashlib.sha256(pdf).hexdigest()}" in _objects(s3_bucket, "blobs/")


class _Boto3Client(S3StorageDriverClient):
    """temporalio's S3 driver over plain boto3 (its own client needs aioboto3, which we dropped)."""

    def __init__(self) -> None:
        self.s3: Any = boto3.client("s3")

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        await asyncio.to_thread(lambda: self.s3.put_object(Bucket=bucket, Key=key, Body=data))

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        listed = await asyncio.to_thread(
            lambda: self.s3.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
        )
        return any(o["Key"] == key for o in listed)

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        answer = await asyncio.to_thread(lambda: self.s3.get_object(Bucket=bucket, Key=key))
        return bytes(answer["Body"].read())


async def test_claims_written_by_the_earlier_s3_driver_still_resolve(s3_bucket: str) -> None:
    earlier = S3StorageDriver(client=_Boto3Client(), bucket=s3_bucket)
    old = dataclasses.replace(
        pydantic_data_converter,
        external_storage=ExternalStorage(drivers=[earlier], payload_size_threshold=1),
    )
    now = dataclasses.replace(
        pydantic_data_converter, external_storage=external_storage(f"s3://{s3_bucket}", 1)
    )
    value = {"answer": "recorded before the stores shared one driver " * 50}
    recorded = await old.encode([value])
    assert recorded[0].ByteSize() < 1024  # a claim, not the value
    assert await now.decode(recorded, [dict]) == [value]
    # A claim made inside a workflow carries its namespace, type and ids in the key.
    payload = Payload(data=b"x" * 2000)
    target = StorageDriverWorkflowInfo(namespace="default", type="durapipe.pipe", id="r/1")
    [claim] = await earlier.store(StorageDriverStoreContext(target=target), [payload])
    assert "/wt/durapipe.pipe/" in claim.claim_data["key"]
    reader = EarlierS3Claims(dp.stores.S3ContentStore(s3_bucket))
    context = StorageDriverRetrieveContext()
    assert await reader.retrieve(context, [claim]) == [payload]
    # A claim is client input: it may not point a worker at another bucket or object.
    elsewhere = dataclasses.replace(claim, claim_data={**claim.claim_data, "bucket": "other"})
    with pytest.raises(dp.ConfigError, match="payload claim refused"):
        await reader.retrieve(context, [elsewhere])
    loose = {**claim.claim_data, "key": "secrets/" + claim.claim_data["hash_value"]}
    with pytest.raises(dp.ConfigError, match="payload claim refused"):
        await reader.retrieve(context, [dataclasses.replace(claim, claim_data=loose)])


async def test_a_missing_bucket_or_an_unreachable_server_fails_the_worker_at_start(
    s3_bucket: str, temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await dp.connect(temporal_address, pipeline=dp.pipeline(dp.llm("ask", prompt="hi")))
    missing = f"nobucket-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DURAPIPE_PAYLOAD_STORE", f"s3://{missing}")
    with pytest.raises(dp.ConfigError) as caught:
        dp.build_worker(client, task_queue=task_queue)
    assert str(caught.value).startswith(
        f"DURAPIPE_PAYLOAD_STORE: cannot write to or reach s3://{missing} ("
    )
    assert "NoSuchBucket" in str(caught.value)
    assert str(caught.value).endswith("); set DURAPIPE_PAYLOAD_STORE to a writable store")
    monkeypatch.setenv("DURAPIPE_PAYLOAD_STORE", f"s3://{s3_bucket}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", f"s3://{s3_bucket}/unreachable")
    with pytest.raises(dp.ConfigError) as caught:
        dp.build_worker(client, task_queue=task_queue)
    assert str(caught.value).startswith(
        f"DURAPIPE_BLOB_DIR: cannot write to or reach s3://{s3_bucket}/unreachable ("
    )
    assert "Could not connect to the endpoint URL" in str(caught.value)
