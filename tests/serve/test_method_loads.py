"""At most `--max-loads` methods load at once (each holds the GIL while it runs): past the cap a
request waits its turn, a bounded time, in a bounded queue, and is a `503` to send again past
either bound; a load's place comes back when its thread ends. Against
`durapipe serve`'s app in this process, its loader held at a gate the test opens."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

import durapipe as dp
from durapipe.serve import _loads
from tests.serve.conftest import HELLO_METHOD, TOKEN, HeldLoader, serving

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
BODY = {"files": {"method.yaml": HELLO_METHOD}}


async def test_loads_past_the_cap_wait_their_turn_and_a_full_queue_is_a_503(
    temporal_address: str,
    task_queue: str,
    held: HeldLoader,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG, logger="durapipe.serve")
    monkeypatch.setattr(_loads, "MAX_WAITING", 1)
    client = await dp.connect(temporal_address, checkpoints=None)
    async with (
        serving(client, task_queue, max_loads=2) as port,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}/v1", headers=HEADERS, timeout=60
        ) as http,
    ):
        loading = [asyncio.create_task(http.post("/validate", json=BODY)) for _ in range(2)]
        for _ in loading:
            assert await asyncio.to_thread(held.began.acquire, True, 20), "a load to begin"
        # A wait that sees no place come free ends in a 503.
        monkeypatch.setattr(_loads, "LOAD_WAIT_S", 0.5)
        timed_out = await http.post("/validate", json=BODY)
        # A longer wait holds its place in the queue; one more is refused at once.
        monkeypatch.setattr(_loads, "LOAD_WAIT_S", 60.0)
        waiting = asyncio.create_task(http.post("/validate", json=BODY))
        for _ in range(2000):
            if sum("waits for a place" in r.getMessage() for r in caplog.records) == 2:
                break
            await asyncio.sleep(0.01)
        refused = await http.post("/validate", json=BODY)
        started = await http.post("/start", json={**BODY, "pipe_code": "hello"})
        version = await http.get("/version")
        assert not waiting.done()
        held.opened.set()
        answers = await asyncio.gather(*loading, waiting)
        again = await http.post("/validate", json=BODY)
    assert version.status_code == 200  # the cheap reads go on meanwhile
    details = {
        "timed out": "This runner already loads 2 methods at once (its limit, --max-loads) and no "
        "place came free within 0.5 s; nothing was read or started: send the request again "
        "shortly.",
        "queue full": "This runner already loads 2 methods at once (its limit, --max-loads) and 1 "
        "more wait for a place; nothing was read or started: send the request again shortly.",
    }
    for answer, detail in (
        (timed_out, details["timed out"]),
        (refused, details["queue full"]),
        (started, details["queue full"]),
    ):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "2"
        problem = answer.json()
        assert (problem["code"], problem["retry"]) == ("runtime.unavailable", "yes")
        assert problem["detail"] == detail
    assert [a.status_code for a in answers] == [200, 200, 200]  # the one that waited, served
    assert again.status_code == 200 and again.json()["is_valid"] is True
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "durapipe.serve" and r.levelno >= logging.WARNING
    ]
    assert lines == [
        "durapipe serve: POST /v1/validate refused: 2 method loads run already (--max-loads) and "
        "no place came free within 0.5 s",
        "durapipe serve: POST /v1/validate refused: 2 method loads run already (--max-loads) and "
        "1 more wait for a place",
        "durapipe serve: POST /v1/start refused: 2 method loads run already (--max-loads) and 1 "
        "more wait for a place",
    ]
