"""What each MTHDS construct means once translated: template shorthands, system prompts, compose,
add_each_output, add_alias_from_expression_to, multiplicity on steps, and condition outcomes."""

from __future__ import annotations

import json
from typing import Any

import pytest

import durapipe as dp
from durapipe.adapters.mthds import load_method, load_mthds, mthds_inputs
from durapipe.adapters.mthds._shorthand import expand
from durapipe.adapters.mthds._translate import template_expression
from tests.mthds.conftest import BUNDLES


@pytest.mark.parametrize(
    ("template", "expanded"),
    [
        ("about $topic.", "about {{ topic }}."),
        ("name $user.name here", "name {{ user.name }} here"),
        ("costs $100 and @2.0", "costs $100 and @2.0"),
        ("mail hr@acme.com", "mail hr@acme.com"),
        ("see @doc", "see \n[doc]\n{{ doc }}\n[/doc]\n"),
        ("@?notes", "{% if notes %}\n[notes]\n{{ notes }}\n[/notes]\n{% endif %}"),
        ("{{ $x }} stays", "{{ $x }} stays"),
    ],
)
def test_shorthands_expand_as_the_spec_says(template: str, expanded: str) -> None:
    assert expand(template) == expanded


def test_expression_templates_become_expressions() -> None:
    assert template_expression("{{ doc.kind }}") == "doc.kind"
    assert template_expression("{{ a }}-{{ b }}") == "((a) | string) ~ '-' ~ ((b) | string)"
    assert template_expression("{% if a %}x{% endif %}") is None


async def _run(bundle: str, pipe: str, inputs: dict[str, Any]) -> Any:
    return (await dp.run_local(load_mthds(BUNDLES / f"{bundle}.mthds"), pipe, inputs)).output


def test_the_bundle_system_prompt_is_the_default_and_a_pipe_own_wins() -> None:
    pipeline = load_mthds(BUNDLES / "system_prompts.mthds")
    assert pipeline.pipes["default_tone"].system == "Always answer in one sentence."  # type: ignore[union-attr]
    assert pipeline.pipes["pirate_tone"].system == "You are {{ persona }}."  # type: ignore[union-attr]


async def test_construct_builds_every_field_form() -> None:
    output = await _run("compose_construct", "interview_sheet", {"candidate": "Ada"})
    questions = output["questions"]
    assert len(questions) == 3
    assert output["by_topic"] == {q["topic"]: q for q in questions}
    assert output["headline"] == "Interview with Ada"
    assert output["version"] == 2
    assert output["meta"] == {"source": "durapipe", "score": output["overall_match_score"]}


async def test_add_each_output_puts_each_branch_result_in_the_sequence_memory() -> None:
    pipeline = load_mthds(BUNDLES / "parallel_each.mthds")
    steps = pipeline.pipes["match"].steps  # type: ignore[union-attr]
    assert [(s.from_, s.result) for s in steps[1:3]] == [
        ("both.cv_summary", "cv_summary"),
        ("both.offer_summary", "offer_summary"),
    ]
    inputs = {"cv": "Ada: Python", "job_offer": "Python dev"}
    output = (await dp.run_local(pipeline, "match", inputs)).output
    assert output.startswith("Offline answer: Does [cv_summary] Offline answer: Summarize the CV")


async def test_the_alias_of_a_condition_reaches_the_outcome_pipe() -> None:
    other = await _run("condition_alias", "route_language", {"message": "hallo", "language": "DE"})
    assert other == "Offline answer: Reply in the language 'de': hallo"
    french = await _run("condition_alias", "route_language", {"message": "salut", "language": "FR"})
    assert french.startswith("Offline answer: Réponds en français")


