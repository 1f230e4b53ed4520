"""One trace per run, whatever started it: the worker gives a run started without tracing a root.

temporalio's `TracingInterceptor` parents a workflow's spans on the trace context its starter sent
in the workflow's headers. A schedule, or a client without telemetry, sends none: then every
activity and child workflow of the run starts a trace of its own (five for `brief`). Workers own
telemetry, so the worker fills the gap: a run that arrives without a trace context gets a root
span (``RunPipe:<workflow type>``), and everything the run does is parented on it.

The root's trace and span ids are derived from the run's workflow and run ids, not drawn at random:
a worker that replays the run (after a restart, or another worker taking it over) parents the
rest of the run on the same root without exporting it twice.
"""

from __future__ import annotations

import contextvars
import hashlib
from dataclasses import dataclass
from typing import Any

import opentelemetry.context
import temporalio.workflow
from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import IdGenerator
from temporalio.contrib.opentelemetry import TracingInterceptor, TracingWorkflowInboundInterceptor
from temporalio.worker import WorkflowInterceptorClassInput

_EXPORT_ROOT = "__durapipe_run_root_span"
_SCOPE = "durapipe.runs"  # the tracer of root spans only: its id generator is ours


@dataclass(frozen=True)
class RootSpan:
    """The root span of a run started without a trace context (crosses the sandbox boundary)."""

    name: str
    workflow_id: str
    run_id: str
    time_ns: int
    trace_id: int
    span_id: int


def root_ids(workflow_id: str, run_id: str) -> tuple[int, int]:
    """The trace and span ids of a run's root: the same on every worker and every replay."""
    digest = hashlib.sha256(f"durapipe-run:{workflow_id}:{run_id}".encode()).digest()
    # Zero is an invalid id in OpenTelemetry: setting the lowest bit keeps both valid.
    trace_id = int.from_bytes(digest[:16], "big") | 1
    span_id = int.from_bytes(digest[16:24], "big") | 1
    return trace_id, span_id


_FIXED: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "durapipe_root_ids", default=None
)


class _RootIds(IdGenerator):
    """The ids of `_FIXED` while a root span is created; the wrapped generator's otherwise."""

    def __init__(self, wrapped: IdGenerator) -> None:
        self.wrapped = wrapped

    def generate_span_id(self) -> int:
        fixed = _FIXED.get()
        return self.wrapped.generate_span_id() if fixed is None else fixed[1]

    def generate_trace_id(self) -> int:
        fixed = _FIXED.get()
        return self.wrapped.generate_trace_id() if fixed is None else fixed[0]


class RunTracing(TracingInterceptor):
    """temporalio's `TracingInterceptor`, plus a root span for runs that arrive without a trace.

    Args:
        tracer_provider: where the spans go (the same provider as Temporal's spans).
    """

    def __init__(self, tracer_provider: trace.TracerProvider) -> None:
        # always_create_workflow_spans: a run started without tracing is traced too.
        super().__init__(tracer_provider.get_tracer("durapipe"), always_create_workflow_spans=True)
        self._provider = tracer_provider

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[TracingWorkflowInboundInterceptor]:
        """Temporal's workflow interceptor, with the root for untraced runs."""
        super().workflow_interceptor_class(input)
        input.unsafe_extern_functions[_EXPORT_ROOT] = self._export_root
        return _RootedInbound

    def _export_root(self, root: RootSpan) -> None:
        # Outside the sandbox, once per run (never on replay): a zero-length span like temporalio's
        # own workflow spans (a span kept open across workflow tasks is not replay-safe).
        tracer: Any = self._provider.get_tracer(_SCOPE)
        generator = getattr(tracer, "id_generator", None)
        if generator is None:  # not the SDK's tracer (e.g. the no-op one): nothing to export
            return
        if not isinstance(generator, _RootIds):
            tracer.id_generator = _RootIds(generator)
        token = _FIXED.set((root.trace_id, root.span_id))
        try:
            span = tracer.start_span(
                root.name,
                context=opentelemetry.context.Context(),
                kind=trace.SpanKind.SERVER,
                start_time=root.time_ns,
                attributes={"temporalWorkflowID": root.workflow_id, "temporalRunID": root.run_id},
            )
        finally:
            _FIXED.reset(token)
        span.end(end_time=root.time_ns)


class _RootedInbound(TracingWorkflowInboundInterceptor):
    """Reads the run's trace context from its headers, or makes the run's root when there is none."""

    def _load_workflow_context_carrier(self) -> dict[str, list[str] | str] | None:
        carrier = super()._load_workflow_context_carrier()
        if carrier:
            return carrier
        info = temporalio.workflow.info()
        trace_id, span_id = root_ids(info.workflow_id, info.run_id)
        root = trace.SpanContext(
            trace_id,
            span_id,
            is_remote=True,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        carrier = {}  # the W3C trace context of the root, as the starter would have sent it
        self.text_map_propagator.inject(
            carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(root))
        )
        if not temporalio.workflow.unsafe.is_replaying():
            self._extern_functions[_EXPORT_ROOT](  # type: ignore[literal-required]
                RootSpan(
                    name=f"RunPipe:{info.workflow_type}",
                    workflow_id=info.workflow_id,
                    run_id=info.run_id,
                    time_ns=temporalio.workflow.time_ns(),
                    trace_id=trace_id,
                    span_id=span_id,
                )
            )
        self._workflow_context_carrier = carrier
        return carrier
