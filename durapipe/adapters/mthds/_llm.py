"""The llm pipes a PipeLLM, PipeSearch or PipeJudge becomes, and how a PipeLLM makes a structure.

As in Pipelex, a structured output (a concept with a structure) is made by ``model_to_structure``
when the pipe names one, else by its ``model``; with ``structuring_method = "preliminary_text"``
the pipe's model first answers in free text (``<pipe>__draft_text``) and a second call structures
that text (``<pipe>__structure``), the two steps of one sequence, as Pipelex elaborates it.
"""

from __future__ import annotations

from typing import Any

from durapipe.adapters.mthds._bundle import PipeLLM
from durapipe.adapters.mthds._state import Translation, model
from durapipe.spec import LlmPipe, SequencePipe, Step
from durapipe.spec._spec import AnyPipe

DRAFT = "draft_text"
_STRUCTURE_PROMPT = (
    "Extract the information of the text below into the requested structure, leaving out "
    "nothing it says and adding nothing it does not.\n\n{{ " + DRAFT + " }}"
)


def llm(
    state: Translation,
    common: dict[str, Any],
    ref: str | dict[str, Any] | None,
    system: str | None,
    prompt: str,
    output: str,
    kind: str = "llm",
) -> LlmPipe:
    """The llm pipe a PipeLLM, PipeSearch or PipeJudge becomes, with the model ``ref`` names."""
    resolved = model(state, ref, kind)
    return LlmPipe(
        **common,
        model=resolved.model,
        fallbacks=list(resolved.fallbacks),
        system=system,
        prompt=prompt,
        output=output,
        settings=resolved.settings,
    )


def pipe_llm(
    state: Translation,
    name: str,
    blueprint: PipeLLM,
    common: dict[str, Any],
    system: str | None,
    prompt: str,
    output: str,
) -> AnyPipe:
    """The pipe a PipeLLM named ``name`` becomes: one llm call, or a draft then its structuring."""
    if not structured(state, output):
        return llm(state, common, blueprint.model, system, prompt, output)
    to_structure = blueprint.model_to_structure or blueprint.model
    if blueprint.structuring_method != "preliminary_text":
        return llm(state, common, to_structure, system, prompt, output)
    draft, structure = f"{name}__draft_text", f"{name}__structure"
    about = common["description"]
    state.pipes[draft] = llm(
        state,
        {**common, "description": f"{about} (the draft text)"},
        blueprint.model,
        system,
        prompt,
        "text",
    )
    state.pipes[structure] = llm(
        state,
        {"description": f"{about} (the draft text structured)", "inputs": {DRAFT: "text"}},
        to_structure,
        None,
        _STRUCTURE_PROMPT,
        output,
    )
    return SequencePipe(
        **common,
        steps=[
            Step(pipe=draft, name=DRAFT, result=DRAFT),
            Step(pipe=structure, name="structure", result="structured"),
        ],
        output="structured",
    )


def structured(state: Translation, output: str) -> bool:
    """Whether ``output`` (a durapipe type) is a structure or a list of one: what Pipelex makes
    as an object, where ``model_to_structure`` and ``structuring_method`` apply."""
    item = output[5:-1].split(",")[0].strip() if output.startswith("list[") else output
    return item in state.structures


def drafted(state: Translation, name: str) -> LlmPipe | None:
    """The llm pipe structuring the draft of pipe ``name``, when ``name`` is a PipeLLM with
    ``structuring_method = "preliminary_text"`` (a sequence of draft and structure)."""
    structure = state.pipes.get(f"{name}__structure")
    if isinstance(state.pipes.get(name), SequencePipe) and isinstance(structure, LlmPipe):
        return structure
    return None


def redraft(state: Translation, name: str, variant: str, output: str) -> None:
    """Pipe ``variant``: pipe ``name`` (drafted) whose structuring call makes ``output`` (a step's
    ``nb_output`` or ``multiple_output``): the same draft, then a copy of the structure pipe."""
    pipe, structure = state.pipes[name], drafted(state, name)
    assert isinstance(pipe, SequencePipe) and structure is not None
    state.pipes.setdefault(f"{variant}__structure", structure.model_copy(update={"output": output}))
    steps = [pipe.steps[0], pipe.steps[1].model_copy(update={"pipe": f"{variant}__structure"})]
    state.pipes.setdefault(variant, pipe.model_copy(update={"steps": steps}))
