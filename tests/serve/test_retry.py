"""`durapipe retry` of a run `durapipe serve` started keeps the run's memo (its MTHDS concepts and
`output_name`), so the lifecycle's results of the retried run read as a first success would."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest
from pipelex_sdk.runs import WaitForResultOptions

import durapipe as dp
from tests.serve.conftest import Served, lifecycle_client, mthds_client

BUNDLE = {
    "retried.mthds": """
domain = "retried"

[concept.Verdict]
description = "What the judge says"
refines     = "Text"

[pipe.judge]
type          = "PipeFunc"
description   = "Judge the text (fails until the test mends it)"
inputs        = { text = "Text" }
output        = "Verdict"
function_name = "tests.serve.serve_tools.mended"
"""
}


async def test_a_retried_serve_run_keeps_its_concepts_and_output_name(
    served: Served, temporal_address: str, gate_dir: Path
) -> None:
    text = f"retry me {uuid.uuid4().hex[:8]}"
    inputs = {"text": {"concept": "native.Text", "content": {"text": text}}}
    async with mthds_client(served) as client:
        started = await client.start(
            pipe_code="judge", files=BUNDLE, inputs=inputs, output_name="verdict"
        )
    run_id = started.pipeline_run_id
    temporal = await dp.connect(temporal_address, checkpoints=None)
    with pytest.raises(dp.StepFailed):
        await dp.RunHandle(temporal, run_id).result()
    async with lifecycle_client(served.url) as lifecycle:
        assert (await lifecycle.get_run_status(run_id)).status == "FAILED"
        key = hashlib.sha256(text.encode()).hexdigest()[:12]
        (gate_dir / f"mend-{key}").touch()
        await (await dp.client.redrive(temporal, run_id)).result()
        results = await lifecycle.wait_for_result(
            run_id, WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
        )
    assert results.working_memory is not None
    memory = results.working_memory
    assert memory.aliases == {"main_stuff": "verdict"}
    verdict = memory.root["verdict"]
    assert verdict.concept == "retried.Verdict"
    assert verdict.content == {"text": f"mended: {text}"}
    assert memory.root["text"].concept == "native.Text"
