"""A worker's start: its build id is durapipe's own, hashed from the code that decides what it does,
not temporalio's default (the bytecode of every loaded module: 0.4-0.8 s once litellm is loaded)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import temporalio.worker._worker as sdk_worker

import durapipe as dp
from durapipe.worker import build_id


async def test_a_worker_does_not_hash_every_loaded_module(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def every_module(*, memoize: bool = True) -> str:
        raise AssertionError("the worker hashed every loaded module for its build id")

    monkeypatch.setattr(sdk_worker, "load_default_build_id", every_module)
    client = await dp.connect(temporal_address)
    worker = dp.build_worker(client, task_queue=task_queue)
    assert worker.config().get("build_id") == build_id()
    assert build_id().startswith("durapipe-")


def test_the_build_id_changes_with_a_tool_module_s_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "start_tools_probe.py"
    module.write_text("def shout(text: str) -> str:\n    return text.upper()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("start_tools_probe")
    try:
        first = build_id(("start_tools_probe",))
        assert build_id(("start_tools_probe",)) == first  # once per process
        module.write_text("def shout(text: str) -> str:\n    return text.upper() + '!'\n")
        build_id.cache_clear()  # a new process, with the edited tool
        assert build_id(("start_tools_probe",)) != first
        assert build_id(()) != first
    finally:
        sys.modules.pop("start_tools_probe", None)
        build_id.cache_clear()
