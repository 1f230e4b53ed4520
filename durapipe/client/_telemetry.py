"""Tracing and metrics for clients and workers, configured by the standard ``OTEL_*`` variables.

Traces: temporalio's `TracingInterceptor` gives a span per workflow start/run, child workflow and
activity; the llm operator adds a span per provider call with the GenAI semantic-convention
attributes. ``OTEL_TRACES_EXPORTER`` picks the exporter: ``console``, ``otlp`` (needs the
``opentelemetry-exporter-otlp`` package, configured by its own ``OTEL_EXPORTER_OTLP_*`` variables)
or ``none`` (the default: no tracing). ``OTEL_SERVICE_NAME`` names the service.

Metrics: with a metrics address, the Temporal runtime serves its SDK metrics and durapipe's
counters (tokens, cost, cache hits) on a Prometheus endpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from temporalio.client import Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from durapipe._errors import ConfigError

TRACER_NAME = "durapipe"


@dataclass
class Telemetry:
    """What a client (and the workers built on it) reports.

    Attributes:
        tracer_provider: where Temporal's spans go; None for no Temporal spans. Provider-call
            spans use the global tracer provider (`from_env` sets both).
        metrics_address: ``host:port`` of the Prometheus endpoint; None for no endpoint.
    """

    tracer_provider: trace.TracerProvider | None = None
    metrics_address: str | None = None
    _runtime: Runtime | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, metrics_port: int | None = None) -> Telemetry:
        """Telemetry from ``OTEL_TRACES_EXPORTER`` (and friends) and a metrics port.

        Raises:
            ConfigError: the exporter is unknown, or its package is not installed.
        """
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
        provider = None if exporter in ("", "none") else _provider(exporter)
        if provider is not None:
            trace.set_tracer_provider(provider)
        address = f"127.0.0.1:{metrics_port}" if metrics_port is not None else None
        return cls(tracer_provider=provider, metrics_address=address)

    def shutdown(self) -> None:
        """Export the spans still buffered (the CLI exits without interpreter teardown)."""
        shutdown = getattr(self.tracer_provider, "shutdown", None)
        if shutdown is not None:
            shutdown()

    def interceptors(self) -> list[Interceptor]:
        """Client interceptors (workers built on the client inherit them)."""
        if self.tracer_provider is None:
            return []
        from temporalio.contrib.opentelemetry import TracingInterceptor

        # always_create_workflow_spans: a run started by a client without tracing is traced too.
        tracer = self.tracer_provider.get_tracer(TRACER_NAME)
        return [TracingInterceptor(tracer, always_create_workflow_spans=True)]

    def runtime(self) -> Runtime | None:
        """The Temporal runtime serving metrics, or None for the default runtime."""
        if self.metrics_address is None:
            return None
        if self._runtime is None:
            metrics = PrometheusConfig(bind_address=self.metrics_address)
            self._runtime = Runtime(telemetry=TelemetryConfig(metrics=metrics))
        return self._runtime


def _provider(exporter: str) -> trace.TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    span_exporter: Any
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigError(
                "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: "
                "pip install opentelemetry-exporter-otlp-proto-http"
            ) from None
        span_exporter = OTLPSpanExporter()
    else:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER '{exporter}' is not supported; use console, otlp or none"
        )
    service = os.environ.get("OTEL_SERVICE_NAME", "durapipe")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider
