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
    ToolError,
)
from durapipe._replay import ReplayReport, fetch_histories, load_history, replay
from durapipe._runs import (
    RunSummary,
    check_search_attributes,
    list_runs,
    setup_search_attributes,
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
from durapipe._telemetry import Telemetry
from durapipe.adapters import DEFAULT_TASK_QUEUE, RunResult, StepRecord, Usage
from durapipe.adapters._approvals import ApprovalDecision, ApprovalRequest
from durapipe.adapters._blobs import (
    BlobNotFound,
    BlobStore,
    LocalBlobStore,
    blob_store,
    upload,
    use_blob_store,
)
from durapipe.local import run_local
from durapipe.pipes import (
    OFFLINE_MODEL,
    AgentPipe,
    ApprovalPipe,
    Blob,
    ExtractPipe,
    FieldSpec,
    ImagePipe,
    LlmPipe,
    Page,
    Pipe,
    Pipeline,
    RetrySpec,
    SequencePipe,
    Step,
    StructureSpec,
    ToolPipe,
    agent,
    approval,
    extract,
    image,
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
    "AgentPipe",
    "ApprovalDecision",
    "ApprovalPipe",
    "ApprovalRequest",
    "Blob",
    "BlobNotFound",
    "BlobStore",
    "ConfigError",
    "DecisionRefused",
    "DevServer",
    "DurapipeError",
    "DurapipePlugin",
    "ExtractPipe",
    "FieldSpec",
    "ImagePipe",
    "LlmPipe",
    "LocalBlobStore",
    "Page",
    "Pipe",
    "Pipeline",
    "PipelineError",
    "Problem",
    "ReplayReport",
    "RetrySpec",
    "RunCancelled",
    "RunError",
    "RunHandle",
    "RunNotFound",
    "RunResult",
    "RunSummary",
    "ScheduleSummary",
    "SequencePipe",
    "Step",
    "StepFailed",
    "StepRecord",
    "StructureSpec",
    "Telemetry",
    "ToolError",
    "ToolPipe",
    "Usage",
    "agent",
    "approval",
    "approve",
    "blob_store",
    "build_worker",
    "cancel",
    "check_search_attributes",
    "connect",
    "create_schedule",
    "delete_schedule",
    "extract",
    "fetch_histories",
    "image",
    "list_runs",
    "list_schedules",
    "llm",
    "load",
    "load_history",
    "load_yaml",
    "pause",
    "pause_schedule",
    "pending",
    "pipeline",
    "reject",
    "replay",
    "resolve",
    "resume",
    "run",
    "run_local",
    "sequence",
    "setup_search_attributes",
    "start",
    "step",
    "tool",
    "trigger_schedule",
    "unpause_schedule",
    "upload",
    "use_blob_store",
    "validate",
]
