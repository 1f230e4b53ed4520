"""A method's load (`/v1/validate`, `/v1/start`) runs off the event loop: other clients are
answered meanwhile, and a validate whose client leaves ends quietly. Over real sockets, against
`durapipe serve`'s app in this process (its loader held at a gate the test opens)."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

import durapipe as dp
from tests.serve.conftest import HELLO_METHOD as METHOD
from tests.serve.conftest import TOKEN, HeldLoader, serving

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("route", ["validate", "start"])
async def test_a_method_being_loaded_holds_no_other_client(
    temporal_address: str, task_queue: str, held: HeldLoader, route: str
) -> None:
    client = await dp.connect(temporal_address, checkpoints=None)
    body = {"pipe_code": "hello", "files": {"method.yaml": METHOD}, "inputs": {"topic": "x"}}
    async with serving(client, task_queue) as port, httpx.AsyncClient(timeout=60) as http:
        base = f"http://127.0.0.1:{port}/v1"
        loading = asyncio.create_task(http.post(f"{base}/{route}", json=body, headers=HEADERS))
        assert await asyncio.to_thread(held.entered.wait, 20), "the load to begin"
        version = await http.get(f"{base}/version", timeout=10)
        held.opened.set()
        answer = await loading
    assert version.status_code == 200
    assert not held.not_opened  # the version was answered while the load waited
    assert answer.status_code in (200, 202), answer.text
    if route == "start":
        run = answer.json()["pipeline_run_id"]
        await client.get_workflow_handle(run).terminate("test over")


async def test_a_validate_whose_client_leaves_ends_quietly(
    temporal_address: str, task_queue: str, held: HeldLoader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await dp.connect(temporal_address, checkpoints=None)
    body = json.dumps({"files": {"method.yaml": METHOD}}).encode()
    request = (
        b"POST /v1/validate HTTP/1.1\r\nHost: durapipe\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    async with serving(client, task_queue) as port:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        assert await asyncio.to_thread(held.entered.wait, 20), "the load to begin"
        writer.close()  # the client leaves while its method loads
        await writer.wait_closed()
        await asyncio.sleep(0.5)  # the server sees the connection closed (no event to await)
        held.opened.set()
        assert await asyncio.to_thread(held.ended.wait, 20), "the load to end"
        async with httpx.AsyncClient(timeout=30) as http:
            again = await http.post(
                f"http://127.0.0.1:{port}/v1/validate", content=body, headers=HEADERS
            )
    assert again.json()["is_valid"] is True
    assert not held.not_opened
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]
