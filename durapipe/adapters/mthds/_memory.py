"""The full working memory of a run (``--with-memory``, the protocol's ``working_memory``).

In MTHDS every pipe of a run writes into one working memory: a nested sequence's step results sit
beside its parent's. A durapipe controller returns one output, so for a run that shows its memory
the pipeline is rewritten: each sequence returns all its results (a mapping), and where a parent
ran a nested sequence, binding steps lift the nested results into the parent's memory, under their
own names, and the nested output under the parent step's name. The same values reach the same
pipes; only what the run returns grows.

What Pipelex keeps and this mirrors: the inputs, every step result of the top sequence and of the
sequences it runs (at any depth, a condition's ``add_alias_from_expression_to`` value included), a
batch's result list (not its items' inner results), a parallel's combined output and, with
``add_each_output``, each branch result. A condition's chosen outcome shows its result only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from durapipe.spec import BatchPipe, Pipeline, SequencePipe, Step
from durapipe.spec._spec import AnyPipe

_VARIANT: Final = re.compile(r"^(?P<base>.+)-(?:x(?P<count>\d+)|list)$")
_PRIVATE: Final = "__memory"


def memory_of(
    pipeline: Pipeline, outputs: Mapping[str, str], pipe: str
) -> tuple[Pipeline, str | None, dict[str, str]]:
    """The pipeline in which sequence ``pipe`` returns its whole working memory.

    Args:
        pipeline: the method's pipeline.
        outputs: durapipe pipe name -> its MTHDS output concept.
        pipe: the pipe run.

    Returns:
        The pipeline, the name of ``pipe``'s own output among the results (None when ``pipe`` is
        not a sequence: nothing changes), and the MTHDS concept of each result, in memory order.
    """
    spec = pipeline.pipes.get(pipe)
    if not isinstance(spec, SequencePipe) or not isinstance(spec.output, str):
        return pipeline, None, {}
    pipes: dict[str, AnyPipe] = dict(pipeline.pipes)
    names = _expose(pipes, outputs, pipe, frozenset({pipe}))
    return pipeline.model_copy(update={"pipes": pipes}), spec.output, names


def _expose(
    pipes: dict[str, AnyPipe],
    outputs: Mapping[str, str],
    name: str,
    trail: frozenset[str],
    done: dict[str, dict[str, str]] | None = None,
) -> dict[str, str]:
    """Rewrite sequence ``name`` (in ``pipes``) to return every result; their concepts by name."""
    done = {} if done is None else done
    spec = pipes[name]
    assert isinstance(spec, SequencePipe) and isinstance(spec.output, str)
    steps: list[Step] = []
    names: dict[str, str] = {}
    for step in spec.steps:
        result = step.result_name
        nested = pipes.get(step.pipe or "")
        if (
            isinstance(nested, SequencePipe)
            and isinstance(nested.output, str)
            and step.pipe is not None
            and step.pipe not in trail
        ):
            inner = f"{step.pipe}{_PRIVATE}"
            if inner not in done:
                pipes[inner] = nested
                done[inner] = _expose(pipes, outputs, inner, trail | {name, step.pipe}, done)
            holder = f"{result}{_PRIVATE}"
            steps.append(step.model_copy(update={"pipe": inner, "result": holder}))
            for inner_name, concept in done[inner].items():
                steps.append(_binding(f"{holder}.{inner_name}", inner_name))
                names[inner_name] = concept
            steps.append(_binding(f"{holder}.{nested.output}", result))
            names[result] = concept_of(pipes, outputs, step.pipe)
            continue
        steps.append(step)
        if step.pipe is not None and step.pipe.endswith("-route"):
            continue  # the condition of an alias sequence: its outcome is the parent step's result
        names[result] = concept_of(pipes, outputs, step.pipe or "")
    returned = [*names, *([spec.output] if spec.output not in names else [])]
    pipes[name] = spec.model_copy(update={"steps": steps, "output": returned})
    return names


def _binding(path: str, result: str) -> Step:
    return Step.model_validate({"from": path, "result": result})


def concept_of(pipes: Mapping[str, AnyPipe], outputs: Mapping[str, str], pipe: str) -> str:
    """The MTHDS concept of what durapipe pipe ``pipe`` makes: its own, or, for the pipes the
    translation adds, the concept they carry (a step's ``nb_output`` copy, an inline batch, an alias)."""
    if pipe in outputs:
        return outputs[pipe]
    variant = _VARIANT.match(pipe)
    if variant is not None and variant.group("base") in outputs:
        item = outputs[variant.group("base")].split("[")[0]
        return f"{item}[{variant.group('count') or ''}]"
    spec = pipes.get(pipe)
    if isinstance(spec, BatchPipe):
        return concept_of(pipes, outputs, spec.pipe).split("[")[0] + "[]"
    if pipe.endswith("-alias"):
        return "Text"
    return "Dynamic"
