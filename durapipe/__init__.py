"""durapipe: durable AI pipelines on Temporal.

Define pipes in Python or YAML; every controller pipe runs as a Temporal workflow and every LLM or tool
call as its own retried activity. The same pipes run in-process with `run_local`.

Example:
    >>> import durapipe as dp
    >>> summarize = dp.llm("summarize", inputs={"article": str}, prompt="Summarize: {{ article }}")
    >>> pipeline = dp.pipeline(summarize)
    >>> result = asyncio.run(dp.run_local(pipeline, "summarize", {"article": "..."}))  # doctest: +SKIP
"""

from durapipe._client import RunHandle, connect, run, start
from durapipe._codec import (
    EncryptionCodec,
    EncryptionError,
    encryption_from_env,
    new_encryption_key,
)
from durapipe._codec_server import codec_app
from durapipe._connection import DEFAULT_ADDRESS, ConnectOptions
from durapipe._dev import DevServer
from durapipe._errors import (
    ConfigError,
    DurapipeError,
    PipelineError,
    Problem,
    RunError,
    RunNotFound,
    StepFailed,
)
from durapipe._secrets import load_secrets_file
from durapipe.adapters import DEFAULT_TASK_QUEUE, RunResult, StepRecord, Usage
from durapipe.local import run_local
from durapipe.pipes import (
    OFFLINE_MODEL,
    FieldSpec,
    LlmPipe,
    Pipe,
    Pipeline,
    RetrySpec,
    SequencePipe,
    Step,
    StructureSpec,
    ToolPipe,
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
    "ConfigError",
    "ConnectOptions",
    "DevServer",
    "DurapipeError",
    "DurapipePlugin",
    "EncryptionCodec",
    "EncryptionError",
    "FieldSpec",
    "LlmPipe",
    "Pipe",
    "Pipeline",
    "PipelineError",
    "Problem",
    "RetrySpec",
    "RunError",
    "RunHandle",
    "RunNotFound",
    "RunResult",
    "SequencePipe",
    "Step",
    "StepFailed",
    "StepRecord",
    "StructureSpec",
    "ToolPipe",
    "Usage",
    "build_worker",
    "codec_app",
    "connect",
    "encryption_from_env",
    "llm",
    "load",
    "load_secrets_file",
    "load_yaml",
    "new_encryption_key",
    "pipeline",
    "resolve",
    "run",
    "run_local",
    "sequence",
    "start",
    "step",
    "tool",
    "validate",
]
