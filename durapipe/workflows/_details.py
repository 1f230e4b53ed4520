"""A run's current details in the Temporal UI, written when they are read.

The details name the latest step event and the progress (`pipe brief: running llm step headline
(1 of 5 steps done)`). The UI reads them only when someone opens the run, through the SDK's
built-in ``__temporal_workflow_metadata`` query, while a run's steps change them twice each:
formatting the line and handing it to ``workflow.set_current_details`` at every event took ~22k
instructions a step (`bench.workflow_instructions`), a sixth of what a `seq50` step costs the
worker over hand-written temporalio. So the workflow keeps the latest event as a tuple
(`StepEvent`) and `DetailsInterceptor`, which the plugin adds to every durapipe worker, writes the
line into that query's answer. The line is the same one the event gave before.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.worker import (
    HandleQueryInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from durapipe._words import counted

# The SDK's query whose answer carries a workflow's current details (the Temporal UI asks it).
METADATA_QUERY = "__temporal_workflow_metadata"

# (status, kind, path, finished, steps): the step's status when it finished, None when it is
# starting; its kind and path; the run's finished steps and steps at that moment.
StepEvent = tuple[str | None, str, str, int, int]


def details_line(pipe: str, event: StepEvent) -> str:
    """The current details ``event`` gives a run of ``pipe``.

    Example:
        >>> details_line("brief", (None, "llm", "headline", 1, 5))
        'pipe brief: running llm step headline (1 of 5 steps done)'
        >>> details_line("one", ("succeeded", "llm", "ask", 1, 1))
        'pipe one: succeeded: llm step ask (1 of 1 step done)'
    """
    status, kind, path, finished, steps = event
    happened = f"running {kind} step {path}" if status is None else f"{status}: {kind} step {path}"
    return f"pipe {pipe}: {happened} ({finished} of {counted(steps, 'step')} done)"


class DetailsInterceptor(Interceptor):
    """Writes a durapipe run's current details into the answer of the metadata query."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _DetailsInbound


class _DetailsInbound(WorkflowInboundInterceptor):
    async def handle_query(self, input: HandleQueryInput) -> Any:
        answer = await self.next.handle_query(input)
        if input.query == METADATA_QUERY and isinstance(answer, WorkflowMetadata):
            # Any workflow of the worker passes here: only durapipe's answer `current_details`.
            current = getattr(workflow.instance(), "current_details", None)
            line = current() if callable(current) else None
            if line is not None:
                answer.current_details = line
        return answer
