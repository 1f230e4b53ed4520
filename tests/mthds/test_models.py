"""Model references through the model deck: aliases, presets, inline settings, and waterfalls that
fall back to the next model when one fails, on Temporal and with --local."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import durapipe as dp
from durapipe.adapters.mthds import ModelDeck, load_deck, load_mthds, resolve_model
from durapipe.testing import text_image
from durapipe.testing.fake_provider import FakeProvider, Status
from tests.mthds.conftest import BUNDLES

MODELS = BUNDLES / "models.mthds"


def test_each_reference_form_resolves_through_the_deck() -> None:
    deck = ModelDeck(
        aliases={"best-claude": "anthropic/claude-x"},
        presets={"writing-creative": {"model": "@best-claude", "temperature": 0.9}},
        waterfalls={"summary-fallback": {"models": ["openai/a", "openai/b"]}},
        handles={"claude-4.5-sonnet": "anthropic/claude-sonnet"},
    )
    assert resolve_model("@best-claude", "llm", deck).model == "anthropic/claude-x"
    preset = resolve_model("$writing-creative", "llm", deck)
    assert (preset.model, preset.settings) == ("anthropic/claude-x", {"temperature": 0.9})
    waterfall = resolve_model("~summary-fallback", "llm", deck)
    assert (waterfall.model, waterfall.fallbacks) == ("openai/a", ("openai/b",))
    assert resolve_model("claude-4.5-sonnet", "llm", deck).model == "anthropic/claude-sonnet"
    inline = resolve_model(
        {"model": "@best-claude", "temperature": 0.1, "max_tokens": "auto", "image_detail": "low"},
        "llm",
        deck,
    )
    assert (inline.model, inline.settings) == ("anthropic/claude-x", {"temperature": 0.1})
    # A name the deck does not know runs on the deck's default for the kind (offline by default).
    assert resolve_model("@unknown", "extract", deck).model == "durapipe/local"
    assert resolve_model("$unknown", "llm", deck).model == "durapipe/offline"


def test_a_deck_handle_redirects_a_provider_model_a_bundle_pins() -> None:
    # A public bundle pins `ollama/gemma4:e2b`; a deployment without Ollama maps it in [handles].
    deck = ModelDeck(handles={"ollama/gemma4:e2b": "openai/gpt-4o-mini"})
    pinned = {"model": "ollama/gemma4:e2b", "temperature": 0.2}
    assert resolve_model(pinned, "llm", deck).model == "openai/gpt-4o-mini"
    # Without an entry, a provider-prefixed handle is the model string itself.
    assert resolve_model("ollama/llama3", "llm", deck).model == "ollama/llama3"


def _deck(tmp_path: Path, fake: FakeProvider) -> Path:
    deck = tmp_path / "deck.toml"
    deck.write_text(
        f"""
[aliases]
best-claude = "openai/gpt-alias"

[presets.writing-creative]
model = "openai/gpt-preset"
temperature = 0.7
api_base = "{fake.base_url}"

