"""A worker's start: its build id is durapipe's own, hashed from the code that decides what it does,
not temporalio's default (the bytecode of every loaded module: 0.4-0.8 s once litellm is loaded)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import temporalio.worker._worker as sdk_worker

import durapipe as dp
from durapipe.worker import DurapipePlugin, build_id


async def test_a_worker_does_not_hash_every_loaded_module(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def every_module(*, memoize: bool = True) -> str:
        raise AssertionError("the worker hashed every loaded module for its build id")

    monkeypatch.setattr(sdk_worker, "load_default_build_id", every_module)
    client = await dp.connect(temporal_address)
    worker = dp.build_worker(client, task_queue=task_queue)
    [plugin] = [p for p in client.config().get("plugins", []) if isinstance(p, DurapipePlugin)]
    assert worker.config().get("build_id") == build_id(plugin.tool_modules)
    assert build_id().startswith("durapipe-")


def test_the_build_id_does_not_depend_on_what_the_process_imported() -> None:
    # One install gives one id: a worker started after other work (more of durapipe imported)
    # reports the same id as a fresh one.
    code = "from durapipe.worker import build_id; print(build_id())"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    more = subprocess.run(
        [sys.executable, "-c", "import durapipe.cli._app, durapipe.serve\n" + code],
        capture_output=True,
        text=True,
        env=env,
    )
    assert fresh.returncode == 0 and more.returncode == 0, fresh.stderr + more.stderr
    assert fresh.stdout == more.stdout and fresh.stdout.startswith("durapipe-")


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
