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
from durapipe._dev import DevServer
from durapipe._errors import (
    ConfigError,
    DurapipeError,
    PipelineError,
    Problem,
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
from durapipe._telemetry import Telemetry
from durapipe.adapters import DEFAULT_TASK_QUEUE, RunResult, StepRecord, Usage
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
    "Blob",
    "BlobNotFound",
    "BlobStore",
    "ConfigError",
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
    "RunError",
    "RunHandle",
    "RunNotFound",
    "RunResult",
    "RunSummary",
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
    "blob_store",
    "build_worker",
    "check_search_attributes",
    "connect",
    "extract",
    "fetch_histories",
    "image",
    "list_runs",
    "llm",
    "load",
    "load_history",
    "load_yaml",
    "pipeline",
    "replay",
    "resolve",
    "run",
    "run_local",
    "sequence",
    "setup_search_attributes",
    "start",
    "step",
    "tool",
    "upload",
    "use_blob_store",
    "validate",
]
