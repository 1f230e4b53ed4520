"""The DURAPIPE_* settings: read through one object, validated when a client or worker starts."""

from __future__ import annotations

from pathlib import Path

import pytest

import durapipe as dp
from durapipe._settings import settings

PIPELINE = dp.pipeline(dp.llm("ask", prompt="hi"))


async def test_a_bad_value_fails_the_client_at_start_naming_the_variable(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPIPE_WORKFLOW_SANDBOX", "maybe")
    with pytest.raises(dp.ConfigError) as caught:
        await dp.connect(temporal_address, pipeline=PIPELINE)
    assert str(caught.value).startswith("DURAPIPE_WORKFLOW_SANDBOX='maybe' is not valid: ")
    monkeypatch.setenv("DURAPIPE_WORKFLOW_SANDBOX", "on")
    assert settings().workflow_sandbox is True  # a changed environment is read again


async def test_an_unwritable_store_fails_the_worker_at_start(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = await dp.connect(temporal_address, pipeline=PIPELINE)
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder under a file cannot be made, even by root
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", str(blocker / "db" / "checkpoints.sqlite"))
    with pytest.raises(dp.ConfigError) as caught:
        dp.build_worker(client, task_queue=task_queue)
    assert str(caught.value) == (
        f"DURAPIPE_CHECKPOINTS: cannot write to {blocker / 'db'} (Not a directory); "
        "set DURAPIPE_CHECKPOINTS to a writable folder"
    )
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", str(tmp_path / "db" / "checkpoints.sqlite"))
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(blocker / "blobs"))
    with pytest.raises(dp.ConfigError, match=r"^DURAPIPE_BLOB_DIR: cannot write to "):
        dp.build_worker(client, task_queue=task_queue)
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path / "blobs"))
    monkeypatch.setenv("DURAPIPE_PAYLOAD_STORE", str(tmp_path / "payloads"))
    dp.build_worker(client, task_queue=task_queue)  # writable: the worker is built
    assert (tmp_path / "db").is_dir() and (tmp_path / "blobs").is_dir()
