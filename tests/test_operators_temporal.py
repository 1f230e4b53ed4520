"""extract and image on the real dev server: activities, summaries, parity with --local, and no
binary content in any workflow history (only blob references travel)."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest

import durapipe as dp
from tests.conftest import EXAMPLES
from tests.support import history_events, run_cli, scheduled_activities

INVOICE_PDF = EXAMPLES / "invoice.pdf"


pytestmark = pytest.mark.usefixtures("blob_dir")


def assert_no_bytes_of(content: bytes, histories: list[bytes]) -> None:
    # Any 48-byte window of the file, raw or base64-encoded, would show the bytes travelled.
    probes = [content[i : i + 48] for i in range(0, len(content) - 48, 256)]
    probes += [base64.b64encode(p)[:40] for p in probes]
    for history in histories:
        assert not [p for p in probes if p in history]


async def test_invoice_on_temporal_carries_a_blob_reference_and_matches_local(
    temporal_address: str, task_queue: str
) -> None:
    pipeline = dp.load(EXAMPLES / "invoice.yaml")
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"invoice-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client,
            pipeline,
            "invoice",
            {"document": INVOICE_PDF},
            run_id=run_id,
            task_queue=task_queue,
        )
    local = await dp.run_local(pipeline, "invoice", {"document": INVOICE_PDF})
    assert result.output == local.output
    invoice = result.output["invoice"]
    assert invoice["currency"] in ("EUR", "USD", "GBP") and invoice["line_items"]
    # The condition sends only large invoices to review; this one is small, so nothing ran.
    assert invoice["total"] <= 1000 and result.output["review"] is None
    assert [(s.path, s.kind, s.model) for s in result.steps] == [
        ("read_invoice", "extract", "durapipe/local"),
        ("structure_invoice", "llm", "durapipe/offline"),
        ("route_by_total", "condition", None),
    ]
    events = await history_events(client, run_id)
    assert scheduled_activities(events) == [
        ("durapipe.extract", "read_invoice", "extract read_invoice · durapipe/local"),
        ("durapipe.llm", "structure_invoice", "llm structure_invoice · durapipe/offline"),
    ]
    history = b"".join(e.SerializeToString() for e in events)
    assert b"sha256:" in history and b"TOTAL DUE (GBP)" in history  # the ref, and extracted text
    assert_no_bytes_of(INVOICE_PDF.read_bytes(), [history])


async def test_image_on_temporal_returns_a_reference_to_the_same_png_as_local(
    temporal_address: str, task_queue: str, blob_dir: Path
) -> None:
    pipeline = dp.pipeline(
        dp.image(
            "cover", inputs={"topic": str}, prompt="A poster about {{ topic }}", size="320x200"
        )
    )
    client = await dp.connect(temporal_address, pipeline=pipeline)
    run_id = f"cover-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client, pipeline, "cover", {"topic": "tides"}, run_id=run_id, task_queue=task_queue
        )
    local = await dp.run_local(pipeline, "cover", {"topic": "tides"})
    assert result.output == local.output
    png = dp.stores.LocalBlobStore(blob_dir).get(dp.Blob.model_validate(result.output))
    events = await history_events(client, run_id)
    assert [a[2] for a in scheduled_activities(events)] == ["image cover · durapipe/offline"]
    assert_no_bytes_of(png, [b"".join(e.SerializeToString() for e in events)])


def test_cli_uploads_a_document_input_given_as_a_file() -> None:
    done = run_cli(
        "run", "invoice", "--file", str(EXAMPLES / "invoice.py"), "--local", "--json",
        "--input", f"document=@{INVOICE_PDF}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)["invoice"]) >= {"vendor", "total", "line_items"}
    missing = run_cli(
        "run", "invoice", "--file", str(EXAMPLES / "invoice.py"), "--local",
        "--input", "document=@no-such-invoice.pdf",
    )  # fmt: skip
    assert missing.returncode == 2
    assert (
        missing.stderr
        == "error: --input document: cannot read 'no-such-invoice.pdf': no such file\n"
    )
