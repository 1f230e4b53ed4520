"""Every test bundle (written from the MTHDS spec) runs on the offline model on Temporal and with
--local, with identical outputs; each output is checked for the shape its concept promises."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.testing import text_image
from tests.conftest import EXAMPLES
from tests.mthds.conftest import BUNDLES

STORIES = [
    {"headline": "Summit ends", "section": "world"},
    {"headline": "Cup final", "section": "sport"},
    {"headline": "Rain in Asia", "section": "world"},
]
ARTICLES = [
    {"title": "Bridges", "body": "The council approved a bridge."},
    {"title": "Trains", "body": "Night trains are back."},
]
NATIVES = {
    "amount": 12.5,
    "payload": {"a": [1, 2]},
    "page": "<p>hi</p>",
    "thing": "x",
    "other": 3,
    "first_page": {"page": 1, "text": "Page one"},
    "mixed": {"text": "a caption", "images": []},
}
PAGES = [{"page": 1, "text": "one"}, {"page": 2, "text": "two"}]
TICKET = {"priority": 3, "text": "My order is late."}


def _picture(tmp: Path) -> Path:
    path = tmp / "picture.png"
    path.write_bytes(text_image("A RED KITE"))
    return path


# (bundle, pipe, inputs, what the output must look like)
CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("jokes", "generate_jokes_from_topics", {}, "list[text, 3]"),
    ("jokes", "generate_joke", {"topic": "cats"}, "text"),
    ("memory", "issue", {"topic": "tides"}, "text"),
    ("images", "storyboard", {"scene": "a harbour"}, "list[image, 2]"),
    ("images", "sketches", {"scene": "a harbour"}, "list[image, 3]"),
    ("text_formats", "all_formats", {"card": {"name": "Ada", "note": "hi"}}, "dict"),
    ("cv_screening", "analyze_cv", {"cv_text": "Ada, 10 years of Python."}, "CandidateProfile"),
    (
        "shorthands",
        "write_letter",
        {"recipient": {"name": "Bo", "company": "Acme"}, "position": "CTO", "notes": ""},
        "text",
    ),
    ("models", "all_models", {"question": "Why?"}, "text"),
    ("multiplicity", "brainstorm", {"theme": "tea"}, "list[Idea]"),
    ("func", "draft_and_count", {"subject": "rivers"}, "WordCount"),
    (
        "func_list",
        "tally",
        {"numbers": [1, 2, 3.5], "text": "Durable pipelines replay histories"},
        "list[text]",
    ),
    ("imggen", "illustrate", {"scene": "a harbour at dawn"}, "image"),
    ("extract", "read_invoice", {"invoice": EXAMPLES / "invoice.pdf"}, "InvoiceSummary"),
    ("search", "research_topic", {"topic": "Temporal"}, "SearchResult"),
    ("compose_template", "report", {"title": "Q3", "body": "Sales grew."}, "text"),
    ("compose_template", "styled", {"title": "Q3", "body": "Sales grew."}, "text"),
    ("compose_construct", "interview_sheet", {"candidate": "Ada"}, "InterviewSheet"),
    (
        "compose_text",
        "newsletter",
        {"greeting": "Hi", "items": ["a", "b"], "footer": "Bye"},
        "text",
    ),
    ("inline_batch", "summarize_all", {"articles": ARTICLES, "audience": "kids"}, "text"),
    ("parallel_each", "match", {"cv": "Ada: Python", "job_offer": "Python dev"}, "text"),
    ("parallel_combined", "describe_product", {"product": "a kettle"}, "ProductCopy"),
    (
        "condition_template",
        "route_by_document_type",
        {"doc_request": {"document_type": "legal", "content": "NDA"}},
        "text",
    ),
    (
        "condition_template",
        "route_by_document_type",
        {"doc_request": {"document_type": "other", "content": "?"}},
        "none",
    ),
    ("condition_expression", "handle_ticket", {"ticket": TICKET, "agent": "Sam"}, "text"),
    (
        "condition_template",
        "route_by_priority",
        {"doc_request": {"document_type": "legal", "content": "NDA"}, "urgent": 0},
        "text",
    ),
    (
        "batch",
        "translate_all",
        {"phrases": [{"id": 1, "text": "hello"}, {"id": 2, "text": "bye"}], "language": "French"},
        "list[text, 2]",
    ),
    (
        "qualified_refs",
        "review_contract",
        {"contract_text": "The employee shall not compete."},
        "text",
    ),
    ("natives", "describe_all", NATIVES, "text"),
    ("natives", "estimate", {"question": "How many?"}, "number"),
    ("simple_concepts", "define_term", {"term": "idempotent"}, "Entry"),
    ("nested", "edition", {"stories": STORIES, "editor": "Kim"}, "text"),
    ("system_prompts", "both_tones", {"question": "Hello?", "persona": "a pirate"}, "dict"),
    ("refines", "classify", {"text": "A heron stood in the river."}, "Animal"),
    ("fixed_lists", "make_quiz", {"subject": "volcanoes"}, "list[text, 4]"),
    ("image_input", "caption", {"picture": "@picture", "style": "haiku"}, "text"),
    ("dotted_inputs", "brief", {"subject": "tea"}, "text"),
    ("image_input", "review_document", {"contract": EXAMPLES / "invoice.pdf"}, "text"),
    ("condition_alias", "route_language", {"message": "salut", "language": "FR"}, "text"),
    ("condition_alias", "route_language", {"message": "hallo", "language": "DE"}, "text"),
    ("legacy_pipelex", "summarize_pdf", {"document": EXAMPLES / "invoice.pdf"}, "text"),
    ("legacy_pipelex", "heading", {"title": "Q3"}, "text"),
    ("native_fields", "rate_mood", {"note": "Gale.", "tone": "dry", "limit": 9}, "Mood"),
    ("batch_field", "plan_trip", {"region": "the Jura"}, "list[text]"),
    ("native_fields", "join_pages", {"heading": "Log", "pages": PAGES}, "text"),
    # A batch over a pipe that makes a list: joined where a step reads one list (mthds-std's
    # answer_from_documents), nested where the next step maps over it.
    (
        "batch_lists",
        "answer_from_documents",
        {"documents": [EXAMPLES / "invoice.pdf"] * 2, "question": "What is the total?"},
        "text",
    ),
    (
        "batch_lists",
        "summarize_each_document",
        {"documents": [EXAMPLES / "invoice.pdf"] * 2},
        "list[text, 2]",
    ),
    ("batch_lists", "all_ideas", {"themes": ["tea", "rain", "maps"]}, "list[text, 6]"),
    # Pipelex's presence markers: '?' inputs left out (the pipe reads null), or given.
    ("optional_inputs", "brief", {"text": "Tides.", "author": "Kim"}, "text"),
    (
        "optional_inputs",
        "brief",
        {"text": "Tides.", "author": "Kim", "focus": {"audience": "kids"}, "hint": "short"},
        "text",
    ),
    # Pipelex's native Composite: a parallel's branch results by name, read by the next step.
    ("composite", "compare_views", {"text": "Tides follow the moon."}, "text"),
    ("composite", "both_views", {"text": "Tides follow the moon."}, "dict"),
    # Pipelex's native YesNo (`{"yes_no": bool}`), made by one pipe and read by the next.
    ("yes_no", "triage", {"message": "The server is down."}, "text"),
    ("yes_no", "is_urgent", {"message": "The server is down."}, "YesNo"),
    ("yes_no", "explain_verdict", {"verdict": {"yes_no": True}, "message": "Hi"}, "text"),
    # Pipelex's PipeJudge: each kind of question, one at a time or several at once, and a choice
    # routed by the next pipe.
    ("judge", "is_urgent", {"ticket": "The site is down."}, "YesNo"),
    ("judge", "pick_desk", {"ticket": "I was charged twice."}, "Choice"),
    ("judge", "rate_severity", {"ticket": "Login fails.", "product": "the app"}, "Rating"),
    ("judge", "triage", {"ticket": "Login fails."}, "Triage"),
    ("judge", "route_ticket", {"ticket": "I was charged twice."}, "text"),
    ("judge", "explain_triage", {"ticket": "Login fails."}, "text"),
]


def _check_shape(output: Any, shape: str, pipeline: dp.Pipeline) -> None:
    if shape == "none":
        assert output is None
    elif shape == "dict":
        assert isinstance(output, dict) and output
    elif shape in ("text", "image"):
        assert isinstance(output, str if shape == "text" else dict) and output
    elif shape == "number":
        assert isinstance(output, int | float) and not isinstance(output, bool)
    elif shape.startswith("list["):
        assert isinstance(output, list) and output
        inner = shape[5:-1]
        if "," in inner:
            assert len(output) == int(inner.split(",")[1])
        item = inner.split(",")[0]
        if item == "text":
            assert all(isinstance(i, str) for i in output)
        else:
            for element in output:
                _check_shape(element, item, pipeline)
    else:
        structure = pipeline.structures[shape]
        required = [n for n, f in structure.fields.items() if not f.optional]
        assert isinstance(output, dict) and set(required) <= set(output), (shape, output)


@pytest.mark.parametrize(
    ("bundle", "pipe", "inputs", "shape"),
    CASES,
    ids=[f"{b}:{p}:{i}" for i, (b, p, _, _) in enumerate(CASES)],
)
@pytest.mark.usefixtures("blob_dir")
async def test_bundle_runs_alike_on_temporal_and_local(
    mthds_worker: tuple[Any, str],
    tmp_path: Path,
    bundle: str,
    pipe: str,
    inputs: dict[str, Any],
    shape: str,
) -> None:
    client, task_queue = mthds_worker
    pipeline = dp.load(BUNDLES / f"{bundle}.mthds")
    inputs = {k: _picture(tmp_path) if v == "@picture" else v for k, v in inputs.items()}
    run_id = f"mthds-{bundle}-{uuid.uuid4().hex[:8]}"
    on_temporal = await dp.run(client, pipeline, pipe, inputs, run_id=run_id, task_queue=task_queue)
    local = await dp.run_local(pipeline, pipe, inputs)
    assert on_temporal.output == local.output
    assert [(s.path, s.status) for s in on_temporal.steps] == [
        (s.path, s.status) for s in local.steps
    ]
    _check_shape(local.output, shape, pipeline)


def test_the_corpus_has_at_least_25_bundles() -> None:
    assert len(list(BUNDLES.glob("*.mthds"))) >= 25
