"""What a poll of the lifecycle costs Temporal: an ended run's results, failure and steps are read
once per execution (it never changes), and a running run's polls share the status read's describe
and the window's queue answers. Counted on the client's own calls to the real dev server."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import durapipe as dp
from tests.serve.conftest import HELLO_METHOD, TOKEN, serving

# `hello`, then an approval no one gives: the run stays running.
METHOD = (
    HELLO_METHOD
    + """
  held:
    kind: sequence
    inputs: {topic: text}
    steps:
      - pipe: hello
        result: draft
      - pipe: hold
        inputs: {draft: draft}
        result: approved
    output: approved
  hold:
    kind: approval
    inputs: {draft: text}
    value: draft
    message: "Go on?"
"""
)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
CALLS = (
    "describe_workflow_execution",
    "get_workflow_execution_history",
    "query_workflow",
    "describe_task_queue",
    "list_workers",
)


def counted(service: Any, monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """Count the calls ``service`` (a client's WorkflowService) makes to Temporal, by name."""
    calls: collections.Counter[str] = collections.Counter()
    for name in CALLS:
        call = getattr(service, name)

        def counting(
            *args: Any, _name: str = name, _call: Callable[..., Any] = call, **kw: Any
        ) -> Any:
            calls[_name] += 1
            return _call(*args, **kw)

        monkeypatch.setattr(service, name, counting)
    return calls


async def test_polls_of_an_ended_run_read_its_answers_once(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await dp.connect(temporal_address, checkpoints=None)
    calls = counted(client.workflow_service, monkeypatch)
    request = {"pipe_code": "hello", "files": {"method.yaml": METHOD}, "inputs": {"topic": "x"}}
    async with (
        serving(client, task_queue) as port,
        dp.build_worker(client, task_queue=task_queue),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", headers=HEADERS) as http,
    ):
        run = (await http.post("/execute", json=request, timeout=120)).json()["pipeline_run_id"]
        first = {
            route: (await http.get(f"/runs/{run}/{route}")).json()
            for route in ("results", "progress")
        }
        calls.clear()
        for _ in range(4):
            assert (await http.get(f"/runs/{run}/results")).json() == first["results"]
            again = (await http.get(f"/runs/{run}/progress")).json()
            assert again["invocations"] == first["progress"]["invocations"]
    # One describe each (which execution is the latest), nothing else.
    assert calls == {"describe_workflow_execution": 8}, calls


async def test_polls_of_a_running_run_share_the_status_describe_and_the_queue_answers(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await dp.connect(temporal_address, checkpoints=None)
    request = {"pipe_code": "held", "files": {"method.yaml": METHOD}, "inputs": {"topic": "x"}}
    async with (
        serving(client, task_queue) as port,
        dp.build_worker(client, task_queue=task_queue),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", headers=HEADERS) as http,
    ):
        run = (await http.post("/start", json=request)).json()["pipeline_run_id"]
        handle = dp.RunHandle(client, run)
        while not any(s.pipe == "hold" and s.status == "waiting" for s in await handle.steps()):
            pass  # each steps() is a query answered by the worker: no sleep needed
        calls = counted(client.workflow_service, monkeypatch)
        progress = [(await http.get(f"/runs/{run}/progress")).json() for _ in range(4)]
        await client.get_workflow_handle(run).terminate("test over")
    assert all(p["status"] == "running" and "degradation" not in p for p in progress)
    assert calls["query_workflow"] == 4  # the steps, live
    assert calls["describe_workflow_execution"] == 4, calls  # the status read's, shared
    # The queue's pollers and workers: once per window (3 s), whoever asks.
    assert calls["describe_task_queue"] <= 2 and calls["list_workers"] <= 2, calls
    # The run's queues, from the first page of its history: once per execution.
    assert calls["get_workflow_execution_history"] <= 1, calls
