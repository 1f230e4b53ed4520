"""Issue 15, item 5: with encryption on, checkpoints, failure messages, the payload store and blobs
are not plain text."""

from __future__ import annotations

import base64
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

import durapipe as dp
from durapipe.runtime import LeafResult, LlmCall
from durapipe.stores._checkpoints import SqliteCheckpoints, checkpoint_key
from durapipe.testing import text_pdf
from tests.security import secret_tools
from tests.security.history import history_text
from tests.support import cli_env, durapipe_command

CUSTOMER = "Customer-Okapi-5521"  # private data, to search for at rest
KEY = dp.security.new_encryption_key()


async def test_with_encryption_on_nothing_at_rest_is_plain_text(
    temporal_address: str,
    temporal_env: WorkflowEnvironment,
    task_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DURAPIPE_ENCRYPTION_KEYS", f"k1:{KEY}")
    store = tmp_path / "checkpoints.sqlite"
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", str(store))
    # Every payload through the payload store; documents in a blob folder of the test's own.
    monkeypatch.setenv("DURAPIPE_PAYLOAD_STORE", str(tmp_path / "payloads"))
    monkeypatch.setenv("DURAPIPE_PAYLOAD_THRESHOLD", "1")
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path / "blobs"))
    ask = dp.llm("ask", inputs={"customer": str}, prompt="Write to {{ customer }}.")
    find = dp.tool(secret_tools.lookup, name="find")
    pipeline = dp.pipeline(ask, find, dp.extract("read"))
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_ids = [f"rest-ok-{uuid.uuid4().hex[:6]}", f"rest-fail-{uuid.uuid4().hex[:6]}"]
    async with dp.build_worker(client, task_queue=task_queue):
        pdf = text_pdf([CUSTOMER])
        read = await dp.run(client, pipeline, "read", {"document": pdf}, task_queue=task_queue)
        answer = await dp.run(
            client,
            pipeline,
            "ask",
            {"customer": CUSTOMER},
            run_id=run_ids[0],
            task_queue=task_queue,
        )
        with pytest.raises(dp.StepFailed) as failed:
            await dp.run(
                client,
                pipeline,
                "find",
                {"customer": CUSTOMER},
                run_id=run_ids[1],
                task_queue=task_queue,
            )
    # Not vacuous: the answer and the failure do hold the private data, for the key's holder.
    assert CUSTOMER in answer.output
    assert read.output == [{"page": 1, "text": CUSTOMER}]  # the worker opened the sealed blob
    assert f"no record found for {CUSTOMER}" in failed.value.cause
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("checkpoints.sqlite*"))
    assert b"durapipe-sealed:k1:" in raw
    assert CUSTOMER.encode() not in raw
    for folder in ("payloads", "blobs"):
        kept = b"".join(p.read_bytes() for p in (tmp_path / folder).rglob("*") if p.is_file())
        assert kept and CUSTOMER.encode() not in kept and b"%PDF-" not in kept, folder

    payloads = b"".join(p.read_bytes() for p in (tmp_path / "payloads").rglob("*") if p.is_file())
    assert b"binary/encrypted" in payloads  # encrypted by the codec before they were stored

    searched = await history_text(temporal_env.client, run_ids)
    assert '"driverName":"durapipe.local"' in searched  # the history holds claims to them
    assert CUSTOMER not in searched  # payloads and failure messages alike


def test_a_checkpoint_sealed_with_one_key_is_read_only_with_it(tmp_path: Path) -> None:
    keys = {"k1": base64.b64decode(KEY)}
    sealed = SqliteCheckpoints(tmp_path / "c.sqlite", codec=dp.security.EncryptionCodec(keys))
    call = LlmCall(run_id="r", path="p", pipe_name="p", pipe=dp.spec.LlmPipe(prompt="x"))
    key = checkpoint_key(call, namespace="n")
    sealed.put(key, LeafResult(output=CUSTOMER))
    assert sealed.get(key) == LeafResult(output=CUSTOMER)
    without = SqliteCheckpoints(tmp_path / "c.sqlite", codec=dp.security.EncryptionCodec({}))
    with pytest.raises(dp.security.EncryptionError, match="key 'k1'"):
        without.get(key)


