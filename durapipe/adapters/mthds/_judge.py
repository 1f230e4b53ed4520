"""Pipelex's PipeJudge in durapipe's one model: an llm step whose structured output is the verdict.

Pipelex (Pipelex/pipelex at 14817ab, ``pipelex/pipe_operators/judge/``) asks a judging model closed
questions about the evidence its ``prompt`` presents. A question's kind is read off what it
declares: ``options`` make it a choice, ``levels`` a rating, neither a yes/no question (with optional
``criteria`` saying what a yes and a no mean). One ``question`` produces its verdict native (YesNo,
Choice, Rating, or a concept refining it); several ``questions``, keyed by name, fill the output's
structure, one verdict in the field of each question's name.

Here a judge is an llm pipe: its prompt is the evidence, then the questions with their criteria,
options or levels; its output a structure refining the verdict (`StructureSpec.refines`) whose
field takes only the options' keys or the levels' indexes, so the model cannot answer outside
them and the verdict flows wherever its concept is read.
"""

from __future__ import annotations

import json
import keyword
import re
from dataclasses import dataclass, field

from durapipe.adapters.mthds._bundle import JudgeLevel, JudgeQuestion, PipeJudge
from durapipe.adapters.mthds._natives import NATIVE_STRUCTURES
from durapipe.spec import StructureSpec

# Each kind's verdict native (the durapipe type it is) and how a message names the kind.
VERDICTS = {"yes_no": "YesNo", "choice": "Choice", "rating": "Rating"}
_KIND_WORDS = {"yes_no": "a yes/no question", "choice": "a choice", "rating": "a rating"}
# Text the model reads as it is: written as a Jinja2 string where a template would read it.
_TEMPLATE_MARKS = re.compile(r"[{}$@%#]")
SYSTEM = (
    "You are a judge. You answer closed questions about the evidence you are given, each with "
    "one of the answers it allows, and nothing else."
)


@dataclass
class Judged:
    """What a PipeJudge becomes: the llm prompt (an MTHDS template: the evidence and the
    questions), the llm output type, and the structures that type needs."""

    prompt: str
    output: str
    structures: dict[str, StructureSpec] = field(default_factory=dict)


def kind_of(question: JudgeQuestion) -> str:
    """``choice``, ``rating`` or ``yes_no``, read off what the question declares (as Pipelex)."""
    if question.options is not None:
        return "choice"
    if question.levels is not None:
        return "rating"
    return "yes_no"


def asked(pipe: PipeJudge) -> dict[str, JudgeQuestion]:
    """The questions a judge asks, by name; the single form's one question is named ``""``."""
    if pipe.questions is not None:
        return dict(pipe.questions)
    return {
        "": JudgeQuestion(
            question=pipe.question or "",
            options=pipe.options,
            levels=pipe.levels,
            criteria=pipe.criteria,
            threshold=pipe.threshold,
        )
    }


def problems(pipe: PipeJudge) -> list[tuple[str, str]]:
    """What a PipeJudge declares wrong, as Pipelex's blueprint refuses it: (field, sentence)."""
    found: list[tuple[str, str]] = []
    if (pipe.question is None) == (pipe.questions is None):
        found.append(
            ("question", "a PipeJudge asks one 'question' or several 'questions': set exactly one")
        )
        return found
    if not pipe.prompt.strip():
        found.append(("prompt", "the evidence the questions are asked about must not be empty"))
    if pipe.questions is not None:
        if not pipe.questions:
            found.append(("questions", "holds no question: add one, or ask one in 'question'"))
        for kind_field in ("options", "levels", "criteria", "threshold"):
            if getattr(pipe, kind_field) is not None:
                found.append(
                    (kind_field, "a PipeJudge asking several questions sets it on each question")
                )
    for name, question in asked(pipe).items():
        prefix = f"questions.{name}." if name else ""
        if name and (not name.isidentifier() or keyword.iskeyword(name) or name[0] == "_"):
            found.append(
                (
                    f"questions.{name}",
                    "a question's name is its output field: a Python identifier, not a keyword, "
                    "not starting with '_' (as Pipelex)",
                )
            )
        if not question.question.strip():
            found.append((f"{prefix}question", "must not be empty"))
        found += [(prefix + f, message) for f, message in _kind_problems(question)]
    return found


def _kind_problems(question: JudgeQuestion) -> list[tuple[str, str]]:
    kind = kind_of(question)
    found: list[tuple[str, str]] = []
    if question.options is not None and question.levels is not None:
        found.append(("levels", "a question declares 'options' (a choice) or 'levels', not both"))
    if kind != "yes_no":
        for yes_no_field in ("criteria", "threshold"):
            if getattr(question, yes_no_field) is not None:
                found.append(
                    (
                        yes_no_field,
                        f"applies to a yes/no question only, and this is {_KIND_WORDS[kind]}",
                    )
                )
    if question.options is not None:
        if len(question.options) < 2:
            found.append(("options", "a choice needs at least two options"))
        if any(not key.strip() for key in question.options):
            found.append(("options", "an option's key must not be empty"))
    if question.levels is not None:
        found += [("levels", message) for message in _level_problems(question.levels)]
    if question.criteria is not None and not (
        question.criteria.yes.strip() and question.criteria.no.strip()
    ):
        found.append(("criteria", "both 'yes' and 'no' must say what they mean"))
    if question.threshold is not None and not 0 < question.threshold < 1:
        found.append(("threshold", "a probability of yes strictly between 0 and 1"))
    return found


