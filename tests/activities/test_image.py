"""The image operator: the offline placeholder is a real, labelled, deterministic PNG in the blob store."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.activities import local_pages
from durapipe.activities._image import placeholder_png

pytestmark = pytest.mark.usefixtures("blob_dir")


def cover() -> dp.Pipeline:
    return dp.pipeline(
        dp.image(
            "cover",
            inputs={"topic": str},
            prompt="A watercolour of {{ topic }}",
            size="640x320",
        )
    )


async def test_offline_image_is_a_labelled_png_stored_as_a_blob(blob_dir: Path) -> None:
    result = await dp.run_local(cover(), "cover", {"topic": "a lighthouse"})
    ref = dp.Blob.model_validate(result.output)
    assert ref.media_type == "image/png" and ref.name == "cover.png"
    data = dp.stores.LocalBlobStore(blob_dir).get(ref)
    assert data.startswith(b"\x89PNG") and len(data) == ref.size
    assert data == placeholder_png("A watercolour of a lighthouse", "640x320")
    # The label is really drawn on it: the OCR engine reads it back.
    (text,) = await local_pages(data, "image/png")
    assert "durapipe offline placeholder" in text and "lighthouse" in text
    assert result.steps[0].model == dp.OFFLINE_MODEL and result.steps[0].kind == "image"


async def test_offline_image_is_deterministic() -> None:
    first = await dp.run_local(cover(), "cover", {"topic": "a fox"})
    second = await dp.run_local(cover(), "cover", {"topic": "a fox"})
    other = await dp.run_local(cover(), "cover", {"topic": "a hare"})
    assert first.output == second.output
    assert first.output["blob"] != other.output["blob"]


def test_yaml_and_python_spellings_of_image_are_one_spec() -> None:
    from_yaml = dp.load_yaml(
        """
pipes:
  cover:
    kind: image
    inputs: {topic: text}
    prompt: "A watercolour of {{ topic }}"
    size: 640x320
"""
    )
    assert from_yaml == cover()
    resolved = dp.resolve(from_yaml, "cover").pipes["cover"]
    assert isinstance(resolved, dp.spec.ImagePipe)
    assert resolved.model == dp.OFFLINE_MODEL and resolved.timeout == 180.0


async def test_the_offline_model_refuses_a_size_it_would_need_gigabytes_to_draw() -> None:
    # The spec lets a size reach 99999x99999 (30 GB of pixels): a run's spec comes from any client,
    # and a worker that tried would be killed, then the next one on the retry. 12000x12000 is
    # 432 MB (drawn in seconds before this check), well past what the placeholder needs.
    huge = dp.pipeline(
        dp.image("cover", inputs={"topic": str}, prompt="{{ topic }}", size="12000x12000")
    )
    with pytest.raises(dp.StepFailed) as failed:
        await dp.run_local(huge, "cover", {"topic": "a lighthouse"})
    assert failed.value.cause_type == "durapipe.BadRequest"
    assert failed.value.cause.startswith("pipe 'cover', field 'size': ")
    assert "4096x4096" in failed.value.cause


def test_a_long_prompt_draws_only_what_fits() -> None:
    started = time.perf_counter()
    placeholder_png("word " * 2_000_000, "256x256")  # a 10 MB prompt
    assert time.perf_counter() - started < 2.0
