"""Blobs at rest with encryption on: sealed with the payload keys on the local and S3 drivers, named by
the hash of the plain bytes, opened by older keys after a rotation, plain blobs of before still read,
and a reader without the key told which variable to set."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path

import boto3
import pytest

import durapipe as dp
from durapipe.security import EncryptionCodec, EncryptionError
from durapipe.testing import text_pdf

SECRET = b"Customer-Okapi-5521 owes 4,200 EUR"  # private data, to search for at rest
OLD, NEW = dp.security.new_encryption_key(), dp.security.new_encryption_key()


def _codec(*entries: tuple[str, str]) -> EncryptionCodec:
    return EncryptionCodec({key_id: base64.b64decode(key) for key_id, key in entries})


def _at_rest(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_local_blobs_are_sealed_and_named_by_their_plain_hash(tmp_path: Path) -> None:
    store = dp.stores.LocalBlobStore(tmp_path, codec=_codec(("k1", NEW)))
    ref = store.put(SECRET, media_type="text/plain")
    assert ref.blob == f"sha256:{hashlib.sha256(SECRET).hexdigest()}"
    raw = store.path(ref).read_bytes()
    assert raw.startswith(b"durapipe-sealed:k1:") and SECRET not in raw
    assert store.get(ref) == SECRET
    # The hash is checked after opening: other sealed content planted under this name is refused.
    store.path(ref).write_bytes(_codec(("k1", NEW)).seal_bytes(b"planted"))
    with pytest.raises(dp.stores.BlobNotFound, match="does not match its address"):
        store.get(ref)


def test_older_keys_open_older_blobs_after_a_rotation(tmp_path: Path) -> None:
    before = dp.stores.LocalBlobStore(tmp_path, codec=_codec(("k1", OLD)))
    old_ref = before.put(b"sealed with k1: " + SECRET, media_type="text/plain")
    rotated = dp.stores.LocalBlobStore(tmp_path, codec=_codec(("k2", NEW), ("k1", OLD)))
    new_ref = rotated.put(b"sealed with k2: " + SECRET, media_type="text/plain")
    assert rotated.path(new_ref).read_bytes().startswith(b"durapipe-sealed:k2:")
    assert rotated.get(old_ref) == b"sealed with k1: " + SECRET
    assert rotated.get(new_ref) == b"sealed with k2: " + SECRET
    # Dropping the old key too early: the sentence names the variable.
    only_new = dp.stores.LocalBlobStore(tmp_path, codec=_codec(("k2", NEW)))
    with pytest.raises(EncryptionError, match=r"key 'k1'.*add it to DURAPIPE_ENCRYPTION_KEYS"):
        only_new.get(old_ref)


def test_plain_blobs_of_before_still_read_and_are_resealed_when_put_again(tmp_path: Path) -> None:
    plain = dp.stores.LocalBlobStore(tmp_path, codec=_codec())
    ref = plain.put(SECRET, media_type="text/plain")
    assert plain.path(ref).read_bytes() == SECRET  # no keys: written plain, as before
    sealed = dp.stores.LocalBlobStore(tmp_path, codec=_codec(("k1", NEW)))
    assert sealed.get(ref) == SECRET  # a plain blob read with encryption on: fine
    assert sealed.put(SECRET, media_type="text/plain") == ref
    assert SECRET not in sealed.path(ref).read_bytes()  # nothing new is written plain
    assert sealed.get(ref) == SECRET


def test_a_reader_without_the_key_or_with_a_wrong_one_is_told_what_to_set(
    tmp_path: Path,
) -> None:
    ref = dp.stores.LocalBlobStore(tmp_path, codec=_codec(("k1", NEW))).put(
        SECRET, media_type="text/plain"
    )
    without = dp.stores.LocalBlobStore(tmp_path, codec=_codec())
    with pytest.raises(EncryptionError) as missing:
        without.get(ref)
    assert str(missing.value) == (
        f"content {ref.blob.removeprefix('sha256:')} is encrypted with key 'k1', which this "
        "process does not have (known keys: none: DURAPIPE_ENCRYPTION_KEYS is not set); "
        "add it to DURAPIPE_ENCRYPTION_KEYS or DURAPIPE_ENCRYPTION_KEYS_FILE"
    )
    wrong = dp.stores.LocalBlobStore(tmp_path, codec=_codec(("k1", OLD)))
    with pytest.raises(EncryptionError, match="the key in DURAPIPE_ENCRYPTION_KEYS is wrong"):
        wrong.get(ref)


def test_the_default_store_seals_with_the_keys_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path))
    monkeypatch.setenv("DURAPIPE_ENCRYPTION_KEYS", f"k1:{NEW}")
    ref = dp.stores.upload(SECRET)
    assert SECRET not in _at_rest(tmp_path) and b"durapipe-sealed:k1:" in _at_rest(tmp_path)
    monkeypatch.delenv("DURAPIPE_ENCRYPTION_KEYS")
    with pytest.raises(EncryptionError, match="DURAPIPE_ENCRYPTION_KEYS"):
        dp.stores.blob_store().get(ref)


async def test_a_local_run_reads_its_sealed_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path / "blobs"))
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", "off")
    monkeypatch.setenv("DURAPIPE_ENCRYPTION_KEYS", f"k1:{NEW}")
    pdf = text_pdf(["Customer-Okapi-5521"])
    result = await dp.run_local(dp.pipeline(dp.extract("read")), "read", {"document": pdf})
    assert result.output == [{"page": 1, "text": "Customer-Okapi-5521"}]
    raw = _at_rest(tmp_path / "blobs")
    assert raw and b"%PDF-" not in raw and pdf not in raw


def test_s3_blobs_are_sealed_in_the_bucket(s3_bucket: str) -> None:
    content = dp.stores.open_content_store(
        f"s3://{s3_bucket}/blobs", _codec(("k2", NEW), ("k1", OLD))
    )
    store = dp.stores.ContentBlobStore(content)
    ref = store.put(SECRET, media_type="text/plain")
    s3 = boto3.client("s3")
    key = f"blobs/{ref.blob.removeprefix('sha256:')}"
    raw = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert raw.startswith(b"durapipe-sealed:k2:") and SECRET not in raw
    assert store.get(ref) == SECRET
    # Rotation: an object sealed with the older key still opens.
    older = dp.stores.ContentBlobStore(
        dp.stores.open_content_store(f"s3://{s3_bucket}/blobs", _codec(("k1", OLD)))
    )
    old_ref = older.put(b"older " + SECRET, media_type="text/plain")
    assert store.get(old_ref) == b"older " + SECRET
    # A plain object of before reads, and is rewritten sealed when put again.
    digest = hashlib.sha256(b"plain " + SECRET).hexdigest()
    s3.put_object(Bucket=s3_bucket, Key=f"blobs/{digest}", Body=b"plain " + SECRET)
    assert store.get(dp.Blob(blob=f"sha256:{digest}")) == b"plain " + SECRET
    store.put(b"plain " + SECRET, media_type="text/plain")
    resealed = s3.get_object(Bucket=s3_bucket, Key=f"blobs/{digest}")["Body"].read()
    assert SECRET not in resealed
    # No key: the sentence names the variable.
    without = dp.stores.ContentBlobStore(
        dp.stores.open_content_store(f"s3://{s3_bucket}/blobs", _codec())
    )
    with pytest.raises(EncryptionError, match="add it to DURAPIPE_ENCRYPTION_KEYS"):
        without.get(ref)


async def test_a_worker_without_the_key_fails_the_step_once_naming_the_variable(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sealed by a process that has the key; this worker (and its client) have none.
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path / "blobs"))
    monkeypatch.delenv("DURAPIPE_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("DURAPIPE_ENCRYPTION_KEYS_FILE", raising=False)
    sealed = dp.stores.LocalBlobStore(tmp_path / "blobs", codec=_codec(("k1", NEW)))
    ref = sealed.put(text_pdf(["Customer-Okapi-5521"]), media_type="application/pdf")
    pipeline = dp.pipeline(dp.extract("read"))
    client = await dp.connect(temporal_address, pipeline=pipeline)
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed) as failed:
            # A retried failure would keep the run going: it must end within a minute.
            await asyncio.wait_for(
                dp.run(client, pipeline, "read", {"document": ref}, task_queue=task_queue), 60
            )
    assert failed.value.cause_type == "durapipe.EncryptionKeyError"
    assert failed.value.attempts == 1  # not retried: another attempt has no key either
    assert "DURAPIPE_ENCRYPTION_KEYS" in failed.value.cause
    assert failed.value.cause.count(". ") == 0 and "Traceback" not in failed.value.cause
