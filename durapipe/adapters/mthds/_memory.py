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
``add_each_output``, each branch result, and the results of a condition's chosen outcome (a
condition with a ``continue`` outcome shows its result only).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from durapipe.spec import BatchPipe, ConditionPipe, Pipeline, SequencePipe, Step
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
        The pipeline, the name of ``pipe``'s own output among the results it returns (None when
        ``pipe`` is not a sequence: nothing changes), and the MTHDS concept of each result, in
        memory order (read the run's output with `memory_values`).
    """
    spec = pipeline.pipes.get(pipe)
    if not isinstance(spec, SequencePipe) or not isinstance(spec.output, str):
        return pipeline, None, {}
    rewrite = _Rewrite(dict(pipeline.pipes), outputs)
    names = rewrite.sequence(pipe, frozenset({pipe}))
    return (
        pipeline.model_copy(update={"pipes": rewrite.pipes}),
        _OUTPUT,
        {
            **names,
            **rewrite.inner,
        },
    )


def memory_values(
    output: Mapping[str, Any], concepts: Mapping[str, str]
) -> dict[str, tuple[str, Any]]:
    """The results a run of `memory_of`'s pipeline returned, by name, in memory order, with their
    concepts: a condition's chosen outcome's results (held under ``<step>__memory``) in its place."""
    found: dict[str, tuple[str, Any]] = {}
    for name, value in output.items():
        if concepts.get(name) == HELD:
            if isinstance(value, Mapping):
                found.update(memory_values(value, concepts))
        elif name != _OUTPUT and name in concepts:
            found[name] = (concepts[name], value)
    return found


# The concept of a name that holds a condition outcome's results (expanded by `memory_values`).
HELD: Final = "<held>"
_OUTPUT: Final = "__output"


class _Rewrite:
    """The pipes of a run that returns its whole memory, rewritten one sequence at a time."""

    def __init__(self, pipes: dict[str, AnyPipe], outputs: Mapping[str, str]) -> None:
        self.pipes = pipes
        self.outputs = outputs
        self.done: dict[str, dict[str, str]] = {}
        # The concepts of results that only a condition's chosen outcome makes.
        self.inner: dict[str, str] = {}

    def sequence(self, name: str, trail: frozenset[str]) -> dict[str, str]:
        """Rewrite sequence ``name`` to return every result (and its own output as ``__output``);
        their concepts by name."""
        spec = self.pipes[name]
        assert isinstance(spec, SequencePipe) and isinstance(spec.output, str)
        steps: list[Step] = []
        names: dict[str, str] = {}
        for step in spec.steps:
            result = step.result_name
            nested = self.pipes.get(step.pipe or "")
            if step.pipe is None or step.pipe in trail:
                nested = None
            holder = f"{result}{_PRIVATE}"
            if isinstance(nested, SequencePipe) and isinstance(nested.output, str):
                inner = self._exposed(step.pipe or "", nested, trail | {name})
                steps.append(step.model_copy(update={"pipe": inner, "result": holder}))
                for inner_name, concept in self.done[inner].items():
                    steps.append(_binding(f"{holder}.{inner_name}", inner_name))
                    names[inner_name] = concept
                steps.append(_binding(f"{holder}.{_OUTPUT}", result))
            elif isinstance(nested, ConditionPipe) and self._routes_to_sequences(nested):
                routed = self._condition(step.pipe or "", nested, trail | {name})
                steps.append(step.model_copy(update={"pipe": routed, "result": holder}))
                steps.append(_binding(f"{holder}.{_OUTPUT}", result))
                names[holder] = HELD
            else:
                steps.append(step)
            if step.pipe is not None and step.pipe.endswith("-route"):
                continue  # the condition of an alias sequence: its outcome is the parent's result
            names[result] = concept_of(self.pipes, self.outputs, step.pipe or "")
        steps.append(_binding(spec.output, _OUTPUT))
        returned = [*names, _OUTPUT]
        self.pipes[name] = spec.model_copy(update={"steps": steps, "output": returned})
        return names

    def _exposed(self, pipe: str, spec: SequencePipe, trail: frozenset[str]) -> str:
        """The rewritten copy of nested sequence ``pipe`` (made once)."""
        inner = f"{pipe}{_PRIVATE}"
        if inner not in self.done:
            self.pipes[inner] = spec
            self.done[inner] = {}
            self.done[inner] = self.sequence(inner, trail | {pipe})
        return inner

    def _routes_to_sequences(self, spec: ConditionPipe) -> bool:
        targets = [*spec.outcomes.values(), *([spec.default] if spec.default else [])]
        # "continue" outputs nothing, so its run holds no results to read: left as it is.
        return "continue" not in targets and any(
            isinstance(self.pipes.get(t), SequencePipe) for t in targets
        )

    def _condition(self, pipe: str, spec: ConditionPipe, trail: frozenset[str]) -> str:
        """A copy of condition ``pipe`` whose every outcome returns its results (a mapping with
        its output as ``__output``): a sequence's rewritten copy, any other pipe wrapped."""
        routed = f"{pipe}{_PRIVATE}"
        if routed in self.pipes:
            return routed

        def outcome(target: str) -> str:
            if target == "fail":
                return target
            nested = self.pipes.get(target)
            if isinstance(nested, SequencePipe) and isinstance(nested.output, str):
                inner = self._exposed(target, nested, trail | {pipe})
                self.inner.update(self.done[inner])
                return inner
            wrapper = f"{target}__outcome"
            self.pipes[wrapper] = SequencePipe(
                description=f"{target}, its output as {_OUTPUT}",
                inputs=dict(nested.inputs) if nested is not None else {},
                steps=[Step(pipe=target, result=_OUTPUT)],
                output=[_OUTPUT],
            )
            return wrapper

        outcomes = {value: outcome(target) for value, target in spec.outcomes.items()}
        default = outcome(spec.default) if spec.default else None
        self.pipes[routed] = spec.model_copy(update={"outcomes": outcomes, "default": default})
        return routed


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
