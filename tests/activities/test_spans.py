"""A provider call's span: none is built while no tracer provider is installed, one is after."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from durapipe.activities import _spans


def test_no_provider_means_the_no_op_span_without_asking_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(_spans, "_PROVIDER_FROM_ENV", False)
    with _spans.provider_span("openai/gpt-x", {}) as span:
        assert span is trace.INVALID_SPAN

    def environment_read() -> trace.TracerProvider:
        raise AssertionError("the span check asked OpenTelemetry for the provider")

    monkeypatch.setattr(trace, "get_tracer_provider", environment_read)
    assert _spans._no_tracer_provider()


def test_an_installed_provider_gets_the_provider_span(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Installed the way `trace.set_tracer_provider` installs it (that works once per process).
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    with _spans.provider_span("openai/gpt-x", {"temperature": 0.5}) as span:
        assert span.is_recording()
    [finished] = exporter.get_finished_spans()
    assert finished.name == "chat openai/gpt-x"
    assert finished.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "openai/gpt-x",
        "gen_ai.request.temperature": 0.5,
    }


def test_a_provider_named_by_the_environment_is_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenTelemetry loads a provider the environment names on the first `get_tracer_provider`.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(_spans, "_PROVIDER_FROM_ENV", True)
    loaded = TracerProvider()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: loaded)
    assert not _spans._no_tracer_provider()