def _level_problems(levels: list[str | JudgeLevel]) -> list[str]:
    found: list[str] = []
    if len(levels) < 2:
        found.append("a rating needs at least two levels")
    labels = [level.label for level in levels if isinstance(level, JudgeLevel) and level.label]
    if any(
        isinstance(level, JudgeLevel) and not (level.label or level.description) for level in levels
    ):
        found.append("a level written as a table needs a 'label', a 'description' or both")
    if labels and len(labels) != len(levels):
        found.append("every level carries a 'label' or none does")
    if len(set(labels)) != len(labels):
        found.append("the labels of one scale must differ")
    return found


def judge(
    pipe: PipeJudge, name: str, output: str, structures: dict[str, StructureSpec]
) -> Judged | str | None:
    """The llm step for judge ``name`` whose declared output is durapipe type ``output``, or why
    its output cannot hold its verdicts (a sentence about field 'output'), or None for a
    declaration `problems` refuses (the rules report those)."""
    if problems(pipe):
        return None
    questions = asked(pipe)
    stem = name.replace("-", "_")
    if pipe.questions is None:
        question = questions[""]
        kind = kind_of(question)
        if output != VERDICTS[kind]:
            return (
                f"this PipeJudge asks {_KIND_WORDS[kind]}, so its output must be "
                f"{VERDICTS[kind]} or a concept refining it, not '{pipe.output}'"
            )
        judged = Judged(pipe.prompt.strip() + "\n\n" + _asking(question, None), output)
        judged.output = _verdict_type(question, f"{VERDICTS[kind]}_{stem}", judged.structures)
        return judged
    declared = structures.get(output)
    if declared is None:
        return (
            "a PipeJudge asking several questions fills a structure with one verdict per "
            f"question, and '{pipe.output}' has none"
        )
    if set(declared.fields) != set(questions):
        return (
            f"the fields of '{pipe.output}' ({', '.join(declared.fields)}) must be the questions' "
            f"names ({', '.join(questions)}): each question fills the field of its name"
        )
    parts = ["Answer each question about the evidence above; its answer goes in its field."]
    judged = Judged("", f"{output}_{stem}")
    fields: dict[str, dict[str, object]] = {}
    for question_name, question in questions.items():
        verdict = VERDICTS[kind_of(question)]
        if declared.fields[question_name].type != verdict:
            return (
                f"the question '{question_name}' asks {_KIND_WORDS[kind_of(question)]}, so field "
                f"'{question_name}' of '{pipe.output}' must hold {verdict} or a concept refining "
                f"it, not {declared.fields[question_name].type}"
            )
        parts.append(_asking(question, question_name))
        verdict_type = _verdict_type(
            question, f"{verdict}_{stem}_{question_name}", judged.structures
        )
        fields[question_name] = {
            "type": verdict_type,
            "description": declared.fields[question_name].description,
        }
    judged.prompt = pipe.prompt.strip() + "\n\n" + "\n\n".join(parts)
    judged.structures[judged.output] = StructureSpec(
        description=declared.description, fields=fields, refines=output
    )
    return judged


def _verdict_type(question: JudgeQuestion, name: str, structures: dict[str, StructureSpec]) -> str:
    """The verdict a question answers with: YesNo, or the Choice or Rating native narrowed to its
    options' keys or its levels' indexes (a structure ``name`` added to ``structures``)."""
    kind = kind_of(question)
    if kind == "yes_no":
        return "YesNo"
    native = NATIVE_STRUCTURES[VERDICTS[kind]]
    ((field_name, verdict),) = native.fields.items()
    allowed: list[str | int | float] = (
        list(question.options or {})
        if kind == "choice"
        else list(range(len(question.levels or [])))
    )
    structures[name] = StructureSpec(
        description=native.description,
        fields={field_name: verdict.model_copy(update={"choices": allowed})},
        refines=VERDICTS[kind],
    )
    return name


def _asking(question: JudgeQuestion, name: str | None) -> str:
    """One question as the model reads it: its text (a template) and the answers it allows."""
    heading = f"Question '{name}': " if name else "Question: "
    lines = [heading + question.question.strip()]
    if question.options is not None:
        lines.append("Choose one option and answer with its key:")
        for key, description in question.options.items():
            lines.append(_literal(f"- {key}: {description}" if description.strip() else f"- {key}"))
    elif question.levels is not None:
        lines.append(
            "Rate it on this scale, from lowest to highest, answering with the level's number:"
        )
        for index, level in enumerate(question.levels):
            lines.append(_literal(f"{index}: {_level_words(level)}"))
    else:
        lines.append("Answer yes (true) or no (false).")
        if question.criteria is not None:
            lines.append(_literal(f"Yes means: {question.criteria.yes.strip()}"))
            lines.append(_literal(f"No means: {question.criteria.no.strip()}"))
    return "\n".join(lines)


def _level_words(level: str | JudgeLevel) -> str:
    if isinstance(level, str):
        return level.strip()
    words = [w.strip() for w in (level.label, level.description) if w and w.strip()]
    return " (".join(words) + ")" * (len(words) - 1)


def _literal(text: str) -> str:
    """``text`` as the model reads it, never as a template: a Jinja2 string where it has a mark
    a template reads (``$x``, ``@x``, ``{{``)."""
    if not _TEMPLATE_MARKS.search(text):
        return text
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"
