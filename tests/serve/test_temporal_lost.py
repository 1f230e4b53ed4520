"""Temporal down part way through a request (after the status read's describe, at a result or a
history read) is a `503 runtime.unavailable` the client is told to retry, and one log line: it was
a `500 runtime.unexpected` with a traceback. Against a dev server of the test's own, stopped
mid-request."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

import durapipe as dp
from durapipe.ops._dev import search_attribute_flags, temporal_cli
from tests.serve.conftest import HELLO_METHOD, TOKEN, serving

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def test_temporal_lost_mid_request_is_a_503_to_retry_and_one_log_line(
    task_queue: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_log_level="error",
        dev_server_extra_args=search_attribute_flags(),
    )
    stopped = False

    async def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await own.shutdown()

    try:
        client = await dp.connect(own.client.service_client.config.target_host, checkpoints=None)
        files = {"method.yaml": HELLO_METHOD}
        request = {"pipe_code": "hello", "files": files, "inputs": {"topic": "x"}}
        async with (
            serving(client, task_queue) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1", headers=HEADERS) as http,
        ):
            async with dp.build_worker(client, task_queue=task_queue):
                done = await http.post("/execute", json=request, timeout=120)
            assert done.status_code == 200, done.text
            run = done.json()["pipeline_run_id"]

            # The results read describes the run (Temporal answers), then reads its result from
            # the history: the server stops right before that read.
            service = client.workflow_service
            read = service.get_workflow_execution_history

            async def stopping(*args: Any, _read: Callable[..., Any] = read, **kw: Any) -> Any:
                await stop()
                return await _read(*args, **kw)

            monkeypatch.setattr(service, "get_workflow_execution_history", stopping)
            caplog.clear()
            caplog.set_level(logging.DEBUG, logger="durapipe.serve")
            lost = await http.get(f"/runs/{run}/results", timeout=120)
    finally:
        await stop()

    assert stopped
    assert lost.status_code == 503, lost.text
    assert lost.headers["Retry-After"] == "2"
    assert lost.headers["Content-Type"].startswith("application/problem+json")
    problem = lost.json()
    assert (problem["code"], problem["retry"], problem["next_step"]["kind"]) == (
        "runtime.unavailable",
        "yes",
        "retry",
    )
    assert problem["detail"].startswith(f"Temporal did not answer GET /v1/runs/{run}/results (")
    records = [r for r in caplog.records if r.name == "durapipe.serve"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING and records[0].exc_info is None
    assert (
        records[0]
        .getMessage()
        .startswith(f"durapipe serve: GET /v1/runs/{run}/results: Temporal did not answer: ")
    )
