"""A span per provider call, with the OpenTelemetry GenAI semantic-convention attributes.

The span is a child of whatever span is current: under a worker with tracing, the activity's
``RunActivity`` span. With no tracer provider installed it costs next to nothing (a no-op span).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import trace

TRACER_NAME = "durapipe"
# Request settings that have a GenAI attribute of their own.
_SETTING_ATTRIBUTES = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
}


def provider_of(model: str) -> str:
    """The provider part of a litellm model string (``openai/gpt-4o`` -> ``openai``)."""
    provider, sep, _ = model.partition("/")
    return provider if sep else "openai"


def provider_span(model: str, settings: dict[str, Any]) -> AbstractContextManager[trace.Span]:
    """A ``chat <model>`` client span around one provider call."""
    if _no_tracer_provider():
        # No tracer provider is installed, so the span would be a no-op: skip building it (its
        # attributes and context switch cost tens of microseconds per call), and the generator
        # a context manager function makes per use (one shared object does nothing as well).
        return _NO_SPAN
    return _provider_span(model, settings)


# What `provider_span` gives with tracing off: the invalid (no-op) span, nothing to end.
_NO_SPAN = nullcontext(trace.INVALID_SPAN)

# Whether the environment names a tracer provider for OpenTelemetry to load on first use: read
# once, as a process's environment is set before it starts.
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _no_tracer_provider() -> bool:
    """Whether no tracer provider is installed (spans would be no-ops), as
    ``isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)`` says.

    That call asks ``os.environ`` for ``OTEL_PYTHON_TRACER_PROVIDER`` every time while no provider
    is set, which raises and catches a KeyError inside the mapping: most of the cost of a provider
    call's span check with tracing off. opentelemetry-api keeps the global provider in
    ``trace._TRACER_PROVIDER`` (None until one is set, then never changed): read first, and the
    public call only when a provider is set (or the module has no such attribute), or when the
    environment names one (the call loads it).
    """
    if not _PROVIDER_FROM_ENV and getattr(trace, "_TRACER_PROVIDER", False) is None:
        return True
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def _provider_span(model: str, settings: dict[str, Any]) -> Iterator[trace.Span]:
    provider = provider_of(model)
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": provider,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }
    for setting, attribute in _SETTING_ATTRIBUTES.items():
        if isinstance(settings.get(setting), int | float):
            attributes[attribute] = settings[setting]
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        f"chat {model}", kind=trace.SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def record_response(span: trace.Span, response: Any) -> None:
    """Set the response attributes of a provider call: model, tokens, finish reason."""
    if not span.is_recording():
        return
    usage = getattr(response, "usage", None)
    span.set_attribute("gen_ai.usage.input_tokens", int(getattr(usage, "prompt_tokens", 0) or 0))
    span.set_attribute(
        "gen_ai.usage.output_tokens", int(getattr(usage, "completion_tokens", 0) or 0)
    )
    if getattr(response, "model", None):
        span.set_attribute("gen_ai.response.model", str(response.model))
    choices = getattr(response, "choices", None) or []
    reasons = [str(c.finish_reason) for c in choices if getattr(c, "finish_reason", None)]
    if reasons:
        span.set_attribute("gen_ai.response.finish_reasons", reasons)
