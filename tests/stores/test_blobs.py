"""The blob store: content-addressed, pluggable, and how run inputs become references."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.stores._blobs import prepare_inputs
from durapipe.testing import text_pdf


class MemoryStore:
    """A store of another kind, to show the store is pluggable."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, data: bytes, *, media_type: str, name: str = "") -> dp.Blob:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        self.blobs[digest] = data
        return dp.Blob(blob=digest, media_type=media_type, size=len(data), name=name)

    def get(self, ref: dp.Blob) -> bytes:
        return self.blobs[ref.blob]


def test_local_store_is_content_addressed(tmp_path: Path) -> None:
    store = dp.stores.LocalBlobStore(tmp_path)
    first = store.put(b"hello", media_type="text/plain", name="a.txt")
    again = store.put(b"hello", media_type="text/plain", name="a.txt")
    assert first == again and first.blob == f"sha256:{hashlib.sha256(b'hello').hexdigest()}"
    assert store.get(first) == b"hello" and store.path(first).read_bytes() == b"hello"
    with pytest.raises(dp.stores.BlobNotFound):
        store.get(dp.Blob(blob="sha256:" + "1" * 64))


def test_files_for_document_inputs_become_references_and_text_inputs_read_text(
    tmp_path: Path,
) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(text_pdf(["Total 10"]))
    note = tmp_path / "note.txt"
    note.write_text("hello", encoding="utf-8")
    pipeline = dp.pipeline(
        dp.llm("ask", inputs={"doc": "document", "note": str}, prompt="{{ doc }} {{ note }}")
    )
    store = MemoryStore()
    prepared = prepare_inputs(pipeline, "ask", {"doc": pdf, "note": note}, store=store)
    assert prepared["note"] == "hello"
    ref = dp.Blob.model_validate(prepared["doc"])
    assert (ref.media_type, ref.name, ref.size) == (
        "application/pdf",
        "invoice.pdf",
        pdf.stat().st_size,
    )
    assert store.get(ref) == pdf.read_bytes()


def test_an_image_input_refuses_a_pdf_naming_pipe_and_input(tmp_path: Path) -> None:
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(text_pdf(["Total 10"]))
    pipeline = dp.pipeline(dp.extract("read", inputs={"photo": "image"}))
    with pytest.raises(dp.PipelineError) as caught:
        prepare_inputs(pipeline, "read", {"photo": pdf}, store=MemoryStore())
    assert (
        str(caught.value) == f"pipe 'read', input 'photo': '{pdf}' is application/pdf, not an image"
    )


async def test_an_installed_store_is_used_by_runs() -> None:
    store = MemoryStore()
    dp.stores.use_blob_store(store)
    try:
        result = await dp.run_local(
            dp.pipeline(dp.extract("read")), "read", {"document": text_pdf(["from memory"])}
        )
    finally:
        dp.stores.use_blob_store(None)
    assert result.output == [{"page": 1, "text": "from memory"}]
    assert len(store.blobs) == 1
