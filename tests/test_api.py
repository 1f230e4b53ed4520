"""The public API changes only on purpose: the exported names are pinned here."""

from __future__ import annotations

import durapipe

PUBLIC = [
    "new_encryption_key",
    "load_secrets_file",
    "encryption_from_env",
    "codec_app",
    "EncryptionError",
    "EncryptionCodec",
    "ConnectOptions",
    "DEFAULT_ADDRESS",
    "DEFAULT_TASK_QUEUE",
    "OFFLINE_MODEL",
    "ConfigError",
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
    "connect",
    "llm",
    "load",
    "load_yaml",
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
