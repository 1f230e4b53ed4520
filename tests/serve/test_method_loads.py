"""At most `--max-loads` methods load at once (each holds the GIL while it runs): past the cap a
request is a `503` to send again, and a load's place comes back when its thread ends. Against
`durapipe serve`'s app in this process, its loader held at a gate the test opens."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

import durapipe as dp
from tests.serve.conftest import HELLO_METHOD, TOKEN, HeldLoader, serving

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
BODY = {"files": {"method.yaml": HELLO_METHOD}}


async def test_loads_past_the_cap_are_a_503_and_a_place_comes_back(
    temporal_address: str, task_queue: str, held: HeldLoader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="durapipe.serve")
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
        refused = await http.post("/validate", json=BODY)
        started = await http.post("/start", json={**BODY, "pipe_code": "hello"})
        version = await http.get("/version")
        held.opened.set()
        answers = await asyncio.gather(*loading)
        again = await http.post("/validate", json=BODY)
    assert version.status_code == 200  # the cheap reads go on meanwhile
    for answer in (refused, started):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "2"
        problem = answer.json()
        assert (problem["code"], problem["retry"]) == ("runtime.unavailable", "yes")
        assert problem["detail"] == (
            "This runner already loads 2 methods at once (its limit, --max-loads); nothing was "
            "read or started: send the request again shortly."
        )
    assert [a.status_code for a in answers] == [200, 200]
    assert again.status_code == 200 and again.json()["is_valid"] is True
    lines = [r.getMessage() for r in caplog.records if r.name == "durapipe.serve"]
    assert lines == [
        "durapipe serve: POST /v1/validate refused: 2 method loads run already (--max-loads)",
        "durapipe serve: POST /v1/start refused: 2 method loads run already (--max-loads)",
    ]
