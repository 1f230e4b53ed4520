"""What a translation from MTHDS carries from pipe to pipe: the pipeline built so far, the problems
met, where each MTHDS pipe went; and the model a pipe's reference means."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from durapipe._errors import Problem
from durapipe.adapters.mthds._bundle import Bundle
from durapipe.adapters.mthds._deck import ModelDeck, ResolvedModel, resolve_model
from durapipe.adapters.mthds._library import Library
from durapipe.spec import StructureSpec
from durapipe.spec._deck import CONNECTION_SETTINGS, ModelEntry, ModelRef
from durapipe.spec._spec import AnyPipe


@dataclass
class Translation:
    """The pipeline built so far, the problems met, and where each MTHDS pipe went."""

    library: Library
    deck: ModelDeck
    pipes: dict[str, AnyPipe] = field(default_factory=dict)
    structures: dict[str, StructureSpec] = field(default_factory=dict)
    models: dict[str, ModelRef] = field(default_factory=dict)
    names: dict[tuple[int, str, str], str] = field(default_factory=dict)
    structure_names: dict[tuple[int, str, str], str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    main_pipe: str | None = None

    def report(self, bundle: Bundle, where: str, message: str, key: str) -> None:
        """Record one problem of ``bundle``."""
        self.problems.append(
            Problem(f"bundle '{bundle.domain}', {where}", message, bundle.where(key))
        )


def model(state: Translation, ref: str | dict[str, Any] | None, kind: str) -> ResolvedModel:
    """The model a reference means; where a preset or waterfall names an endpoint, that goes to
    the pipeline's model deck (the worker's, once it loads the bundle), never into a pipe's
    settings, which carry generation parameters only (the trust boundary)."""
    resolved = resolve_model(ref, kind, state.deck)
    connection = {k: v for k, v in resolved.settings.items() if k in CONNECTION_SETTINGS}
    if not connection:
        return resolved
    for model in (resolved.model, *resolved.fallbacks):
        if not model.startswith("durapipe/"):  # the embedded models need no endpoint
            state.models[f"deck:{model}"] = ModelEntry(model=model, **connection)
    settings = {k: v for k, v in resolved.settings.items() if k not in CONNECTION_SETTINGS}
    return dataclasses.replace(resolved, settings=settings)
