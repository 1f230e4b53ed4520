"""Translation (pipe spec -> workflow and activity plan) and provider adapters (litellm)."""

from durapipe.adapters._calls import (
    LeafCall,
    LeafResult,
    LlmCall,
    PipeRun,
    RunResult,
    StepFailure,
    StepRecord,
    ToolCall,
    Usage,
)
from durapipe.adapters._plan import (
    ACTIVITY_NAMES,
    DEFAULT_TASK_QUEUE,
    WORKFLOW_NAME,
    activity_options,
    child_workflow_id,
    new_run_id,
    pipe_run,
    retry_policy,
    summary,
)

__all__ = [
    "ACTIVITY_NAMES",
    "DEFAULT_TASK_QUEUE",
    "WORKFLOW_NAME",
    "LeafCall",
    "LeafResult",
    "LlmCall",
    "PipeRun",
    "RunResult",
    "StepFailure",
    "StepRecord",
    "ToolCall",
    "Usage",
    "activity_options",
    "child_workflow_id",
    "new_run_id",
    "pipe_run",
    "retry_policy",
    "summary",
]
