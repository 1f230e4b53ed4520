"""A worker's own provider limits hold for every call it runs, whatever the run carries: a run
started from a file without them, an MTHDS bundle (whose format has none), a client that left them
out."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.activities._activities import own_limits
from durapipe.runtime import LlmCall, ToolCall
from durapipe.spec import LimitRule, LlmPipe, ToolPipe
from tests.support import run_cli


def rule(**fields: object) -> LimitRule:
    return LimitRule.model_validate(fields)


def test_a_workers_limits_come_first_and_win_a_shared_name() -> None:
    carried = [rule(provider="openai", concurrency=50, name="openai"), rule(kind="llm", rate="9/s")]
    call = LlmCall(
        run_id="r", path="ask", pipe_name="ask", limits=carried,
        pipe=LlmPipe(model="openai/gpt-4o", fallbacks=["anthropic/claude-3-5-haiku-latest"], prompt="hi"),
    )  # fmt: skip
    mine = [
        rule(provider="openai", concurrency=2, name="openai"),  # the operator's cap, same name
        rule(provider="anthropic", rate="1/s"),  # matches the fallback only
        rule(provider="mistral", rate="1/s"),  # matches no request of this call
    ]
    limited = own_limits(call, mine)
    assert limited.limits == [mine[0], mine[1], carried[1]]
    assert call.limits == carried  # the call itself is not changed
    # A call none of the worker's limits match is the same call (no copy per call).
    tool = ToolCall(run_id="r", path="t", pipe_name="t", pipe=ToolPipe(function="m:f"))
    assert own_limits(tool, mine) is tool


async def test_a_run_without_limits_takes_the_workers_on_the_dev_server(
    temporal_address: str, task_queue: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPIPE_LIMITS", str(tmp_path / "limits.sqlite"))
    ask = dp.llm("ask", inputs={"q": str}, prompt="{{ q }}", model="durapipe/offline")
    sent = dp.pipeline(dp.sequence("asked", inputs={"q": str}, steps=[dp.step(ask)]))
    assert sent.limits == []  # what the client sends: no limits at all
    cap = dp.LimitRule(provider="durapipe", concurrency=3, name="operator-cap")
    workers = sent.model_copy(update={"limits": [cap]})  # the worker's own file
    worker_client = await dp.connect(temporal_address, pipeline=workers)
    client = await dp.connect(temporal_address)
    async with dp.build_worker(worker_client, task_queue=task_queue):
        result = await dp.run(
            client, sent, "asked", {"q": "hi"}, run_id=f"capped-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )  # fmt: skip
    assert result.steps[-1].status == "succeeded"
    with contextlib.closing(sqlite3.connect(tmp_path / "limits.sqlite")) as db:
        buckets = [row[0] for row in db.execute("SELECT bucket FROM leases")]
    assert buckets == ["operator-cap"]


def test_worker_limits_file_without_limits_is_one_sentence(tmp_path: Path) -> None:
    empty = tmp_path / "ops.yaml"
    empty.write_text("pipes: {}\n")
    done: subprocess.CompletedProcess[str] = run_cli(
        "worker", "examples/brief.yaml", "--limits", str(empty), "--address", "127.0.0.1:1"
    )
    assert done.returncode != 0
    assert "--limits" in done.stderr and "no limits in it" in done.stderr
    assert "Traceback" not in done.stderr
    # A missing file or a folder was named a "pipeline file" (or an MTHDS package folder).
    for given, why in ((tmp_path / "nope.yaml", "no such file"), (tmp_path, "it is a folder")):
        refused = run_cli(
            "worker", "examples/brief.yaml", "--limits", str(given), "--address", "127.0.0.1:1"
        )
        assert refused.returncode == 2
        assert refused.stderr == (
            f"error: --limits {given}: {why}; give a YAML file whose `limits:` the worker "
            "holds for every call\n"
        )
