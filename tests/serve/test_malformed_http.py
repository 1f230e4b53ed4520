"""A request aiohttp cannot parse (a bad header, a bad chunk) is answered as every other refusal: a
problem document, and one line in the server's log, not aiohttp's text and ERROR traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

import durapipe as dp
from durapipe.serve._slow import ClientLimits
from tests.serve.conftest import TOKEN, serving

MALFORMED = [
    b"GET /v1/version HTTP/1.1\r\nHost: durapipe\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/validate HTTP/1.1\r\nHost: durapipe\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
]


@pytest.mark.parametrize("request_bytes", MALFORMED, ids=["content-length", "chunk"])
async def test_a_request_that_is_not_readable_http_is_a_problem_and_one_log_line(
    temporal_address: str,
    task_queue: str,
    caplog: pytest.LogCaptureFixture,
    request_bytes: bytes,
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await dp.connect(temporal_address, checkpoints=None)
    async with serving(client, task_queue, ClientLimits()) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        raw = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") or head.startswith(b"HTTP/1.0 400"), raw
    assert b"application/problem+json" in head, raw
    problem = json.loads(body)
    assert problem["code"] == "request.malformed"
    assert problem["params"] == {"reason": "not_http"}
    assert [r for r in caplog.records if r.exc_info] == []
    [line] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "127.0.0.1" in line and "(400)" in line
