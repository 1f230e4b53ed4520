"""The Temporal workflows that interpret controller specs."""

from durapipe.workflows._interpret import Interpreter, Runtime
from durapipe.workflows._memory import join_path, lookup
from durapipe.workflows._workflow import (
    PAUSE_SIGNAL,
    RESUME_SIGNAL,
    STEPS_QUERY,
    WAITING_QUERY,
    PipeWorkflow,
    SandboxedPipeWorkflow,
)

__all__ = [
    "PAUSE_SIGNAL",
    "RESUME_SIGNAL",
    "STEPS_QUERY",
    "WAITING_QUERY",
    "Interpreter",
    "PipeWorkflow",
    "Runtime",
    "SandboxedPipeWorkflow",
    "join_path",
    "lookup",
]