def test_kept_provider_answers_are_sealed_and_pruned_like_results(tmp_path: Path) -> None:
    keys = {"k1": base64.b64decode(KEY)}
    path = tmp_path / "c.sqlite"
    sealed = SqliteCheckpoints(path, codec=dp.security.EncryptionCodec(keys), ttl=3600)
    answer = f'{{"choices": [{{"message": {{"content": "Dear {CUSTOMER}"}}}}]}}'.encode()
    sealed.put_answer("answer:a", answer)
    assert sealed.get_answer("answer:a") == answer
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("c.sqlite*"))
    assert b"durapipe-sealed:k1:" in raw and CUSTOMER.encode() not in raw
    # A row kept before answers were stored as JSON text (base64, then sealed) still reads.
    old_row = sealed._codec.codec.seal_text(base64.b64encode(answer).decode())  # type: ignore[union-attr]
    with sealed._db:
        sealed._db.execute(
            "INSERT INTO answers (key, answer, created_at) VALUES ('answer:old', ?, ?)",
            (old_row, time.time()),
        )
    assert sealed.get_answer("answer:old") == answer
    with sealed._db:  # age it past the TTL: hidden, then pruned with the results
        sealed._db.execute("UPDATE answers SET created_at = created_at - 7200")
    assert sealed.get_answer("answer:a") is None
    sealed.prune()
    assert sealed._db.execute("SELECT count(*) FROM answers").fetchone()[0] == 0


def test_retention_hides_and_prunes_old_results(tmp_path: Path) -> None:
    store = SqliteCheckpoints(tmp_path / "c.sqlite", ttl=3600)
    store.put("old", LeafResult(output="old"))
    store.put("new", LeafResult(output="new"))
    with store._db:  # age one result past the TTL
        store._db.execute("UPDATE checkpoints SET created_at = created_at - 7200 WHERE key = 'old'")
    assert store.get("old") is None and store.get("new") is not None
    assert store.put("old", LeafResult(output="again"))  # an expired result is no result
    with store._db:
        store._db.execute("UPDATE checkpoints SET created_at = created_at - 7200 WHERE key = 'old'")
    assert store.prune() == 1
    assert store.prune(older_than=0) == 1


def test_the_prune_command_deletes_results_past_the_retention(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    store = SqliteCheckpoints(path, ttl=3600)
    store.put("old", LeafResult(output="old"))
    store.put("new", LeafResult(output="new"))
    with store._db:
        store._db.execute("UPDATE checkpoints SET created_at = created_at - 7200 WHERE key = 'old'")
    env = cli_env(DURAPIPE_CHECKPOINTS=str(path))
    pruned = subprocess.run(
        durapipe_command("checkpoints", "prune", "--older-than", "1h"),
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.strip() == "pruned 1 checkpoint"
    assert store.get("new") is not None
    bad = subprocess.run(
        durapipe_command("checkpoints", "prune", "--older-than", "soon"),
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "--older-than" in bad.stderr and "Traceback" not in bad.stderr


async def test_a_failed_run_this_client_cannot_decrypt_is_still_listed(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPIPE_ENCRYPTION_KEYS", f"k1:{KEY}")
    find = dp.tool(secret_tools.lookup, name="find")
    pipeline = dp.pipeline(find)
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"rest-list-{uuid.uuid4().hex[:6]}"
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.StepFailed):
            await dp.run(
                client,
                pipeline,
                "find",
                {"customer": CUSTOMER},
                run_id=run_id,
                task_queue=task_queue,
            )
    monkeypatch.delenv("DURAPIPE_ENCRYPTION_KEYS")
    keyless = await dp.connect(temporal_address)
    listed = [r for r in await dp.client.list_runs(keyless, status="failed") if r.run_id == run_id]
    assert len(listed) == 1 and listed[0].error is not None
    assert "encrypted with key 'k1'" in listed[0].error
