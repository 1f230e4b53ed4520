"""The extract operator: real PDF text extraction and real OCR, offline, in both spellings."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

import durapipe as dp
from durapipe.activities import local_pages
from durapipe.testing import scanned_pdf, text_image, text_pdf

pytestmark = pytest.mark.usefixtures("blob_dir")


def reader(**options: object) -> dp.Pipeline:
    return dp.pipeline(dp.extract("read", **options))  # type: ignore[arg-type]


async def test_pdf_text_layer_is_read_page_by_page() -> None:
    pdf = text_pdf(["Invoice INV-42\nTotal due: 1,234.50 EUR", "Terms (net 30)"])
    result = await dp.run_local(reader(), "read", {"document": pdf})
    assert result.output == [
        {"page": 1, "text": "Invoice INV-42\nTotal due: 1,234.50 EUR"},
        {"page": 2, "text": "Terms (net 30)"},
    ]
    assert result.steps[0].model == "durapipe/local" and result.steps[0].kind == "extract"


async def test_an_image_of_text_is_read_by_ocr() -> None:
    png = text_image("Acme Widgets GmbH\nTotal due: 1234.50 EUR")
    result = await dp.run_local(reader(), "read", {"document": png})
    assert result.output == [{"page": 1, "text": "Acme Widgets GmbH\nTotal due: 1234.50 EUR"}]


async def test_a_jpeg_given_to_an_image_input_is_read_too() -> None:
    jpeg = text_image("Receipt 2024-118", image_format="JPEG")
    pipeline = dp.pipeline(dp.extract("read", inputs={"photo": "image"}))
    result = await dp.run_local(pipeline, "read", {"photo": jpeg})
    assert result.output[0]["text"] == "Receipt 2024-118"


async def test_a_scanned_pdf_page_without_text_layer_is_read_by_ocr() -> None:
    pdf = scanned_pdf("Scanned receipt 77\nPaid in full")
    result = await dp.run_local(reader(), "read", {"document": pdf})
    assert result.output == [{"page": 1, "text": "Scanned receipt 77\nPaid in full"}]


async def test_text_output_joins_the_pages() -> None:
    pdf = text_pdf(["first page", "second page"])
    result = await dp.run_local(reader(output=str), "read", {"document": pdf})
    assert result.output == "first page\n\nsecond page"


async def test_an_unsupported_format_fails_without_retries() -> None:
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(reader(), "read", {"document": b"PK\x03\x04 a zip file"})
    assert caught.value.cause_type == "durapipe.UnsupportedDocument"
    assert "application/octet-stream" in caught.value.cause
    with pytest.raises(ApplicationError) as raised:
        await local_pages(b"PK\x03\x04", "application/zip")
    assert raised.value.non_retryable


async def test_a_reference_to_a_missing_blob_fails_naming_the_store() -> None:
    ref = {"blob": "sha256:" + "0" * 64, "media_type": "application/pdf", "size": 3}
    with pytest.raises(dp.StepFailed) as caught:
        await dp.run_local(reader(), "read", {"document": ref})
    assert caught.value.cause_type == "durapipe.BlobNotFound"
    assert "DURAPIPE_BLOB_DIR" in caught.value.cause


def test_yaml_and_python_spellings_of_extract_are_one_spec() -> None:
    from_yaml = dp.load_yaml(
        """
pipes:
  read:
    kind: extract
    inputs: {scan: image}
    model: mistral/mistral-ocr-latest
    language: eng+deu
    output: text
    timeout: 10m
"""
    )
    from_python = dp.pipeline(
        dp.extract(
            "read",
            inputs={"scan": "image"},
            model="mistral/mistral-ocr-latest",
            language="eng+deu",
            output=str,
            timeout="10m",
        )
    )
    assert from_yaml == from_python
    resolved = dp.resolve(from_yaml, "read").pipes["read"]
    assert resolved.timeout == 600.0 and resolved.retry == dp.RetrySpec(
        max_attempts=3, initial_interval=2.0
    )


def test_resolve_gives_extract_the_local_engine_not_the_chat_default() -> None:
    pipeline = dp.pipeline(dp.extract("read"), default_model="openai/gpt-4o-mini")
    resolved = dp.resolve(pipeline, "read").pipes["read"]
    assert isinstance(resolved, dp.spec.ExtractPipe)
    assert resolved.model == "durapipe/local" and resolved.timeout == 300.0
