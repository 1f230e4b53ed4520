"""The fake provider's ledger says which connection each request came on (chaos tells the answers a
killed worker never read from those it had read by it)."""

from __future__ import annotations

import hashlib

import httpx

from durapipe.testing import Call, FakeProvider


async def test_the_ledger_records_each_requests_client_port() -> None:
    body = {"model": "gpt-port", "messages": [{"role": "user", "content": "hi"}]}
    async with FakeProvider() as fake, httpx.AsyncClient() as one, httpx.AsyncClient() as other:
        for client in (one, one, other):
            response = await client.post(f"{fake.base_url}/chat/completions", json=body)
            assert response.status_code == 200
    ports = [call.peer_port for call in fake.calls]
    assert all(isinstance(port, int) and port > 0 for port in ports)
    assert ports[0] == ports[1] != ports[2]  # one kept-alive connection, then another client's
    assert [Call.from_dict(c.to_dict()).peer_port for c in fake.calls] == ports  # the JSONL line


async def test_the_ledger_records_a_hash_of_each_request_body() -> None:
    # Chaos prints it for both requests of a duplicate: a retry whose body differed in any byte
    # could not reach the answer kept for the first.
    body = {"model": "gpt-body", "messages": [{"role": "user", "content": "hi"}]}
    async with FakeProvider() as fake, httpx.AsyncClient() as client:
        for sent in (body, body, {**body, "temperature": 0.5}):
            await client.post(f"{fake.base_url}/chat/completions", json=sent)
    hashes = [call.body_sha256 for call in fake.calls]
    assert hashes[0] == hashes[1] != hashes[2]
    assert hashes[0] == hashlib.sha256(httpx.Request("POST", "/", json=body).content).hexdigest()
    assert [Call.from_dict(c.to_dict()).body_sha256 for c in fake.calls] == hashes
