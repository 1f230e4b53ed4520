"""Fields of MTHDS operators that reach the provider: a PipeLLM's ``model_to_structure`` and
``structuring_method``, a PipeImgGen's ``background``, ``output_format``, ``seed`` and
``is_raw``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.adapters._litellm import image_takes
from durapipe.adapters.mthds import load_method, load_mthds
from durapipe.testing.fake_provider import FakeProvider, Status
from tests.mthds.conftest import BUNDLES

STRUCTURING = BUNDLES / "structuring.mthds"


@pytest.fixture
async def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    """The fake provider behind a deck naming its models (the draft, the structure, an image
    waterfall falling back to the offline model)."""
    async with FakeProvider() as provider:
        deck = tmp_path / "deck.toml"
        deck.write_text(
            f"""
[presets.draft]
model = "openai/gpt-draft"
api_base = "{provider.base_url}"

[presets.structure]
model = "openai/gpt-structure"
api_base = "{provider.base_url}"

[waterfalls.stickers]
models = ["openai/img-down", "durapipe/offline"]
api_base = "{provider.base_url}"
""",
            encoding="utf-8",
        )
        monkeypatch.setenv("DURAPIPE_MTHDS_DECK", str(deck))
        # litellm's image client refuses to send without a key: a fake one (the worker's).
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        yield provider


async def test_preliminary_text_drafts_with_the_model_then_structures_with_model_to_structure(
    fake: FakeProvider,
) -> None:
    result = await dp.run_local(load_mthds(STRUCTURING), "make_foo", {"topic": "cats"})
    (draft,) = fake.calls_for("gpt-draft")
    (structure,) = fake.calls_for("gpt-structure")
    assert [s.path for s in result.steps] == ["draft_text", "structure"]
    assert "Talk about cats" in str(draft.messages)
    # The second call structures the first one's answer (the fake answers "reply to: <prompt>").
    (asked,) = [m["content"] for m in structure.messages if m["role"] == "user"]
    assert asked.startswith("Extract the information") and "reply to: Talk about cats" in asked
    assert draft.seq < structure.seq
    assert set(result.output) == {"name"}


async def test_a_step_asking_a_drafted_pipe_for_two_gets_two_structures_of_one_draft(
    temporal_address: str,
) -> None:
    pipeline = load_mthds(STRUCTURING)
    structure = pipeline.pipes["make_foo-x2__structure"]
    assert isinstance(structure, dp.spec.LlmPipe) and structure.output == "list[Foo, 2]"
    local = await dp.run_local(pipeline, "two_foos", {"topic": "cats"})
    assert len(local.output) == 2 and all(set(foo) == {"name"} for foo in local.output)
    # On Temporal: the draft and its structuring are two activities of a child workflow.
    client = await dp.connect(temporal_address, pipeline=pipeline)
    task_queue = f"mthds-drafts-{uuid.uuid4().hex[:8]}"
    async with dp.build_worker(client, task_queue=task_queue):
        durable = await dp.run(
            client, pipeline, "two_foos", {"topic": "cats"}, task_queue=task_queue
        )
    assert durable.output == local.output
    assert [(s.path, s.pipe) for s in durable.steps if s.kind == "llm"] == [
        ("foos/draft_text", "make_foo__draft_text"),
        ("foos/structure", "make_foo-x2__structure"),
    ]


async def test_model_to_structure_makes_a_direct_structure(fake: FakeProvider) -> None:
    await dp.run_local(load_mthds(STRUCTURING), "direct_foo", {"topic": "cats"})
    (structure,) = fake.calls_for("gpt-structure")
    assert fake.calls_for("gpt-draft") == []
    assert "Talk about cats" in str(structure.messages)


def test_seed_and_raw_go_to_the_image_models_litellm_sends_them_to() -> None:
    assert pipeline_settings("draw") == {
        "background": "transparent",
        "output_format": "webp",
        "seed": 42,
        "raw": True,
    }
    assert image_takes("black_forest_labs/flux-pro-1.1-ultra", "seed", {})
    assert image_takes("black_forest_labs/flux-pro-1.1-ultra", "raw", {})
    assert not image_takes("openai/gpt-image-1", "seed", {})


def pipeline_settings(pipe: str) -> dict[str, object]:
    found = load_mthds(STRUCTURING).pipes[pipe]
    assert isinstance(found, dp.spec.ImagePipe)
    return found.settings


def test_structuring_fields_on_a_text_output_are_noted_and_on_a_structure_are_not() -> None:
    notes = load_method(STRUCTURING).notes
    said = [f"{n.where}: {n.message}" for n in notes]
    assert any("pipe 'note', field 'structuring_method'" in s and "no structure" in s for s in said)
    assert not any("make_foo" in s or "direct_foo" in s for s in said), said
    assert not any(f"field '{f}'" in s for s in said for f in ("background", "seed", "is_raw"))


async def test_background_and_output_format_reach_the_image_model(
    fake: FakeProvider, blob_dir: Path
) -> None:
    fake.set_default(Status(503))
    result = await dp.run_local(load_mthds(STRUCTURING), "draw", {"topic": "a fox"})
    (asked,) = fake.calls_for("img-down")
    assert asked.options["background"] == "transparent"
    assert asked.options["output_format"] == "webp"
    # OpenAI's image models take no seed and no raw mode (litellm's OpenAI image config lists
    # neither; its images API answers 400 to a parameter it does not know): the request goes
    # without them.
    assert "seed" not in asked.options and "raw" not in asked.options
    # The waterfall's offline model draws in the format asked for, and the blob says so.
    assert result.output["media_type"] == "image/webp"
    data = dp.stores.blob_store().get(dp.spec.Blob.model_validate(result.output))
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
