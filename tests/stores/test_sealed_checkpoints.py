"""Sealed checkpoints and kept answers read by a worker without the key, or with a wrong one, on the
dev server: the step fails at once, non-retryable, naming DURAPIPE_ENCRYPTION_KEYS. It never parses
the sealed text as a result, never serves it as an answer, and never takes it for a miss and pays the
provider again: DESIGN.md only says nothing at rest is plain text; a miss would pay again silently
on every step of every run, and a user would rather be told which variable to set."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from pathlib import Path

import pytest
import yaml

import durapipe as dp
from durapipe.security import EncryptionCodec
from durapipe.stores import CheckpointStore, SqliteCheckpoints, open_store
from durapipe.testing import FakeProvider
from tests.chain import chain_spec

KEY, OTHER = dp.security.new_encryption_key(), dp.security.new_encryption_key()


def _memoized_step(path: Path, base_url: str) -> dp.Pipeline:
    # A memoised step shares its key across runs: the second run looks up what the first sealed.
    spec = chain_spec(base_url, steps=1)
    spec["pipes"]["s1"]["memoize"] = True
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dp.load(path)


async def _run(
    address: str, queue: str, pipeline: dp.Pipeline, store: CheckpointStore, run_id: str
) -> object:
    client = await dp.connect(address, pipeline=pipeline, checkpoints=store)
    async with dp.build_worker(client, task_queue=queue):
        # A retried failure would keep the run going: it must end within a minute.
        return await asyncio.wait_for(
            dp.run(client, pipeline, "chain", {"topic": "x"}, task_queue=queue, run_id=run_id), 60
        )


@pytest.mark.parametrize("reader", ["without-keys", "wrong-key"])
@pytest.mark.parametrize("kept", ["result", "answer"])
async def test_a_worker_that_cannot_open_a_sealed_checkpoint_fails_the_step_without_paying(
    temporal_address: str,
    task_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reader: str,
    kept: str,
) -> None:
    monkeypatch.delenv("DURAPIPE_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("DURAPIPE_ENCRYPTION_KEYS_FILE", raising=False)
    file = tmp_path / "checkpoints.sqlite"
    sealing = SqliteCheckpoints(file, codec=EncryptionCodec({"k1": base64.b64decode(KEY)}))
    async with FakeProvider() as fake:
        pipeline = _memoized_step(tmp_path / "chain.yaml", fake.base_url)
        await _run(temporal_address, task_queue, pipeline, sealing, "first")
        assert len(fake.paid_calls()) == 1
        if kept == "answer":
            # Died after the answer was kept, before the result was: only the answer is there.
            with sqlite3.connect(file) as db:
                db.execute("DELETE FROM checkpoints")
        if reader == "wrong-key":  # the same key id, other key bytes
            monkeypatch.setenv("DURAPIPE_ENCRYPTION_KEYS", f"k1:{OTHER}")
        store = open_store(str(file))  # what a worker with this environment opens
        assert store is not None
        with pytest.raises(dp.StepFailed) as failed:
            await _run(temporal_address, task_queue, pipeline, store, "second")
        assert len(fake.paid_calls()) == 1  # not taken for a miss and paid again
    assert failed.value.cause_type == "durapipe.EncryptionKeyError"
    assert failed.value.attempts == 1  # not retried: another attempt has no key either
    assert "DURAPIPE_ENCRYPTION_KEYS" in failed.value.cause and "'k1'" in failed.value.cause
    assert "Traceback" not in failed.value.cause and "\n" not in failed.value.cause


def test_a_store_opened_without_a_codec_refuses_sealed_rows_instead_of_parsing_them(
    tmp_path: Path,
) -> None:
    file = tmp_path / "checkpoints.sqlite"
    sealing = SqliteCheckpoints(file, codec=EncryptionCodec({"k1": base64.b64decode(KEY)}))
    sealing.put("step", dp.runtime.LeafResult(output="private"))
    sealing.put_answer("answer:step", b'{"id": "private"}')
    plain = SqliteCheckpoints(file)  # codec=None: as embedded code may open it
    with pytest.raises(dp.security.EncryptionError, match=r"^the checkpoint step is encrypted"):
        plain.get("step")
    with pytest.raises(dp.security.EncryptionError, match="add it to DURAPIPE_ENCRYPTION_KEYS"):
        plain.get_answer("answer:step")
