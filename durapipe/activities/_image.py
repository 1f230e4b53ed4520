"""The image operator: render the prompt, generate one image (or N), store each, return the blob
reference (or the list of them); a waterfall's next model is tried when one fails.

Real models go through litellm's ``aimage_generation``. The offline model draws a labelled
placeholder PNG instead: the same prompt and size always give the same bytes (and so the same blob).
"""

from __future__ import annotations

import asyncio
import base64
import io
import textwrap
from typing import Any

import aiohttp
from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe.activities._llm import render_for
from durapipe.activities._models import check_models
from durapipe.activities._registry import CallContext, register_activity
from durapipe.activities._settings import check_settings, provider_settings
from durapipe.adapters._litellm import classify, image_takes, litellm_module, response_cost
from durapipe.adapters._plan import ACTIVITY_NAMES
from durapipe.runtime._calls import ImageCall, LeafResult, Usage
from durapipe.runtime._spend import paid
from durapipe.spec import OFFLINE_MODEL
from durapipe.spec._deck import ModelDeck
from durapipe.stores._blobs import blob_store
from durapipe.stores._checkpoints import CheckpointStore, checkpoint_key, checkpointed
from durapipe.stores._limits import limited

PLACEHOLDER_LABEL = "durapipe offline placeholder"


async def run_image(
    call: ImageCall,
    attempt: int = 1,
    checkpoints: CheckpointStore | None = None,
    deck: ModelDeck | None = None,
) -> LeafResult:
    """Run one image call: the activity body, shared by Temporal and the local runner.

    A result stored in ``checkpoints`` under the call's key is returned without generating again
    (the image itself stays in the blob store).

    Raises:
        ApplicationError: a template error, a setting the pipe may not carry or a model this
            worker does not call (non-retryable), or a classified provider error.
    """
    check_settings("image", call.pipe_name, call.pipe.settings)
    pipe = call.pipe
    check_models("image", call.pipe_name, pipe.model or OFFLINE_MODEL, pipe.fallbacks, deck)
    return await checkpointed(
        checkpoints, call, checkpoint_key(call), attempt, lambda: _image(call, attempt, deck)
    )


async def _image(call: ImageCall, attempt: int, deck: ModelDeck | None) -> LeafResult:
    pipe = call.pipe
    prompt = render_for(call.pipe_name, "prompt", pipe.prompt, call.inputs)
    models = [pipe.model or OFFLINE_MODEL, *pipe.fallbacks]
    for index, model in enumerate(models):
        try:
            pngs, usage = await _images(call, model, prompt, deck)
            break
        except ApplicationError:
            if index == len(models) - 1:
                raise
            # the next model of the waterfall gets the same request, within this attempt
    # The provider answers in the format the pipe asks for (``output_format``), PNG by default.
    kind = image_format(pipe.settings)
    refs = [
        (
            await asyncio.to_thread(
                blob_store().put,
                png,
                media_type=f"image/{kind}",
                name=f"{call.pipe_name}.{kind}",
            )
        ).model_dump(mode="json")
        for png in pngs
    ]
    output: Any = refs[0] if pipe.output == "image" else refs
    return LeafResult(output=output, usage=usage, model=model, attempt=attempt)


async def _images(
    call: ImageCall, model: str, prompt: str, deck: ModelDeck | None
) -> tuple[list[bytes], Usage]:
    """``pipe.count`` images of ``prompt`` from ``model`` (one call, the provider's ``n``)."""
    pipe = call.pipe
    if model == OFFLINE_MODEL:
        # Each placeholder names its place among the images, so N images are N distinct blobs.
        labels = (
            [prompt]
            if pipe.count == 1
            else [f"{prompt} ({i} of {pipe.count})" for i in range(1, pipe.count + 1)]
        )
        refuse_placeholder_size(call.pipe_name, pipe.size)
        kind = image_format(pipe.settings)
        pngs = [
            await asyncio.to_thread(placeholder_png, label, pipe.size, kind) for label in labels
        ]
        return pngs, Usage()
    async with limited(call, model) as lease:
        settings = provider_settings("image", call.pipe_name, model, pipe.settings, deck)
        settings = {
            name: value
            for name, value in settings.items()
            if name not in SOME_MODELS_TAKE or image_takes(model, name, settings)
        }
        pngs, usage = await _generate(model, prompt, pipe.size, settings, pipe.timeout, pipe.count)
        lease.used(usage)
    return pngs, usage


# The largest placeholder the offline model draws (48 MiB of pixels). A size comes from the run's
# spec, which any client sends: the spec's pattern lets it reach 99999x99999, 30 GB to allocate.
PLACEHOLDER_MAX = (4096, 4096)


