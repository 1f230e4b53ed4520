"""What a bundle or manifest sets that durapipe reads but that changes nothing: one note each use."""

from __future__ import annotations

from durapipe._errors import Problem
from durapipe.adapters.mthds import _judge
from durapipe.adapters.mthds._bundle import Bundle, PipeJudge, PipeLLM, PipeSearch
from durapipe.adapters.mthds._library import Library, resolve_concept, split_multiplicity
from durapipe.adapters.mthds._natives import NATIVE_STRUCTURES, NATIVE_TYPES

# Fields read from a bundle that change nothing in durapipe yet: each use is a note (see `notes`).
NO_EFFECT = {
    "PipeExtract": ("max_page_images", "page_image_captions", "page_views", "page_views_dpi"),
    "PipeSearch": ("include_images",),
}
# A PipeLLM's fields that apply to a structured output only (as in Pipelex): on a text output,
# each use is a note.
STRUCTURING = ("structuring_method", "model_to_structure")
NO_EFFECT_SETTINGS = (
    "prompting_target",
    "image_detail",
    "include_images",
    "include_inline_citations",
)


def notes(library: Library) -> list[Problem]:
    """A note for each field the bundles set that has no effect in durapipe yet (never silent)."""
    found: list[Problem] = [*library.notes]
    for dep in library.dependencies():
        found += notes(dep)
    for bundle in library.bundles:
        for code, pipe in bundle.pipes.items():
            fields = [f for f in NO_EFFECT.get(pipe.type, ()) if getattr(pipe, f, None) is not None]
            model = getattr(pipe, "model", None)
            if isinstance(model, dict):
                fields += [f"model.{k}" for k in NO_EFFECT_SETTINGS if k in model]
            if isinstance(pipe, PipeSearch):
                fields = [f for f in fields if not _search_honours(f, pipe)]
            for name in fields:
                found.append(
                    Problem(
                        f"bundle '{bundle.domain}', pipe '{code}', field '{name}'",
                        "read, but has no effect in durapipe yet",
                        bundle.where(f"pipe.{code}.{name.split('.')[0]}"),
                    )
                )
            if isinstance(pipe, PipeLLM) and not _makes_structure(library, bundle, pipe.output):
                found += [
                    Problem(
                        f"bundle '{bundle.domain}', pipe '{code}', field '{name}'",
                        f"read, but has no effect: the output '{pipe.output}' has no structure "
                        "to make (Pipelex applies it to structured outputs only)",
                        bundle.where(f"pipe.{code}.{name}"),
                    )
                    for name in STRUCTURING
                    if getattr(pipe, name) is not None
                ]
            if isinstance(pipe, PipeJudge):
                found += _thresholds(bundle, code, pipe)
    return found


def _thresholds(bundle: Bundle, code: str, pipe: PipeJudge) -> list[Problem]:
    """A note for each yes/no question's ``threshold``: it compares a probability of yes, which a
    model answering in text does not report; its own yes or no stands, as in Pipelex then."""
    return [
        Problem(
            f"bundle '{bundle.domain}', pipe '{code}', field '{where}threshold'",
            "read, but has no effect in durapipe: the model answers yes or no and reports no "
            "probability to compare with it, so its own verdict stands (as in Pipelex when the "
            "judging model reports none)",
            bundle.where(f"pipe.{code}.{where}threshold".rstrip(".")),
        )
        for name, question in _judge.asked(pipe).items()
        if question.threshold is not None
        for where in [f"questions.{name}." if name else ""]
    ]


def _makes_structure(library: Library, bundle: Bundle, output: str) -> bool:
    """Whether concept reference ``output`` has a structure (its own, a base's or a native's)."""
    try:
        code = split_multiplicity(output)[0]
    except ValueError:
        return True  # refused elsewhere: no second sentence here
    seen: set[str] = set()
    while code not in seen:
        seen.add(code)
        target = resolve_concept(library, bundle, code)
        if isinstance(target, str):
            return True  # refused elsewhere
        if target.bundle is None or target.library is None:
            return NATIVE_TYPES.get(target.code, "text") in NATIVE_STRUCTURES
        concept = target.bundle.concepts[target.code]
        if isinstance(concept.structure, dict) or concept.refines is None:
            return isinstance(concept.structure, dict)
        library, bundle, code = target.library, target.bundle, concept.refines
    return True


def _search_honours(name: str, pipe: PipeSearch) -> bool:
    """Whether a search does what its field ``name`` asks: inline citations (or none) go into its
    instructions, and ``include_images = false`` (the spec's default) is what it does anyway: its
    `SearchResult` holds no images."""
    if name == "model.include_inline_citations":
        return True
    if name in ("include_images", "model.include_images"):
        model = pipe.model if isinstance(pipe.model, dict) else {}
        return (pipe.include_images if name == "include_images" else model.get(name[6:])) is False
    return False
