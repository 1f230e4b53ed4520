"""Issue 15, item 4: an image or extract call whose provider echoes the key keeps it out of history,
the worker's log and spans (the llm path is covered by test_secrets.py)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor

import durapipe as dp
from tests.security.history import history_text

KEY = "sk-durapipe-ECHOED-9c1e7b2a4f"

PIPES = """
models:
  painter: {{model: openai/fake-image, api_base: "{url}"}}
  reader: {{model: mistral/mistral-ocr-latest, api_base: "{url}"}}
pipes:
  draw:
    kind: image
    model: painter
    inputs: {{topic: text}}
    prompt: "A drawing of {{{{ topic }}}}"
    retry: {{max_attempts: 1}}
  read:
    kind: extract
    model: reader
    inputs: {{doc: document}}
    retry: {{max_attempts: 1}}
"""


@pytest.fixture
async def echoing_provider() -> AsyncIterator[str]:
    """A provider answering every request 401, quoting the key it was sent, as some providers do."""

    async def refuse(request: web.Request) -> web.Response:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        body = {"error": {"message": f"Incorrect API key provided: {sent}", "type": "auth"}}
        return web.Response(status=401, text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


@pytest.mark.usefixtures("blob_dir")
async def test_image_and_extract_failures_carry_no_key(
    echoing_provider: str,
    temporal_env: object,
    temporal_address: str,
    task_queue: str,
    tracing: tuple[TracerProvider, InMemorySpanExporter],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("MISTRAL_API_KEY", KEY)
    exporter = tracing[1]
    exporter.clear()
    caplog.set_level(logging.DEBUG)
    pipeline = dp.load_yaml(PIPES.format(url=echoing_provider))
    client = await Client.connect(
        temporal_address,
        plugins=[dp.DurapipePlugin(pipeline)],
        interceptors=[TracingInterceptor(trace.get_tracer(__name__))],
    )
    document = tmp_path / "note.txt"
    document.write_text("a short note")
    runs = {"draw": {"topic": "a fox"}, "read": {"doc": document}}
    run_ids = []
    async with dp.build_worker(client, task_queue=task_queue):
        for pipe, inputs in runs.items():
            run_id = f"echo-{pipe}-{uuid.uuid4().hex[:6]}"
            run_ids.append(run_id)
            with pytest.raises(dp.StepFailed) as failed:
                await dp.run(client, pipeline, pipe, inputs, run_id=run_id, task_queue=task_queue)
            assert failed.value.cause_type == "durapipe.AuthenticationError", failed.value
            assert "[redacted]" in failed.value.cause  # not vacuous: the provider did echo it
    places = {
        "history": await history_text(client, run_ids),
        "worker log": caplog.text,
        "spans": "\n".join(span.to_json() for span in exporter.get_finished_spans()),
    }
    for place, text in places.items():
        assert KEY not in text, place