async def test_condition_outcomes_follow_the_expression() -> None:
    urgent = {"ticket": {"priority": 3, "text": "Late!"}, "agent": "Sam"}
    calm = {"ticket": {"priority": 1, "text": "Late!"}, "agent": "Sam"}
    assert (await _run("condition_expression", "handle_ticket", urgent)).startswith(
        "Offline answer: Apologize"
    )
    answer = await _run("condition_expression", "handle_ticket", calm)
    assert answer.startswith("Offline answer: Answer: Late!") and answer.endswith("-- Sam")
    skipped = {"doc_request": {"document_type": "other", "content": "?"}}
    assert await _run("condition_template", "route_by_document_type", skipped) is None


async def test_nb_output_and_multiple_output_change_a_step_multiplicity() -> None:
    pipeline = load_mthds(BUNDLES / "multiplicity.mthds")
    assert pipeline.pipes["one_idea-x3"].output == "list[Idea, 3]"  # type: ignore[union-attr]
    assert pipeline.pipes["one_idea-list"].output == "list[Idea]"  # type: ignore[union-attr]
    result = await dp.run_local(pipeline, "brainstorm", {"theme": "tea"})
    assert isinstance(result.output, list)


async def test_template_tables_apply_their_tag_style_and_extra_context() -> None:
    output = await _run("compose_template", "styled", {"title": "Q3", "body": "Sales grew."})
    assert output == "Dear reader: Q3 (3, a,b)\n\n<body>\nSales grew.\n</body>"


def test_a_bundle_and_its_yaml_twin_are_the_same_spec() -> None:
    twin = dp.load_yaml(
        """
default_model: durapipe/offline
pipes:
  generate_jokes_from_topics:
    kind: sequence
    description: Generate 3 joke topics and create a joke for each
    steps:
      - {pipe: generate_topics, name: topics, result: topics}
      - {pipe: batch_generate_jokes, name: jokes, result: jokes}
    output: jokes
  generate_topics:
    kind: llm
    description: Generate 3 distinct topics suitable for jokes
    model: durapipe/offline
    prompt: Generate 3 distinct and varied topics for crafting one-liner jokes.
    output: list[text, 3]
  batch_generate_jokes:
    kind: batch
    description: Generate a joke for each topic
    inputs:
      topics: list[text]
    over: topics
    item: topic
    pipe: generate_joke
  generate_joke:
    kind: llm
    description: Write a clever one-liner joke about the given topic
    model: durapipe/offline
    inputs: {topic: text}
    prompt: Write a clever one-liner joke about {{ topic }}. Be concise and witty.
"""
    )
    assert load_mthds(BUNDLES / "jokes.mthds") == twin


async def test_a_construct_that_does_not_fit_its_concept_fails_the_step() -> None:
    pipeline = load_mthds(
        """domain = "shapes"
[concept.Pair]
description = "Two numbers"
[concept.Pair.structure]
left = { type = "integer", description = "left", required = true }
right = { type = "integer", description = "right", required = true }

[pipe.make_pair]
type = "PipeCompose"
description = "A pair from one number"
inputs = { n = "Number" }
output = "Pair"
[pipe.make_pair.construct]
left = { from = "n" }
right = "not a number"
""",
        source="shapes.mthds",
    )
    with pytest.raises(dp.StepFailed, match=r"the output is not Pair: right: Input should be"):
        await dp.run_local(pipeline, "make_pair", {"n": 2})


async def test_a_construct_reads_native_concept_fields_as_pipelex_does() -> None:
    # Pipelex resolves a `from` path on its content objects: a Text's `.text`, a list's `.items`,
    # a Page's `.text_and_images.text`. durapipe carries the value itself, and reads them so.
    pipeline = load_mthds(
        """domain = "notes"
[concept.Digest]
description = "d"
[concept.Digest.structure]
note = { type = "text", description = "d", required = true }
first = { type = "text", description = "d", required = true }
count = { type = "number", description = "d", required = true }

[pipe.digest]
type = "PipeCompose"
description = "d"
inputs = { note = "Text", page = "Page", n = "Number" }
output = "Digest"
[pipe.digest.construct]
note  = { from = "note.text" }
first = { from = "page.text_and_images.text" }
count = { from = "n.number" }
""",
        source="notes.mthds",
    )
    page = {"page": 1, "text": "Page one."}
    output = (await dp.run_local(pipeline, "digest", {"note": "Hi", "page": page, "n": 3})).output
    assert output == {"note": "Hi", "first": "Page one.", "count": 3}