[waterfalls.summary-fallback]
models = ["openai/gpt-down", "durapipe/offline"]
api_base = "{fake.base_url}"
""",
        encoding="utf-8",
    )
    return deck


async def test_a_waterfall_falls_back_to_the_next_model_on_temporal_and_local(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeProvider() as fake:
        fake.set_default(Status(503))
        monkeypatch.setenv("DURAPIPE_MTHDS_DECK", str(_deck(tmp_path, fake)))
        pipeline = load_mthds(MODELS)
        assert pipeline.pipes["by_waterfall"].model == "openai/gpt-down"  # type: ignore[union-attr]
        inputs = {"question": "Why?"}
        local = await dp.run_local(pipeline, "by_waterfall", inputs)
        # The endpoint is the worker's: a worker that loaded the bundle (and so its deck).
        client = await dp.connect(temporal_address, pipeline=pipeline)
        task_queue = f"mthds-deck-{uuid.uuid4().hex[:8]}"
        run_id = f"mthds-waterfall-{uuid.uuid4().hex[:8]}"
        async with dp.build_worker(client, task_queue=task_queue):
            on_temporal = await dp.run(
                client, pipeline, "by_waterfall", inputs, run_id=run_id, task_queue=task_queue
            )
        assert on_temporal.output == local.output == "Offline answer: Waterfall: Why?"
        assert [s.model for s in local.steps] == ["durapipe/offline"]
        assert [s.model for s in on_temporal.steps] == ["durapipe/offline"]
        # The first model of the waterfall was asked once per run, failed, and was passed over.
        assert len(fake.calls_for("gpt-down")) == 2


async def test_a_preset_from_the_deck_reaches_the_provider_with_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeProvider() as fake:
        monkeypatch.setenv("DURAPIPE_MTHDS_DECK", str(_deck(tmp_path, fake)))
        pipeline = load_mthds(MODELS)
        preset = pipeline.pipes["by_preset"]
        # The preset's endpoint joins the pipeline's model deck; the pipe keeps generation settings.
        assert preset.settings == {"temperature": 0.7}  # type: ignore[union-attr]
        assert pipeline.models["deck:openai/gpt-preset"] == dp.spec.ModelEntry(
            model="openai/gpt-preset", api_base=fake.base_url
        )
        result = await dp.run_local(pipeline, "by_preset", {"question": "Why?"})
        assert result.steps[0].model == "openai/gpt-preset"
        (call,) = fake.calls_for("gpt-preset")
        assert call.outcome == "ok" and "Preset: Why?" in str(call.messages)


def test_the_default_deck_is_offline_and_a_bad_deck_file_is_one_clear_error(
    tmp_path: Path,
) -> None:
    assert load_deck().default["llm"] == "durapipe/offline"
    bad = tmp_path / "deck.toml"
    bad.write_text("[aliases\n", encoding="utf-8")
    with pytest.raises(dp.ConfigError, match=r"model deck .* cannot be read"):
        load_deck(bad)


async def test_images_lists_and_image_and_extract_waterfalls_on_temporal_and_local(
    temporal_address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blob_dir: Path
) -> None:
    async with FakeProvider() as fake:
        fake.set_default(Status(503))
        deck = tmp_path / "deck.toml"
        deck.write_text(
            f"""
[waterfalls.image-fallback]
models = ["openai/img-down", "durapipe/offline"]
api_base = "{fake.base_url}"

[waterfalls.extract-fallback]
models = ["mistral/ocr-down", "durapipe/local"]
api_base = "{fake.base_url}"
""",
            encoding="utf-8",
        )
        monkeypatch.setenv("DURAPIPE_MTHDS_DECK", str(deck))
        # litellm's image and OCR clients refuse to send without a key: a fake one (the worker's).
        monkeypatch.setenv("OPENAI_API_KEY", "sk-fake")
        monkeypatch.setenv("MISTRAL_API_KEY", "fake")
        pipeline = load_mthds(BUNDLES / "images.mthds")
        scan = {"scan": text_image("TIDE TABLES")}
        client = await dp.connect(temporal_address, pipeline=pipeline)
        task_queue = f"mthds-images-{uuid.uuid4().hex[:8]}"
        results = []
        async with dp.build_worker(client, task_queue=task_queue):
            runs = (
                ("sketches", {"scene": "a harbour"}),
                ("storyboard", {"scene": "a harbour"}),
                ("read_scan", scan),
            )
            for pipe, inputs in runs:
                local = await dp.run_local(pipeline, pipe, inputs)
                on_temporal = await dp.run(
                    client,
                    pipeline,
                    pipe,
                    inputs,
                    run_id=f"mthds-img-{uuid.uuid4().hex[:8]}",
                    task_queue=task_queue,
                )
                assert on_temporal.output == local.output
                results.append(local)
    sketches, storyboard, scanned = results
    # Image[3]: three distinct images from one call, by the waterfall's second model.
    assert len({image["blob"] for image in sketches.output}) == 3
    assert [s.model for s in sketches.steps] == ["durapipe/offline"]
    # The step's nb_output = 2: two images.
    frames = storyboard.output
    assert isinstance(frames, list) and len(frames) == 2
    assert all(f["media_type"] == "image/png" for f in frames)
    assert frames[0]["blob"] != frames[1]["blob"]
    assert "TIDE TABLES" in scanned.output[0]["text"]
    assert [s.model for s in scanned.steps] == ["durapipe/local"]
    # Each run asked the first model of each waterfall once, and passed it over.
    assert len(fake.calls_for("img-down")) == 4  # sketches and storyboard, local and Temporal
    assert len(fake.calls_for("ocr-down")) == 2
