"""Batches over a pipe that makes a list: where the MTHDS declarations ask for one list, the batch
joins the lists (`durapipe.spec.BatchPipe.flatten`). MTHDS concept references cannot name a list
of lists, and Pipelex keeps such a batch nested whatever the next pipe declares (README: "Where
the spec, real bundles and Pipelex disagree")."""

from __future__ import annotations

from typing import Any

from durapipe.adapters.mthds._bundle import SubPipe
from durapipe.adapters.mthds._library import PipeTarget, resolve_pipe, split_multiplicity


def returns_list(pipes: dict[str, Any], target: PipeTarget, ref: str, name: str) -> bool:
    """Whether the pipe ``ref`` (durapipe ``name``, maybe an ``nb_output`` copy) makes a list."""
    translated = getattr(pipes.get(name), "output", None)
    if isinstance(translated, str) and translated.startswith("list["):
        return True
    found = resolve_pipe(target.library, target.bundle, ref)
    if isinstance(found, str):
        return False
    try:
        return split_multiplicity(found.blueprint.output)[2]
    except ValueError:
        return False  # reported where the output is declared


def reads_flat_list(target: PipeTarget, later: list[SubPipe], result: str) -> bool:
    """Whether a later step's pipe declares ``result`` as a list (``X[]``), or the sequence
    returns it as one: a batch result they read must be one list, not a list of lists."""
    declared: list[str] = []
    for sub in later:
        found = resolve_pipe(target.library, target.bundle, sub.pipe)
        if not isinstance(found, str) and result in found.blueprint.inputs:
            declared.append(found.blueprint.inputs[result])
    if not later:
        declared.append(target.blueprint.output)
    for ref in declared:
        try:
            if split_multiplicity(ref)[2]:
                return True
        except ValueError:
            continue
    return False