async def test_an_expression_template_with_blocks_routes_on_its_rendered_text() -> None:
    request = {"document_type": "legal", "content": "NDA"}
    legal = await _run(
        "condition_template", "route_by_priority", {"doc_request": request, "urgent": 0}
    )
    assert legal == "Offline answer: Review the legal document: NDA"
    urgent = await _run(
        "condition_template", "route_by_priority", {"doc_request": request, "urgent": 2}
    )
    assert urgent == "Offline answer: Review the technical document: NDA"


async def test_text_format_writes_values_as_json_html_or_markdown() -> None:
    card = {"name": "Ada <admin>", "note": "a & b"}
    output = await _run("text_formats", "all_formats", {"card": card})
    assert json.loads(output["json_text"]) == card
    assert output["html_text"] == "<p>a &amp; b</p>\n<card.name>\nAda &lt;admin&gt;\n</card.name>"
    assert output["markdown_text"] == "**Ada <admin>**"


async def test_templates_read_the_fields_the_spec_gives_native_concepts() -> None:
    # The spec's native fields (Text.text, Number.number, Page.text_and_images.text), as the
    # standard library's bundles write them, read the value durapipe carries.
    pages = [{"page": 1, "text": "one"}, {"page": 2, "text": "two"}]
    joined = await _run("native_fields", "join_pages", {"heading": "Log", "pages": pages})
    assert joined == "Log: one|two|"
    numbered = await _run("native_fields", "number_lines", {"lines": ["ebb", "flow"]})
    assert numbered == "1. ebb;2. flow; (2)"
    pipe = load_mthds(BUNDLES / "native_fields.mthds").pipes["rate_mood"]
    assert "{{ tone }} tone, in at most {{ limit }} words" in pipe.prompt  # type: ignore[union-attr]
    mood = await _run("native_fields", "rate_mood", {"note": "Gale.", "tone": "dry", "limit": 9})
    assert mood["label"] in ("calm", "stormy")


async def test_an_inline_batch_maps_over_a_list_field_of_an_earlier_result() -> None:
    pipeline = load_mthds(BUNDLES / "batch_field.mthds")
    result = await dp.run_local(pipeline, "plan_trip", {"region": "the Jura"})
    # One line per stop of the itinerary, each written from that stop (a Stop, not the list).
    items = [s.path for s in result.steps if s.path.startswith("stop_lines[")]
    assert len(result.output) == len(items) > 0
    assert all("[stop] {'town'" in line for line in result.output)


async def test_a_yes_no_is_a_boolean_and_a_prompt_reads_it_as_yes_or_no() -> None:
    # Pipelex's YesNoContent: one strict boolean `yes_no`, rendered "yes" or "no".
    pipeline = load_mthds(BUNDLES / "yes_no.mthds")
    assert pipeline.structures["YesNo"].fields["yes_no"].type == "boolean"
    verdict = await _run("yes_no", "is_urgent", {"message": "The server is down."})
    assert set(verdict) == {"yes_no"} and isinstance(verdict["yes_no"], bool)
    for answer, word in ((True, "yes"), (False, "no")):
        text = await _run(
            "yes_no", "explain_verdict", {"verdict": {"yes_no": answer}, "message": "Hi"}
        )
        assert text.startswith(f"Offline answer: Verdict: {word}."), text


