"""Tracing and metrics for clients and workers, configured by the standard ``OTEL_*`` variables.

Traces: temporalio's `TracingInterceptor` gives a span per workflow start/run, child workflow and
activity, and a run that arrives without a trace context gets a root span from its worker, so a run
is one trace whatever started it (`durapipe.client._run_trace`); the llm operator adds a span per provider call with the GenAI semantic-convention
attributes. ``OTEL_TRACES_EXPORTER`` picks the exporter: ``console``, ``otlp`` (needs the
``opentelemetry-exporter-otlp`` package, configured by its own ``OTEL_EXPORTER_OTLP_*`` variables)
or ``none`` (the default: no tracing). ``OTEL_SERVICE_NAME`` names the service.

Metrics: with a metrics address, the Temporal runtime serves its SDK metrics and durapipe's
counters (tokens, cost, cache hits) on a Prometheus endpoint.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from opentelemetry import trace
from temporalio.client import Interceptor
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from durapipe._errors import ConfigError

TRACER_NAME = "durapipe"
# How often durapipe's workers tell Temporal they are alive (the SDK's default is 60 s): a client
# tells a SIGKILLed worker from a live one by the heartbeats it missed (see `client._stalls`).
# A beat is the SDK core's own work, as in any temporalio worker, with no Python in it: one
# RecordWorkerHeartbeat call per process and a read of the host's CPU and memory per worker (the
# core's `temporal-real-sysinfo` thread); 1-3 ms of CPU on this 2-core host (`bench.idle_cpu`).
# Only the interval sets what beating costs.
WORKER_HEARTBEAT = timedelta(seconds=5)


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
    def from_env(
        cls, metrics_port: int | None = None, metrics_host: str = "127.0.0.1"
    ) -> Telemetry:
        """Telemetry from ``OTEL_TRACES_EXPORTER`` (and friends) and a metrics address.

        Raises:
            ConfigError: the exporter is unknown, or its package is not installed.
        """
        exporter = os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower()
        provider = None if exporter in ("", "none") else _provider(exporter)
        if provider is not None:
            trace.set_tracer_provider(provider)
        address = f"{metrics_host}:{metrics_port}" if metrics_port is not None else None
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
        from durapipe.client._run_trace import RunTracing

        # A run started without tracing (a schedule, a client without telemetry) still becomes
        # one trace: the worker gives it a root span (see `RunTracing`).
        return [RunTracing(self.tracer_provider)]

    def runtime(self) -> Runtime:
        """The Temporal runtime: its log lines go to Python logging, and it serves metrics if asked.

        Raises:
            ConfigError: the metrics endpoint cannot listen on its address (e.g. the port is taken).
        """
        if self.metrics_address is None:
            return logging_runtime()
        if self._runtime is None:
            metrics = PrometheusConfig(bind_address=self.metrics_address)
            try:
                self._runtime = Runtime(
                    telemetry=TelemetryConfig(logging=_LOGGING, metrics=metrics),
                    worker_heartbeat_interval=WORKER_HEARTBEAT,
                )
            except ValueError as err:  # the port is taken, or the address is not one
                raise ConfigError(
                    f"cannot serve metrics on {self.metrics_address}: {err}; "
                    f"choose another --metrics-port"
                ) from None
        return self._runtime


# The SDK core prints its warnings (e.g. "gRPC call ... retried 5 times" while the server is
# unreachable) straight to stdout by default, mixing them into `durapipe run --json` output.
# Forwarded, they become records of the `temporalio.core` logger: stderr, or wherever logging goes.
_LOGGING = LoggingConfig(
    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
    forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
)


@functools.cache
def logging_runtime() -> Runtime:
    """One runtime per process whose core log lines go to Python logging, never to stdout."""
    return Runtime(
        telemetry=TelemetryConfig(logging=_LOGGING), worker_heartbeat_interval=WORKER_HEARTBEAT
    )


def _provider(exporter: str) -> trace.TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    span_exporter: Any
    if exporter == "console":
        # stderr: stdout belongs to the command's output (`durapipe run ... | jq`).
        span_exporter = ConsoleSpanExporter(out=sys.stderr)
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
