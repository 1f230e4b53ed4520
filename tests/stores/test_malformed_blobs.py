"""A blob reference written by hand that is not one: refused at once, in one sentence.

Before the run when it can be known (the run's input, or a sequence's input passed by name to a
step's document input); otherwise the step fails at once, ``durapipe.InvalidInput``, never retried.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from tests.support import run_cli

pytestmark = pytest.mark.usefixtures("blob_dir")

MALFORMED = [
    {"blob": "sha256:zz"},
    {"blob": "sha256:" + "a" * 63, "media_type": "application/pdf"},
    {"blob": 42},
    "sha256:" + "a" * 64,
]

SEQUENCE_YAML = """
pipes:
  read:
    kind: sequence
    inputs: {doc: any}
    steps:
      - {pipe: pages, result: pages, inputs: {document: doc}}
    output: pages
  pages:
    kind: extract
    inputs: {document: document}
"""


def malformed_reference() -> Any:
    """A tool whose output, typed ``any``, is a blob reference that is not one."""
    return {"blob": "sha256:zz", "media_type": "application/pdf"}


def _assert_one_sentence(text: str) -> None:
    assert "pydantic" not in text and "Traceback" not in text, text
    assert "sha256:<64 hex digits>" in text, text


@pytest.mark.parametrize("value", MALFORMED, ids=["short", "63-digits", "number", "bare-text"])
def test_a_run_input_that_is_not_a_blob_reference_is_refused_before_the_run(
    tmp_path: Path, value: object
) -> None:
    pipeline = tmp_path / "read.yaml"
    pipeline.write_text("pipes:\n  read:\n    kind: extract\n    inputs: {document: document}\n")
    started = time.monotonic()
    result = run_cli(
        "run",
        "read",
        "--file",
        str(pipeline),
        "--local",
        "--input-json",
        json.dumps({"document": value}),
    )
    assert result.returncode != 0, result
    assert "nothing was started" in result.stderr, result.stderr
    assert "pipe 'read', input 'document'" in result.stderr, result.stderr
    if isinstance(value, dict):
        _assert_one_sentence(result.stderr)
    assert len([line for line in result.stderr.splitlines() if line.startswith("  - ")]) == 1
    assert time.monotonic() - started < 30


def test_a_sequence_input_typed_any_reaching_a_document_input_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    pipeline = tmp_path / "read.yaml"
    pipeline.write_text(SEQUENCE_YAML)
    result = run_cli(
        "run",
        "read",
        "--file",
        str(pipeline),
        "--local",
        "--input-json",
        json.dumps({"doc": {"blob": "sha256:zz"}}),
    )
    assert result.returncode != 0, result
    assert "nothing was started" in result.stderr, result.stderr
    assert "pipe 'read', input 'doc'" in result.stderr, result.stderr
    assert "step 'pages' (pipe 'pages')" in result.stderr, result.stderr
    assert "input 'document'" in result.stderr and "'sha256:zz'" in result.stderr
    _assert_one_sentence(result.stderr)
    assert len([line for line in result.stderr.splitlines() if line.startswith("  - ")]) == 1


def _from_a_tool() -> dp.Pipeline:
    reference = dp.tool(malformed_reference)
    pages = dp.extract("pages", retry={"initial_interval": 1})
    return dp.pipeline(
        dp.sequence("read", steps=[dp.step(reference, result="document"), dp.step(pages)])
    )


async def test_a_malformed_reference_from_a_step_fails_the_next_step_at_once_locally() -> None:
    started = time.monotonic()
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(_from_a_tool(), "read", {})
    failed = caught.value
    assert failed.cause_type == "durapipe.InvalidInput"
    assert failed.path == "pages" and failed.attempts <= 1
    assert "step 'pages' (pipe 'pages'), input 'document'" in failed.cause
    _assert_one_sentence(failed.cause)
    # Retried, three attempts a second apart at least; refused, no wait at all.
    assert time.monotonic() - started < 1.5


async def test_a_malformed_reference_fails_its_step_at_once_on_temporal(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = _from_a_tool()
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"malformed-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    async with dp.build_worker(client, task_queue=task_queue):
        with pytest.raises(dp.RunError) as caught:
            await dp.run(client, pipeline, "read", {}, run_id=run_id, task_queue=task_queue)
    text = str(caught.value)
    assert "durapipe.InvalidInput" in text or "not a blob reference" in text, text
    assert "step 'pages' (pipe 'pages'), input 'document'" in text, text
    _assert_one_sentence(text)
    assert time.monotonic() - started < 15