def refuse_placeholder_size(pipe_name: str, size: str) -> None:
    """Refuse a placeholder larger than `PLACEHOLDER_MAX`.

    Raises:
        ApplicationError: non-retryable ``durapipe.BadRequest`` naming the pipe and field.
    """
    width, height = (int(part) for part in size.split("x"))
    most_wide, most_high = PLACEHOLDER_MAX
    if width > most_wide or height > most_high:
        raise ApplicationError(
            f"pipe '{pipe_name}', field 'size': the offline image model draws at most "
            f"{most_wide}x{most_high}, not {size}",
            type=ErrorType.BAD_REQUEST,
            non_retryable=True,
        )


# Image settings only some models take (MTHDS's seed and is_raw): a request to a model whose
# litellm image config does not list them goes without them (OpenAI's images API has neither, and
# answers 400 to a parameter it does not know).
SOME_MODELS_TAKE = frozenset({"seed", "raw"})
# The image formats an image pipe's ``output_format`` setting names (OpenAI's and the MTHDS spec's).
IMAGE_FORMATS = ("png", "jpeg", "webp")


def image_format(settings: dict[str, Any]) -> str:
    """The format the images of a pipe with ``settings`` come in: its ``output_format``, else PNG."""
    asked = settings.get("output_format")
    return asked if asked in IMAGE_FORMATS else "png"


def placeholder_png(prompt: str, size: str = "1024x1024", kind: str = "png") -> bytes:
    """An image of ``size`` that says it is a placeholder and shows the prompt; deterministic.

    ``kind`` is its format (``png``, ``jpeg`` or ``webp``), as a pipe's ``output_format`` asks.
    """
    from PIL import Image, ImageDraw, ImageFont

    width, height = (int(part) for part in size.split("x"))
    image = Image.new("RGB", (width, height), (236, 239, 244))
    draw = ImageDraw.Draw(image)
    unit = max(10, min(width, height) // 24)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(90, 100, 120), width=max(2, unit // 4))
    draw.text(
        (unit, unit), PLACEHOLDER_LABEL, fill=(170, 40, 40), font=ImageFont.load_default(unit)
    )
    body = ImageFont.load_default(max(8, unit * 3 // 4))
    per_line, most_lines = max(10, int(width / (unit * 0.45))), max(1, (height - 4 * unit) // unit)
    # Only what can fit is wrapped (four times the characters the lines hold: wrapped lines are
    # at least half full, so the lines drawn are those of the whole prompt): a prompt may be
    # megabytes, and wrapping it all took seconds.
    lines = textwrap.wrap(prompt[: 4 * per_line * most_lines], width=per_line)
    for index, line in enumerate(lines[:most_lines]):
        draw.text((unit, 3 * unit + index * unit), line, fill=(30, 30, 30), font=body)
    buffer = io.BytesIO()
    image.save(buffer, format=kind.upper(), **({"optimize": False} if kind == "png" else {}))
    return buffer.getvalue()


async def _generate(
    model: str,
    prompt: str,
    size: str,
    settings: dict[str, Any],
    timeout: float | None,
    count: int = 1,
) -> tuple[list[bytes], Usage]:
    litellm = litellm_module()
    options = {"response_format": "b64_json", **settings}
    try:
        # num_retries=0: Temporal owns retries.
        response = await litellm.aimage_generation(
            model=model,
            prompt=prompt,
            size=size,
            n=count,
            timeout=timeout,
            num_retries=0,
            # num_retries does not reach the openai SDK for images: it would retry a 5xx twice
            # itself, paying up to three generations in one Temporal attempt.
            max_retries=0,
            **options,
        )
        # Billed once generated, whatever happens to the images after (a failed download).
        usage = getattr(response, "usage", None)
        spent = Usage(
            input_tokens=int(getattr(usage, "input_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "output_tokens", 0) or 0),
            cost_usd=response_cost(response),
        )
        paid(spent, model)
        images = [
            base64.b64decode(image.b64_json)
            if getattr(image, "b64_json", None)
            else await _download(image.url, timeout)
            for image in response.data[:count]
        ]
    except ApplicationError:
        raise
    except Exception as err:
        # from None: the provider's own exception may quote the key it was sent; only the
        # classified, redacted error may reach history, the worker's log and spans.
        raise classify(err, model=model) from None
    if len(images) < count:
        raise ApplicationError(
            f"{model} returned {len(images)} of the {count} images asked for",
            type=ErrorType.PROVIDER_ERROR,
        )
    return images, spent


async def _download(url: str | None, timeout: float | None) -> bytes:
    if not url:
        raise ApplicationError("the image model returned no image", type=ErrorType.PROVIDER_ERROR)
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(url) as answer,
    ):
        answer.raise_for_status()
        return await answer.read()


@register_activity(ACTIVITY_NAMES["image"], metered=True)
async def image(call: ImageCall, context: CallContext) -> LeafResult:
    """Generate an image (``durapipe.image``)."""
    return await run_image(call, context.attempt, context.checkpoints, context.deck)
