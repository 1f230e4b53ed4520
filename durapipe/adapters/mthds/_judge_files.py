"""A PipeJudge's questions present no file: an image or a document they read is refused.

Pipelex (Pipelex/pipelex at 14817ab, ``pipelex/pipe_operators/judge/pipe_judge.py``,
``PipeJudge.validate_inputs_static``) renders a question as plain text, so an image or a document
it read would reach the model as the file's string form (its URL), never as the file: only the
``prompt`` presents files. Its factory (``pipe_judge_factory.py``) finds what each question reads as
a PipeLLM prompt's files are found (``template_file_references.py``): a variable whose input is an
``Image`` or a ``Document`` (or a list of them, or a concept refining one), or a dotted path to a
field of a structure that holds one. durapipe refuses the same reads, when the bundle loads.
"""

from __future__ import annotations

from durapipe.adapters.mthds import _judge, _shorthand
from durapipe.adapters.mthds._bundle import Bundle, FieldBlueprint, PipeJudge
from durapipe.adapters.mthds._library import (
    Library,
    refines,
    resolve_concept,
    split_multiplicity,
)
from durapipe.spec import _templates

_FILES = ("Image", "Document")
# The fields of the structured natives (Pipelex's PageContent and TextAndImagesContent), by the
# concept each holds.
_NATIVE_FIELDS = {
    "Page": {"text_and_images": "TextAndImages", "page_view": "Image"},
    "TextAndImages": {"text": "Text", "images": "Image"},
}


def question_files(library: Library, bundle: Bundle, pipe: PipeJudge) -> list[tuple[str, str]]:
    """(field, sentence) for each question of ``pipe`` that reads an image or a document."""
    found: list[tuple[str, str]] = []
    for name, question in _judge.asked(pipe).items():
        field = f"questions.{name}.question" if name else "question"
        try:
            paths = _templates.paths(_shorthand.expand(question.question))
        except _templates.TemplateError:
            continue  # the template rules report it
        files = sorted(p for p in paths if _file_kind(library, bundle, pipe.inputs, p))
        if files:
            shown = ", ".join(f"'{p}'" for p in files)
            found.append(
                (
                    field,
                    f"reads {shown}, an image or a document, and only the prompt presents files "
                    "to the judging model (Pipelex refuses it too): read it in 'prompt', and ask "
                    "about it in the question",
                )
            )
    return found


def _file_kind(library: Library, bundle: Bundle, inputs: dict[str, str], path: str) -> bool:
    """Whether ``path`` (``photo``, ``doc.cover``) reads an image or a document."""
    root, *fields = path.split(".")
    if root not in inputs:
        return False
    try:
        concept = split_multiplicity(inputs[root])[0]
    except ValueError:
        return False  # reported where the input is declared
    owner: Bundle | None = bundle
    for name in fields:
        if owner is None:
            return False
        found = _field_concept(library, owner, concept, name)
        if found is None:
            return False
        concept, owner = found
    return owner is not None and any(refines(library, owner, concept, f) for f in _FILES)


def _field_concept(
    library: Library, bundle: Bundle, ref: str, name: str
) -> tuple[str, Bundle] | None:
    """The concept field ``name`` of concept ``ref`` holds (and the bundle it resolves from),
    following refinements to the structure they inherit; None for a plain field or no field."""
    for _ in range(64):
        target = resolve_concept(library, bundle, ref)
        if isinstance(target, str):
            return None
        if target.native:
            held = _NATIVE_FIELDS.get(target.code, {}).get(name)
            return (held, bundle) if held else None
        assert target.bundle is not None
        concept = target.bundle.concepts[target.code]
        if concept.refines is not None:
            bundle, ref = target.bundle, concept.refines
            continue
        spec = concept.structure.get(name) if isinstance(concept.structure, dict) else None
        if not isinstance(spec, FieldBlueprint):
            return None
        held = spec.concept_ref if spec.type == "concept" else spec.item_concept_ref
        return (held, target.bundle) if held else None
    return None
