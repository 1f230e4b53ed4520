"""The extract operator: a document or image (a blob reference) becomes pages of text.

The embedded engine, ``durapipe/local``, works offline: pypdf reads the text layer of a PDF, and the
tesseract OCR engine reads images and scanned pages (pages with no text layer). Any other model string
goes to litellm's OCR API (``mistral/mistral-ocr-latest``, ...).
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import pydantic
from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe.activities._models import check_models
from durapipe.activities._registry import CallContext, register_activity
from durapipe.activities._settings import check_settings, provider_settings
from durapipe.adapters._litellm import classify, litellm_module, response_cost
from durapipe.adapters._plan import ACTIVITY_NAMES
from durapipe.runtime._calls import ExtractCall, LeafResult, Usage
from durapipe.runtime._spend import paid
from durapipe.spec import LOCAL_EXTRACTOR, Blob, not_a_blob
from durapipe.spec._deck import ModelDeck
from durapipe.stores._blobs import BlobNotFound, blob_store
from durapipe.stores._checkpoints import CheckpointStore, checkpoint_key, checkpointed
from durapipe.stores._limits import limited

TESSERACT = "tesseract"


async def run_extract(
    call: ExtractCall,
    attempt: int = 1,
    checkpoints: CheckpointStore | None = None,
    deck: ModelDeck | None = None,
) -> LeafResult:
    """Run one extract call: the activity body, shared by Temporal and the local runner.

    A result stored in ``checkpoints`` under the call's key (the pipe and the document's blob
    reference) is returned without reading the document again.

    Raises:
        ApplicationError: the blob is missing, the format is unsupported, OCR is unavailable
            (non-retryable), a setting the pipe may not carry, a model this worker does not call,
            or a classified provider error.
    """
    check_settings("extract", call.pipe_name, call.pipe.settings)
    pipe = call.pipe
    check_models("extract", call.pipe_name, pipe.model or LOCAL_EXTRACTOR, pipe.fallbacks, deck)
    return await checkpointed(
        checkpoints, call, checkpoint_key(call), attempt, lambda: _extract(call, attempt, deck)
    )


async def _extract(call: ExtractCall, attempt: int, deck: ModelDeck | None) -> LeafResult:
    pipe = call.pipe
    ref = blob_input(call.path, call.pipe_name, call.inputs)
    data = await read_blob(ref)
    models = [pipe.model or LOCAL_EXTRACTOR, *pipe.fallbacks]
    for index, model in enumerate(models):
        try:
            texts, usage = await _pages(call, model, data, ref.media_type, deck)
            break
        except ApplicationError:
            if index == len(models) - 1:
                raise
            # the next engine of the waterfall reads the same document, within this attempt
    output: Any = [{"page": number, "text": text} for number, text in enumerate(texts, start=1)]
    if pipe.output == "text":
        output = "\n\n".join(texts)
    return LeafResult(output=output, usage=usage, model=model, attempt=attempt)


async def _pages(
    call: ExtractCall, model: str, data: bytes, media_type: str, deck: ModelDeck | None
) -> tuple[list[str], Usage]:
    """The text of each page, read by ``model`` (the local engine or a litellm OCR model)."""
    pipe = call.pipe
    if model == LOCAL_EXTRACTOR:
        return await local_pages(data, media_type, pipe.language), Usage()
    async with limited(call, model) as lease:
        settings = provider_settings("extract", call.pipe_name, model, pipe.settings, deck)
        texts, usage = await _model_pages(model, data, media_type, settings, pipe.timeout)
        lease.used(usage)
    return texts, usage


def blob_input(path: str, pipe_name: str, inputs: dict[str, Any]) -> Blob:
    """The document of an extract call, as a blob reference.

    Raises:
        ApplicationError: the value is not a blob reference (``durapipe.InvalidInput``, not
            retried: no attempt can make it one).
    """
    name, value = next(iter(inputs.items()))
    try:
        return Blob.model_validate(value)
    except pydantic.ValidationError as err:
        raise ApplicationError(
            f"step '{path}' (pipe '{pipe_name}'), input '{name}': {not_a_blob(value, err)}",
            type=ErrorType.INVALID_INPUT,
            non_retryable=True,
        ) from None


async def read_blob(ref: Blob) -> bytes:
    """The bytes of ``ref`` from this process's blob store (a missing blob is not retried)."""
    try:
        return await asyncio.to_thread(blob_store().get, ref)
    except BlobNotFound as err:
        raise ApplicationError(
            str(err), type=ErrorType.BLOB_NOT_FOUND, non_retryable=True
        ) from None


