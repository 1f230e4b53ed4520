"""An `Idempotency-Key` names one request: sent again with the same request it gets the same run,
with another request (another body, another pipe) a `409 request.idempotency_conflict` and nothing
started. Over real HTTP, against `durapipe serve` as a child process."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

import durapipe as dp
from tests.serve.conftest import HERE, TOKEN, Served

METHOD = {"method.yaml": (HERE / "method.yaml").read_text()}
TEXT = "The council approved the new bridge on Monday."


async def _start(served: Served, key: str, content: bytes) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "Idempotency-Key": key,
    }
    async with httpx.AsyncClient(timeout=60) as raw:
        return await raw.post(f"{served.url}/v1/start", content=content, headers=headers)


def _body(pipe: str, text: str) -> dict[str, Any]:
    return {"pipe_code": pipe, "files": METHOD, "inputs": {"text": text}}


async def _absent(temporal: Client, run_id: str) -> bool:
    try:
        await temporal.get_workflow_handle(run_id).describe()
    except RPCError as err:
        return err.status == RPCStatusCode.NOT_FOUND
    return False


async def test_a_key_sent_again_with_the_same_request_gets_its_run_and_with_another_a_conflict(
    served: Served, temporal_env: object
) -> None:
    temporal: Client = temporal_env.client  # type: ignore[attr-defined]
    key = f"order-{uuid.uuid4()}"
    first = await _start(served, key, json.dumps(_body("loud_summary", TEXT)).encode())
    assert first.status_code == 202, first.text
    run_id = first.json()["pipeline_run_id"]
    execution = (await temporal.get_workflow_handle(run_id).describe()).run_id

    # The same request, its members in another order and spaced otherwise: the same run.
    body = _body("loud_summary", TEXT)
    again = await _start(served, key, json.dumps(dict(reversed(body.items())), indent=2).encode())
    assert again.status_code == 202, again.text
    assert again.json()["pipeline_run_id"] == run_id

    # Another body under the key: refused, and the key's run is still the first one.
    other_body = await _start(served, key, json.dumps(_body("loud_summary", TEXT + "!")).encode())
    assert other_body.status_code == 409, other_body.text
    assert other_body.headers["Content-Type"].startswith("application/problem+json")
    problem = other_body.json()
    assert problem["code"] == "request.idempotency_conflict"
    assert problem["retry"] == "no"
    assert "nothing was started" in problem["detail"] and run_id in problem["detail"]
    assert (await temporal.get_workflow_handle(run_id).describe()).run_id == execution

    # Another pipe under the key: refused too, and no run of that pipe was started.
    other_pipe = await _start(served, key, json.dumps(_body("summarize", TEXT)).encode())
    assert other_pipe.status_code == 409, other_pipe.text
    assert other_pipe.json()["code"] == "request.idempotency_conflict"
    assert "pipe 'loud_summary'" in other_pipe.json()["detail"]
    suffix = hashlib.sha256(key.encode()).hexdigest()[:24]
    assert await _absent(temporal, f"mthds-summarize-{suffix}")
    assert (await temporal.get_workflow_handle(run_id).describe()).run_id == execution


@pytest.mark.parametrize("key", ["", "has space", "k" * 256])
async def test_a_malformed_key_is_refused_before_anything_is_read(served: Served, key: str) -> None:
    answer = await _start(served, key, b'{"pipe_code": "loud_summary", "files": {"x.py": "1"}}')
    assert answer.status_code == 422, answer.text
    assert answer.json()["params"] == {"field": "Idempotency-Key"}


async def test_a_run_a_key_started_before_keyed_ids_is_still_its_run(
    served: Served, worker: str, temporal_address: str
) -> None:
    # Before keyed ids left the pipe out, a key's run was `mthds-<pipe>-<the key's hash>`, and
    # its memo kept no digest of the request: a resend of that pipe under the key gets that run.
    key = f"order-{uuid.uuid4()}"
    suffix = hashlib.sha256(key.encode()).hexdigest()[:24]
    earlier = f"mthds-loud_summary-{suffix}"
    temporal = await dp.connect(temporal_address, checkpoints=None)
    pipeline = dp.load(HERE / "method.yaml")
    await dp.start(
        temporal, pipeline, "loud_summary", {"text": TEXT}, run_id=earlier, task_queue=worker
    )
    execution = (await temporal.get_workflow_handle(earlier).describe()).run_id

    resent = await _start(served, key, json.dumps(_body("loud_summary", TEXT)).encode())
    assert resent.status_code == 202, resent.text
    assert resent.json()["pipeline_run_id"] == earlier
    assert (await temporal.get_workflow_handle(earlier).describe()).run_id == execution
    assert await _absent(temporal, f"mthds-keyed-{suffix}")  # nothing else was started
