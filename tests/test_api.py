"""The public API changes only on purpose: the exported names are pinned here."""

from __future__ import annotations

import durapipe

PUBLIC = [
    "BatchPipe",
    "ConditionPipe",
    "ParallelPipe",
    "batch",
    "bind",
    "branch",
    "condition",
    "parallel",
    "DEFAULT_ADDRESS",
    "DEFAULT_TASK_QUEUE",
    "OFFLINE_MODEL",
    "Blob",
    "BlobNotFound",
    "BlobStore",
    "AgentPipe",
    "ApprovalDecision",
    "ApprovalPipe",
    "ApprovalRequest",
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
    "RouteRule",
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
    "ToolError",
    "Telemetry",
    "ToolPipe",
    "Usage",
    "blob_store",
    "agent",
    "build_worker",
    "check_search_attributes",
    "build_workers",
    "connect",
    "extract",
    "image",
    "fetch_histories",
    "list_runs",
    "approval",
    "approve",
    "cancel",
    "create_schedule",
    "delete_schedule",
    "list_schedules",
    "llm",
    "load",
    "load_history",
    "list_runs",
    "load_yaml",
    "pause",
    "pause_schedule",
    "pending",
    "pipeline",
    "replay",
    "reject",
    "resolve",
    "resume",
    "retry",
    "run",
    "run_local",
    "sequence",
    "setup_search_attributes",
    "start",
    "step",
    "tool",
    "upload",
    "use_blob_store",
    "trigger_schedule",
    "unpause_schedule",
    "validate",
]


def test_public_names_are_pinned() -> None:
    assert sorted(durapipe.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(durapipe, name) is not None


def test_importing_durapipe_does_not_import_litellm() -> None:
    import subprocess
    import sys

    code = "import sys, durapipe, durapipe.cli; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the CLI must start fast; litellm takes seconds