def test_a_bundle_may_declare_its_own_yes_no_concept() -> None:
    text = """domain = "d"
[concept.YesNo]
description = "A verdict with a reason"
[concept.YesNo.structure]
reason = { type = "text", description = "Why", required = true }
[pipe.p]
type = "PipeLLM"
description = "d"
inputs = { x = "Text" }
output = "YesNo"
prompt = "Judge $x"
"""
    pipeline = load_mthds(text)
    assert pipeline.pipes["p"].output == "d_YesNo"
    assert set(pipeline.structures["d_YesNo"].fields) == {"reason"}


def test_a_yes_no_input_may_be_a_bare_boolean() -> None:
    pipeline = load_mthds(BUNDLES / "yes_no.mthds")
    inputs = mthds_inputs({"verdict": False, "message": "Hi"}, pipeline, "explain_verdict")
    assert inputs == {"verdict": {"yes_no": False}, "message": "Hi"}


async def test_a_composite_holds_each_branch_result_by_name() -> None:
    # Pipelex's CompositeContent: `{name: content, ...}`, one field per branch `result`.
    views = await _run("composite", "both_views", {"text": "Tides follow the moon."})
    assert set(views) == {"short", "long"} and all(isinstance(v, str) for v in views.values())
    text = await _run("composite", "compare", {"views": {"short": "S1", "long": "L1"}})
    assert "Short: S1" in text and "Long: L1" in text, text


async def test_an_optional_input_may_be_left_out_and_reads_null() -> None:
    # Pipelex's `Concept?`: the caller may omit it; `Concept!` is required, as a plain input.
    pipeline = load_mthds(BUNDLES / "optional_inputs.mthds")
    inputs = pipeline.pipes["write_brief"].inputs
    assert inputs == {
        "text": "text",
        "focus": "optional[Focus]",
        "hint": "optional[text]",
        "author": "text",
    }
    left_out = await _run("optional_inputs", "brief", {"text": "Tides.", "author": "Kim"})
    assert left_out.startswith("Offline answer: For anyone, Kim briefs: Tides."), left_out
    given = {"text": "Tides.", "author": "Kim", "focus": {"audience": "kids"}}
    narrowed = await _run("optional_inputs", "brief", given)
    assert narrowed.startswith("Offline answer: For a kids audience, Kim briefs"), narrowed
    with pytest.raises(dp.PipelineError, match="input 'author': missing input value"):
        await _run("optional_inputs", "brief", {"text": "Tides."})


def test_a_search_takes_max_results_on_the_pipe_as_the_json_schema_allows() -> None:
    method = load_method(BUNDLES / "search.mthds")
    pipes = method.pipeline.pipes
    assert "Cite at most 3 sources." in (getattr(pipes["search_topic"], "system", None) or "")
    assert "Cite at most 5 sources." in (
        getattr(pipes["search_recent_from_sources"], "system", None) or ""
    )
    # include_images = false is what a search does anyway (its SearchResult holds no images).
    assert not any("include_images" in n.where for n in method.notes), method.notes


def test_a_search_asks_for_inline_citations_unless_told_not_to_and_notes_images() -> None:
    text = (BUNDLES / "search.mthds").read_text(encoding="utf-8")
    text = text.replace(
        '{ model = "linkup-deep", include_images = false, max_results = 5 }',
        '{ model = "linkup-deep", include_images = true, include_inline_citations = false }',
    )
    method = load_method(text, source="search.mthds")
    pipes = method.pipeline.pipes
    marks = "mark each statement with the number of the source"
    # The spec's default is inline citations; include_inline_citations = false turns them off.
    assert marks in (getattr(pipes["search_topic"], "system", None) or "")
    news = getattr(pipes["search_recent_from_sources"], "system", None) or ""
    assert marks not in news and "without inline citation marks" in news
    said = [(n.where, n.message) for n in method.notes]
    assert any("field 'model.include_images'" in where for where, _ in said), said
    assert not any("include_inline_citations" in where for where, _ in said), said
