"""The codec server answers a malformed request with a 4xx, never a 500."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

import durapipe as dp

TOKEN = "codec-token-1"


@pytest.fixture
async def server() -> AsyncIterator[str]:
    codec = dp.security.EncryptionCodec({"k1": base64.b64decode(dp.security.new_encryption_key())})
    runner = web.AppRunner(dp.ops.codec_app(codec, token=TOKEN))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _payload(data: bytes) -> dict[str, object]:
    metadata = {"encoding": "binary/encrypted", "encryption-key-id": "k1"}
    return {
        "metadata": {k: base64.b64encode(v.encode()).decode() for k, v in metadata.items()},
        "data": base64.b64encode(data).decode(),
    }


async def test_a_non_ascii_token_is_a_401(server: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{server}/decode",
            content=b'{"payloads": []}',
            headers={"Authorization": "Bearer tökén".encode()},
        )
    assert answer.status_code == 401


@pytest.mark.parametrize("size", [0, 5, 20])
async def test_a_ciphertext_too_short_to_hold_nonce_and_tag_is_a_422(
    server: str, size: int
) -> None:
    body = json.dumps({"payloads": [_payload(b"x" * size)]})
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{server}/decode", content=body, headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 422, answer.text
    assert "shorter than a nonce and a tag" in answer.json()["error"]
