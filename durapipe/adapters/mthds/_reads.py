"""A sequence step reading one value where an earlier step stores a list: refused, as Pipelex does.

Pipelex checks every step of a PipeSequence against the values its working memory holds at that
step (Pipelex/pipelex at 07de484, ``pipelex/pipe_controllers/sequence/pipe_sequence.py``,
``PipeSequence._slot_read_refusal`` and ``_is_readable_as``, which calls
``variable_multiplicity.is_multiplicity_compatible``): a step result, and the branch results of a
PipeParallel with ``add_each_output``, keep the multiplicity their pipe declares (a batched step's
is always a list), and a pipe declaring an input ``X`` does not read an ``X[]`` there ("a list is
not a single value": its PipeSequence documentation, whose example is the ``Page[]`` of an
extraction read as ``Page``). So it refuses Pipelex's own ``cv_job_match`` test bundle, written for
an earlier release; durapipe refuses it too, saying what to write instead.
"""

from __future__ import annotations

from durapipe.adapters.mthds._bundle import Bundle, PipeParallel, PipeSequence, SubPipe
from durapipe.adapters.mthds._library import Library, resolve_pipe, split_multiplicity

# name in working memory -> (the concept it holds, whether a list, who stored it)
_Memory = dict[str, tuple[str, bool, str]]


def list_reads(
    library: Library, bundle: Bundle, code: str, pipe: PipeSequence
) -> list[tuple[str, str, str]]:
    """(where, sentence, TOML key) for each step of ``pipe`` that reads one value where the
    working memory holds a list."""
    found: list[tuple[str, str, str]] = []
    memory: _Memory = {}
    for name, ref in pipe.inputs.items():
        _remember(memory, name, ref, "the sequence declares it", None)
    for index, step in enumerate(pipe.steps):
        target = resolve_pipe(library, bundle, step.pipe)
        if isinstance(target, str):
            return found  # reported by the rules; what the step stores is unknown
        blueprint = target.blueprint
        if step.batch_over is None:
            for name, declared in blueprint.inputs.items():
                stored = memory.get(name)
                if stored is None or not stored[1] or _reads_anything(declared):
                    continue
                concept, _, who = stored
                found.append(
                    (
                        f"pipe '{code}', step {index + 1} ('{step.pipe}'), input '{name}'",
                        f"pipe '{step.pipe}' reads '{name}' as '{declared}', but {who} as "
                        f"'{concept}[]', and a list is not one value (Pipelex refuses it too): "
                        f"declare the input as '{concept}[]' in pipe '{step.pipe}' and in the "
                        f"pipes it hands it to, or batch the step over '{name}'",
                        f"pipe.{code}.steps.{index}",
                    )
                )
        who = f"step {index + 1} ('{step.pipe}') stores it"
        _remember(memory, _result(step), blueprint.output, who, step)
        if isinstance(blueprint, PipeParallel) and blueprint.add_each_output:
            for branch in blueprint.branches:
                branch_target = resolve_pipe(target.library, target.bundle, branch.pipe)
                if not isinstance(branch_target, str):
                    output = branch_target.blueprint.output
                    _remember(memory, _result(branch), output, who, branch)
    return found


def _result(step: SubPipe) -> str:
    return step.result or step.pipe.rpartition(".")[2]


def _remember(memory: _Memory, name: str, ref: str, who: str, step: SubPipe | None) -> None:
    """Record what ``name`` holds once declared or stored as ``ref`` by ``step``."""
    try:
        concept, count, is_list = split_multiplicity(ref)
    except ValueError:
        memory.pop(name, None)  # reported where it is declared
        return
    if step is not None:
        if step.batch_over is not None or step.multiple_output:
            is_list = True
        elif step.nb_output is not None:
            count, is_list = step.nb_output, step.nb_output > 1
    memory[name] = (concept, is_list and count != 1, who)


def _reads_anything(ref: str) -> bool:
    """Whether an input declared ``ref`` takes a list: a list itself, or ``Dynamic`` or
    ``Anything``, which Pipelex lets take any value, a list included."""
    try:
        concept, count, is_list = split_multiplicity(ref)
    except ValueError:
        return True  # reported where it is declared: nothing to add here
    flexible = concept.rpartition(".")[2] in ("Dynamic", "Anything")
    return flexible or (is_list and count != 1)
