"""durapipe: durable AI pipelines on Temporal.

Define pipes in Python or YAML; every controller pipe runs as a Temporal workflow and every LLM or tool
call as its own retried activity. The same pipes run in-process with `run_local`.

Example:
    >>> import durapipe as dp
    >>> summarize = dp.llm("summarize", inputs={"article": str}, prompt="Summarize: {{ article }}")
    >>> pipeline = dp.pipeline(summarize)
    >>> result = asyncio.run(dp.run_local(pipeline, "summarize", {"article": "..."}))  # doctest: +SKIP
"""

# `python -m durapipe` imports this package before its `__main__`: the command's quiet Ctrl-C
# (exit 130, no traceback) is put in place before the imports below take their second.
import durapipe_entry as _entry

if _entry.is_python_m_durapipe():
    _entry.quiet_interrupts()

# The operation submodules, reachable as `dp.ops`, `dp.client`... after `import durapipe as dp`.
from durapipe import client as client
from durapipe import ops as ops
from durapipe import security as security
from durapipe import spec as spec
from durapipe import stores as stores
from durapipe._errors import (
    ConfigError,
    DecisionRefused,
    DurapipeError,
    PipelineError,
    Problem,
    RunCancelled,
    RunError,
    RunNotFound,
    RunStalled,
    StepFailed,
    ToolError,
)
from durapipe.adapters import (
    DEFAULT_TASK_QUEUE,
    Pipe,
    agent,
    approval,
    batch,
    bind,
    branch,
    condition,
    extract,
    image,
    llm,
    load,
    load_yaml,
    parallel,
    pipeline,
    sequence,
    step,
    tool,
)
from durapipe.client import (
    DEFAULT_ADDRESS,
    ConnectOptions,
    RunHandle,
    RunSummary,
    Telemetry,
    connect,
    list_runs,
    run,
    start,
)
from durapipe.local import run_local
from durapipe.runtime import RunResult, StepRecord, Usage
from durapipe.runtime._approvals import ApprovalDecision, ApprovalRequest
from durapipe.spec import (
    OFFLINE_MODEL,
    Blob,
    FieldSpec,
    LimitRule,
    Page,
    Pipeline,
    RetrySpec,
    RouteRule,
    Step,
    StructureSpec,
    resolve,
    validate,
)
from durapipe.stores import upload
from durapipe.worker import DurapipePlugin, build_worker, build_workers

# The core a newcomer needs: spelling pipes, running them, the results and the errors. Operations
# live in submodules: `durapipe.client` (run control beyond `RunHandle`), `durapipe.ops` (dev
# server, replay, schedules, codec server), `durapipe.security`, `durapipe.stores`, `durapipe.spec`
# (the pipe kinds' spec classes) and `durapipe.testing`.
__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_TASK_QUEUE",
    "OFFLINE_MODEL",
    "ApprovalDecision",
    "ApprovalRequest",
    "Blob",
    "ConfigError",
    "ConnectOptions",
    "DecisionRefused",
    "DurapipeError",
    "DurapipePlugin",
    "FieldSpec",
    "LimitRule",
    "Page",
    "Pipe",
    "Pipeline",
    "PipelineError",
    "Problem",
    "RetrySpec",
    "RouteRule",
    "RunCancelled",
    "RunError",
    "RunHandle",
    "RunNotFound",
    "RunResult",
    "RunStalled",
    "RunSummary",
    "Step",
    "StepFailed",
    "StepRecord",
    "StructureSpec",
    "Telemetry",
    "ToolError",
    "Usage",
    "agent",
    "approval",
    "batch",
    "bind",
    "branch",
    "build_worker",
    "build_workers",
    "condition",
    "connect",
    "extract",
    "image",
    "list_runs",
    "llm",
    "load",
    "load_yaml",
    "parallel",
    "pipeline",
    "resolve",
    "run",
    "run_local",
    "sequence",
    "start",
    "step",
    "tool",
    "upload",
    "validate",
]
