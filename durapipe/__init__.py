"""durapipe: durable AI pipelines on Temporal.

Define pipes in Python or YAML; every controller pipe runs as a Temporal workflow and every LLM or tool
call as its own retried activity. The same pipes run in-process with `run_local`.

Example:
    >>> import durapipe as dp
    >>> summarize = dp.llm("summarize", inputs={"article": str}, prompt="Summarize: {{ article }}")
    >>> pipeline = dp.pipeline(summarize)
    >>> result = asyncio.run(dp.run_local(pipeline, "summarize", {"article": "..."}))  # doctest: +SKIP
"""

from durapipe._client import DEFAULT_ADDRESS, RunHandle, connect, run, start
from durapipe._control import approve, cancel, pause, pending, reject, resume
from durapipe._dev import DevServer
from durapipe._errors import (
    ConfigError,
    DecisionRefused,
    DurapipeError,
    PipelineError,
    Problem,
    RunCancelled,
    RunError,
    RunNotFound,
    StepFailed,
)
from durapipe._schedules import (
    ScheduleSummary,
    create_schedule,
    delete_schedule,
    list_schedules,
    pause_schedule,
    trigger_schedule,
    unpause_schedule,
)
from durapipe.adapters import DEFAULT_TASK_QUEUE, RunResult, StepRecord, Usage
from durapipe.adapters._approvals import ApprovalDecision, ApprovalRequest
from durapipe.local import run_local
from durapipe.pipes import (
    OFFLINE_MODEL,
    ApprovalPipe,
    FieldSpec,
    LlmPipe,
    Pipe,
    Pipeline,
    RetrySpec,
    SequencePipe,
    Step,
    StructureSpec,
    ToolPipe,
    approval,
    llm,
    load,
    load_yaml,
    pipeline,
    resolve,
    sequence,
    step,
    tool,
    validate,
)
from durapipe.worker import DurapipePlugin, build_worker

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TASK_QUEUE",
    "OFFLINE_MODEL",
    "ApprovalDecision",
    "ApprovalPipe",
    "ApprovalRequest",
    "ConfigError",
    "DecisionRefused",
    "DevServer",
    "DurapipeError",
    "DurapipePlugin",
    "FieldSpec",
    "LlmPipe",
    "Pipe",
    "Pipeline",
    "PipelineError",
    "Problem",
    "RetrySpec",
    "RunCancelled",
    "RunError",
    "RunHandle",
    "RunNotFound",
    "RunResult",
    "ScheduleSummary",
    "SequencePipe",
    "Step",
    "StepFailed",
    "StepRecord",
    "StructureSpec",
    "ToolPipe",
    "Usage",
    "approval",
    "approve",
    "build_worker",
    "cancel",
    "connect",
    "create_schedule",
    "delete_schedule",
    "list_schedules",
    "llm",
    "load",
    "load_yaml",
    "pause",
    "pause_schedule",
    "pending",
    "pipeline",
    "reject",
    "resolve",
    "resume",
    "run",
    "run_local",
    "sequence",
    "start",
    "step",
    "tool",
    "trigger_schedule",
    "unpause_schedule",
    "validate",
]
