"""Translation (pipe spec -> workflow and activity plan) and provider adapters (litellm)."""

from durapipe.adapters._calls import (
    BatchSlice,
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
    batch_history_bound,
    child_workflow_id,
    new_run_id,
    retry_policy,
    run_workflow_id,
    summary,
)

__all__ = [
    "ACTIVITY_NAMES",
    "DEFAULT_TASK_QUEUE",
    "WORKFLOW_NAME",
    "BatchSlice",
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
    "batch_history_bound",
    "child_workflow_id",
    "new_run_id",
    "retry_policy",
    "run_workflow_id",
    "summary",
]
