"""The Temporal side of running a spec: the workflow that hosts the runtime's interpreter, its
signals, queries and updates, and the search attributes it keeps."""

from durapipe.workflows._workflow import (
    PAUSE_SIGNAL,
    PAUSED_QUERY,
    RESUME_SIGNAL,
    STEPS_QUERY,
    WAITING_QUERY,
    PipeWorkflow,
    SandboxedPipeWorkflow,
)

__all__ = [
    "PAUSED_QUERY",
    "PAUSE_SIGNAL",
    "RESUME_SIGNAL",
    "STEPS_QUERY",
    "WAITING_QUERY",
    "PipeWorkflow",
    "SandboxedPipeWorkflow",
]
