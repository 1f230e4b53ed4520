"""`.mthds` bundles and packages sent by the real `mthds` client to `durapipe serve`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mthds.protocol.models import InvalidValidationReport, ValidationReport
from mthds.runners.api.exceptions import ApiResponseError
from pipelex_sdk.runs import WaitForResultOptions
from temporalio.client import WorkflowExecutionStatus
from typer.testing import CliRunner

import durapipe as dp
from durapipe.cli import app
from tests.serve.conftest import HERE, Served, lifecycle_client, mthds_client

METHODS = HERE / "methods"
NEWSROOM = {"newsroom.mthds": (METHODS / "newsroom.mthds").read_text()}
ARTICLE = "The council approved the new bridge on Monday; it opens in 2027."


def tree(*folders: str) -> dict[str, str]:
    """The files of ``folders`` under `methods/`, by tree path, as a client sends a package."""
    return {
        str(path.relative_to(METHODS)): path.read_text()
        for folder in folders
        for path in sorted((METHODS / folder).rglob("*"))
        if path.is_file()
    }


async def test_execute_a_bundle_from_its_main_pipe(served: Served, temporal_address: str) -> None:
    async with mthds_client(served) as client:
        verdict = await client.validate(NEWSROOM)
        result = await client.execute(
            files=NEWSROOM,
            inputs={"article": {"concept": "native.Text", "content": {"text": ARTICLE}}},
        )
    assert isinstance(verdict, ValidationReport)
    root = result.pipe_output.working_memory.root
    main = root["main_stuff"]
    assert main.concept == "newsroom.Headline"
    assert set(main.content) == {"title", "angle"}
    assert main.content["angle"] in ("news", "feature")
    assert root["article"].concept == "native.Text"
    assert root["article"].content == {"text": ARTICLE}
    # Every step result is in the working memory too, with its concept (as Pipelex keeps them).
    assert root["loud"].concept == "native.Text"
    assert root["loud"].content["text"] == root["text"].content["text"].upper()
    assert root["headline"].concept == "newsroom.Headline"
    assert root["headline"].content == main.content
    # The run is an ordinary durapipe run: a completed Temporal workflow, one step per pipe.
    run = dp.RunHandle(await dp.connect(temporal_address, checkpoints=None), result.pipeline_run_id)
    description = await run.client.get_workflow_handle(result.pipeline_run_id).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    assert {"summarize", "shout", "headline"} <= {step.pipe for step in await run.steps()}
    # `durapipe show` (its own event loop, so in a thread) sees the run's steps.
    shown = await asyncio.to_thread(
        CliRunner().invoke, app, ["show", result.pipeline_run_id, "--address", temporal_address]
    )
    assert shown.exit_code == 0, shown.output
    assert "loud (tool" in shown.output and "headline (llm" in shown.output


async def test_start_a_package_with_a_local_dependency(served: Served) -> None:
    files = tree("desk", "style_lib")
    async with mthds_client(served) as client:
        verdict = await client.validate(files)
        started = await client.start(
            pipe_code="desk.news.front_page", files=files, inputs={"topic": "the new bridge"}
        )
    assert isinstance(verdict, ValidationReport)
    async with lifecycle_client(served.url) as lifecycle:
        results = await lifecycle.wait_for_result(
            started.pipeline_run_id, WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
        )
    assert isinstance(results.main_stuff["text"], str) and results.main_stuff["text"]
    assert results.working_memory is not None
    assert results.working_memory.root["main_stuff"].concept == "native.Text"


async def test_an_invalid_bundle_gets_every_problem_with_its_line(served: Served) -> None:
    broken = (
        NEWSROOM["newsroom.mthds"]
        .replace('{ pipe = "shout", result = "loud" }', '{ pipe = "shoutt", result = "loud" }')
        .replace(
            'prompt      = "Write a headline for: $loud"',
            'prompt      = "Write a headline for: $lowd"',
        )
    )
    async with mthds_client(served) as client:
        verdict = await client.validate({"newsroom.mthds": broken})
        with pytest.raises(ApiResponseError) as refused:
            await client.start(files={"newsroom.mthds": broken}, inputs={"article": ARTICLE})
    assert isinstance(verdict, InvalidValidationReport)
    assert len(verdict.errors) >= 2
    assert all(e.location is not None and e.location.line for e in verdict.errors)
    text = " ".join(e.detail for e in verdict.errors)
    assert "shoutt" in text and "lowd" in text
    assert refused.value.status == 422
    assert refused.value.problem.code == "method.invalid"
    assert refused.value.problem.errors is not None and len(refused.value.problem.errors) >= 2


async def test_the_trust_boundary_holds_for_bundles(served: Served, gate_dir: Path) -> None:
    other_model = NEWSROOM["newsroom.mthds"].replace(
        'prompt      = "Summarize in one line: @article"',
        'prompt      = "Summarize in one line: @article"\nmodel       = "openai/gpt-4o"',
    )
    other_function = (
        NEWSROOM["newsroom.mthds"]
        .replace("tests.serve.serve_tools.shout", "tests.serve.boom.explode")
        .replace("Write a headline for: $loud", "Write a headline for: $lowd")
    )
    async with mthds_client(served) as client:
        with pytest.raises(ApiResponseError) as model_refused:
            await client.start(files={"newsroom.mthds": other_model}, inputs={"article": ARTICLE})
        with pytest.raises(ApiResponseError) as function_refused:
            await client.start(
                files={"newsroom.mthds": other_function}, inputs={"article": ARTICLE}
            )
        verdict = await client.validate({"newsroom.mthds": other_function})
    model_problem = model_refused.value.problem
    assert model_problem.code == "method.invalid"
    assert [(e.code, e.location and e.location.pipe) for e in model_problem.errors or []] == [
        ("model.unknown", "summarize")
    ]
    assert "openai/gpt-4o" in model_problem.detail
    function_problem = function_refused.value.problem
    codes = [e.code for e in function_problem.errors or []]
    assert codes[0] == "method.function_invalid" and codes.count("method.function_invalid") == 1
    assert "tests.serve.boom.explode" in function_problem.detail
    # Every other problem of the method is reported with it (here: an undeclared variable).
    assert any("lowd" in e.detail for e in function_problem.errors or [])
    assert isinstance(verdict, InvalidValidationReport)
    assert verdict.errors[0].code == "method.function_invalid"
    assert any("lowd" in e.detail for e in verdict.errors)
    assert not any("durapipe_serve_unregistered" in e.detail for e in verdict.errors)
    # The function was judged by its name only: the module it names was never imported.
    assert not (gate_dir / "boom-imported").exists()


async def test_files_by_hash_and_escaping_dependencies_are_refused(served: Served) -> None:
    files = tree("desk", "style_lib")
    escaping = {
        path: text.replace('path = "../style_lib"', 'path = "../../../etc"')
        for path, text in files.items()
    }
    async with mthds_client(served) as client:
        with pytest.raises(ApiResponseError) as by_hash:
            await client.start(
                files={"newsroom.mthds": {"sha256": "0" * 64, "size": 10}},  # type: ignore[dict-item]
            )
        with pytest.raises(ApiResponseError) as outside:
            await client.start(files=escaping, inputs={"topic": "x"})
    assert by_hash.value.problem.code == "request.blobs_missing"
    assert by_hash.value.problem.params is not None
    assert by_hash.value.problem.params.missing_blobs == ["0" * 64]
    assert outside.value.problem.code == "security.method_path_refused"


IDEAS = {"ideas.mthds": (METHODS / "ideas.mthds").read_text()}


async def test_the_caller_chooses_the_output_name_multiplicity_and_dynamic_concept(
    served: Served,
) -> None:
    topic = {"topic": {"concept": "native.Text", "content": {"text": "tides"}}}
    async with mthds_client(served) as client:
        three = await client.execute(
            pipe_code="idea",
            files=IDEAS,
            inputs=topic,
            output_name="pitches",
            output_multiplicity=4,
        )
        some = await client.execute(
            pipe_code="idea", files=IDEAS, inputs=topic, output_multiplicity=True
        )
        one = await client.execute(
            pipe_code="idea", files=IDEAS, inputs=topic, output_multiplicity=False
        )
        started = await client.start(
            pipe_code="ideas.anything",
            files=IDEAS,
            inputs=topic,
            dynamic_output_concept_ref="Idea",
            output_multiplicity=2,
        )
        posters = await client.execute(
            pipe_code="poster", files=IDEAS, inputs=topic, output_multiplicity=2
        )
        with pytest.raises(ApiResponseError) as not_dynamic:
            await client.execute(
                pipe_code="idea", files=IDEAS, inputs=topic, dynamic_output_concept_ref="Text"
            )
        with pytest.raises(ApiResponseError) as not_llm:
            await client.execute(
                pipe_code="shouted",
                files=IDEAS,
                inputs={"text": "tides"},
                output_multiplicity=2,
            )
    # output_name: the output lives under the name given, and main_stuff aliases it.
    memory = three.pipe_output.working_memory
    assert "main_stuff" not in memory.root and memory.aliases == {"main_stuff": "pitches"}
    pitches = memory.root["pitches"]
    assert pitches.concept == "ideas.Idea"
    assert len(pitches.content["items"]) == 4  # the offline model makes 3 when free to choose
    assert all(set(item) == {"title", "pitch"} for item in pitches.content["items"])
    # True: a list whose length the model chooses; False: one idea.
    listed = some.pipe_output.working_memory.root["main_stuff"].content
    assert isinstance(listed["items"], list) and listed["items"]
    single = one.pipe_output.working_memory.root["main_stuff"].content
    assert set(single) == {"title", "pitch"}
    # A Dynamic pipe makes the concept the caller names, durably (read back by run id).
    async with lifecycle_client(served.url) as lifecycle:
        results = await lifecycle.wait_for_result(
            started.pipeline_run_id, WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
        )
    assert results.working_memory is not None
    made = results.working_memory.root["main_stuff"]
    assert made.concept == "ideas.Idea"
    assert [set(item) for item in made.content["items"]] == [{"title", "pitch"}] * 2
    # A PipeImgGen asked for two images makes two, from one call.
    images = posters.pipe_output.working_memory.root["main_stuff"]
    assert images.concept == "native.Image" and len(images.content["items"]) == 2
    assert not_dynamic.value.problem.code == "request.invalid"
    assert "not Dynamic" in not_dynamic.value.problem.detail
    assert not_llm.value.problem.code == "request.invalid"
    assert "PipeFunc" in not_llm.value.problem.detail


async def test_the_working_memory_holds_nested_results(served: Served) -> None:
    files = {"memory.mthds": (HERE.parent / "mthds" / "bundles" / "memory.mthds").read_text()}
    async with mthds_client(served) as client:
        started = await client.start(files=files, inputs={"topic": "tides"})
    async with lifecycle_client(served.url) as lifecycle:
        results = await lifecycle.wait_for_result(
            started.pipeline_run_id, WaitForResultOptions(interval_seconds=0.2, timeout_seconds=120)
        )
    assert results.working_memory is not None
    root = results.working_memory.root
    assert {"facts", "digest", "notes", "angles", "loud_angles", "length_class"} <= set(root)
    assert {"summary", "title", "verdict"} <= set(root)
    assert not any(name.endswith("__memory") or name == "__output" for name in root)
    assert root["facts"].concept == "native.Text"
    assert root["angles"].concept == "native.Text"
    assert len(root["angles"].content["items"]) == 2
    assert root["length_class"].content == {"text": "long"}
    assert root["main_stuff"].content == root["verdict"].content