async def local_pages(data: bytes, media_type: str, language: str = "eng") -> list[str]:
    """The text of each page with the embedded engine (pypdf, then tesseract for scans and images)."""
    if media_type == "application/pdf":
        pages = []
        for text, scans in await asyncio.to_thread(_pdf_layers, data):
            if not text.strip():  # a scanned page: no text layer, so read its images
                text = "\n".join([await ocr(scan, language) for scan in scans])
            pages.append(text.strip())
        return pages
    if media_type.startswith("image/"):
        return [await ocr(data, language)]
    if media_type.startswith("text/"):
        return [data.decode("utf-8", errors="replace")]
    raise ApplicationError(
        f"cannot extract text from {media_type} with {LOCAL_EXTRACTOR} (PDF, images and text files only)",
        type=ErrorType.UNSUPPORTED_DOCUMENT,
        non_retryable=True,
    )


def _pdf_layers(data: bytes) -> list[tuple[str, list[bytes]]]:
    """Each page's text layer and, for pages without one, its images as PNG."""
    import pypdf  # imported here: the worker pays for it only when it extracts

    try:
        layers = []
        for page in pypdf.PdfReader(io.BytesIO(data)).pages:
            text = page.extract_text() or ""
            scans = [] if text.strip() else [_png(image.data) for image in page.images]
            layers.append((text, scans))
    except pypdf.errors.PdfReadError as err:
        raise ApplicationError(
            f"the PDF cannot be read: {err}",
            type=ErrorType.UNSUPPORTED_DOCUMENT,
            non_retryable=True,
        ) from None
    return layers


def _png(image: bytes) -> bytes:
    """Any image pypdf finds, as PNG (tesseract reads PNG whatever the PDF's own encoding was)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(image)).save(buffer, format="PNG")
    return buffer.getvalue()


async def ocr(image: bytes, language: str = "eng") -> str:
    """The text tesseract reads in ``image`` (PNG, JPEG, TIFF, ...).

    Raises:
        ApplicationError: tesseract is not installed or cannot read the image (non-retryable).
    """
    try:
        process = await asyncio.create_subprocess_exec(
            TESSERACT,
            "stdin",
            "stdout",
            "-l",
            language,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise ApplicationError(
            "the tesseract OCR engine is not installed on this worker: run `make ocr` "
            "(apt-get install tesseract-ocr) or give the extract pipe an OCR model",
            type=ErrorType.OCR_UNAVAILABLE,
            non_retryable=True,
        ) from None
    try:
        out, err = await process.communicate(image)
    except asyncio.CancelledError:
        process.kill()  # a cancelled or timed-out step must not leave OCR running
        raise
    if process.returncode != 0:
        reason = err.decode(errors="replace").strip().splitlines()
        raise ApplicationError(
            f"tesseract failed: {reason[-1] if reason else f'exit code {process.returncode}'}",
            type=ErrorType.OCR_FAILED,
            non_retryable=True,
        )
    return out.decode("utf-8", errors="replace").strip()


async def _model_pages(
    model: str, data: bytes, media_type: str, settings: dict[str, Any], timeout: float | None
) -> tuple[list[str], Usage]:
    litellm = litellm_module()
    url = f"data:{media_type};base64,{base64.b64encode(data).decode()}"
    kind = "image_url" if media_type.startswith("image/") else "document_url"
    try:
        response = await litellm.aocr(
            model=model, document={"type": kind, kind: url}, timeout=timeout, **settings
        )
    except Exception as err:
        # from None: the provider's own exception may quote the key it was sent (see _image).
        raise classify(err, model=model) from None
    spent = Usage(cost_usd=response_cost(response))
    paid(spent, model)  # billed, whatever happens to the pages after
    pages = sorted(response.pages, key=lambda page: page.index)
    return [page.markdown for page in pages], spent


@register_activity(ACTIVITY_NAMES["extract"], metered=True)
async def extract(call: ExtractCall, context: CallContext) -> LeafResult:
    """Read the pages of a document or image (``durapipe.extract``)."""
    return await run_extract(call, context.attempt, context.checkpoints, context.deck)
