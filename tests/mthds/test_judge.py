"""Pipelex's PipeJudge once translated: an llm step asking the questions, whose verdict is the
YesNo, Choice or Rating native (narrowed to the declared options or levels) that the next pipes
read, one question or several at once."""

from __future__ import annotations

import pydantic
import pytest

import durapipe as dp
from durapipe.adapters.mthds import load_method, load_mthds, validate_mthds
from durapipe.spec import LlmPipe, Pipeline
from durapipe.spec._types import validate
from tests.mthds.conftest import BUNDLES

DESKS = ["billing", "technical", "other"]


def _pipeline() -> Pipeline:
    return load_mthds(BUNDLES / "judge.mthds")


def _llm(pipeline: Pipeline, name: str) -> LlmPipe:
    pipe = pipeline.pipes[name]
    assert isinstance(pipe, LlmPipe)
    return pipe


def test_a_choice_is_an_llm_step_whose_answer_is_one_of_the_options() -> None:
    pipeline = _pipeline()
    pipe = _llm(pipeline, "pick_desk")
    assert pipe.output == "Choice_pick_desk"
    structure = pipeline.structures["Choice_pick_desk"]
    assert structure.refines == "Choice"
    assert structure.fields["choice"].choices == DESKS
    assert "Which desk should handle this ticket?" in pipe.prompt
    assert "- billing: Charges, invoices and refunds" in pipe.prompt
    assert "- other\n" in pipe.prompt + "\n"
    validate("Choice_pick_desk", pipeline.structures, {"choice": "billing"})
    with pytest.raises(pydantic.ValidationError):
        validate("Choice_pick_desk", pipeline.structures, {"choice": "sales"})


def test_a_rating_answers_a_level_index_and_a_yes_no_its_criteria() -> None:
    pipeline = _pipeline()
    rating = _llm(pipeline, "rate_severity")
    assert pipeline.structures[rating.output].refines == "Rating"
    assert pipeline.structures[rating.output].fields["level"].choices == [0, 1, 2]
    assert "0: nothing stops working\n1: a workaround exists" in rating.prompt
    assert "for users of {{ product }}?" in rating.prompt  # the question is a template
    yes_no = _llm(pipeline, "is_urgent")
    assert yes_no.output == "YesNo"
    assert "Yes means: Something is broken for the customer right now" in yes_no.prompt
    # A criterion is read as written, never as a template: '$5' is no variable.
    assert '{{ "No means: The customer can wait (a $5 refund is no emergency)" }}' in yes_no.prompt


def test_several_questions_fill_a_structure_refining_the_output() -> None:
    pipeline = _pipeline()
    pipe = _llm(pipeline, "triage")
    structure = pipeline.structures[pipe.output]
    assert structure.refines == "Triage"
    assert {n: f.type for n, f in structure.fields.items()} == {
        "urgent": "YesNo",
        "desk": "Choice_triage_desk",
        "severity": "Rating_triage_severity",
    }
    assert not any(f.optional for f in structure.fields.values())  # every question answers
    for name in ("urgent", "desk", "severity"):
        assert f"Question '{name}': " in pipe.prompt
    assert "0: Cosmetic (nothing stops working)" in pipe.prompt


async def test_the_verdicts_are_the_natives_the_next_pipes_read() -> None:
    pipeline = _pipeline()
    desk = (await dp.run_local(pipeline, "pick_desk", {"ticket": "Charged twice."})).output
    assert set(desk) == {"choice"} and desk["choice"] in DESKS
    level = (await dp.run_local(pipeline, "rate_severity", {"ticket": "x", "product": "y"})).output
    assert set(level) == {"level"} and level["level"] in (0, 1, 2)
    found = (await dp.run_local(pipeline, "triage", {"ticket": "Login fails."})).output
    assert isinstance(found["urgent"]["yes_no"], bool)
    assert found["desk"]["choice"] in ("billing", "technical")
    assert found["severity"]["level"] in (0, 1)
    # The condition routes on `routing.choice`; a prompt writing the Choice whole reads its key.
    routed = (await dp.run_local(pipeline, "route_ticket", {"ticket": "Charged twice."})).output
    assert routed in (
        "Sent to billing: Charged twice.",
        "Sent to the technical desk: Charged twice.",
        "Sent to the front desk: Charged twice.",
    )


def test_a_threshold_is_a_note_not_dropped_in_silence() -> None:
    notes = [str(n) for n in load_method(BUNDLES / "judge.mthds").notes]
    thresholds = [n for n in notes if "threshold" in n]
    assert len(thresholds) == 1, notes
    assert "pipe 'is_urgent', field 'threshold'" in thresholds[0]
    assert "reports no probability" in thresholds[0]


_PHOTO_JUDGE = """domain = "deliveries"

[concept.ParcelPhoto]
description = "A photo of a parcel"
refines     = "Image"

[pipe.check]
type        = "PipeJudge"
description = "Check a parcel"
inputs      = {{ photo = "{photo}", note = "Text" }}
output      = "YesNo"
prompt      = "{prompt}"
question    = "{question}"
"""


@pytest.mark.parametrize(
    ("photo", "prompt", "question", "refused"),
    [
        ("Image", "@photo $note", "Is the parcel damaged?", None),
        ("Image", "$note", "Is the parcel in @photo damaged?", "'photo'"),
        ("Image[]", "$note", "Is a parcel in {{ photo }} damaged?", "'photo'"),
        ("ParcelPhoto", "$note", "Is $photo damaged?", "'photo'"),
        ("Document", "$note", "Is {{ photo | upper }} signed?", "'photo'"),
        ("Text", "$note", "Is $photo damaged?", None),
    ],
)
def test_only_the_prompt_presents_images_and_documents(
    photo: str, prompt: str, question: str, refused: str | None
) -> None:
    text = _PHOTO_JUDGE.format(photo=photo, prompt=prompt, question=question)
    problems = validate_mthds(text, source="photo.mthds")
    if refused is None:
        assert problems == []
        return
    assert [p.where for p in problems] == ["bundle 'deliveries', pipe 'check', field 'question'"]
    assert problems[0].message.startswith(f"reads {refused}, an image or a document")
