"""Which model strings a worker calls: the models it was told about, nothing a run brings.

A run's spec arrives as workflow input, which any client of the namespace can send, and names its
models itself. Left unchecked, ``model: ollama/llama3`` in a raw input makes a worker send
``POST /api/generate`` to ``localhost:11434``: a provider, and an endpoint on the worker's own host,
its operator never configured. So the activity asks `AllowedModels.allows` before any request (see
`durapipe.activities._settings.check_models`); a model it does not allow fails the step once,
naming the pipe and field.

What a worker allows is built where it starts (`durapipe.activities.worker_models`) from what its
operator configured: the models its pipeline files and model deck name, durapipe's own models, the
default model, ``DURAPIPE_MODELS`` patterns, and the providers its environment holds a key or an
endpoint for. `AllowedModels` (in `durapipe.spec._deck`, beside the connections it goes with) is the pure
check and its sentences; this module reads what a pipeline names.
"""

from __future__ import annotations

from durapipe.spec._deck import ModelEntry, target
from durapipe.spec._spec import Pipeline


def named_models(pipeline: Pipeline) -> set[str]:
    """The model strings ``pipeline`` names: its deck's entries, its default, its pipes' models and
    fallbacks (an alias counts as the model it stands for)."""
    aliases = {alias: target(entry) for alias, entry in pipeline.models.items()}
    found = set(aliases.values())
    found |= {e.model for e in pipeline.models.values() if isinstance(e, ModelEntry)}
    if pipeline.default_model:
        found.add(aliases.get(pipeline.default_model, pipeline.default_model))
    for pipe in pipeline.pipes.values():
        model = getattr(pipe, "model", None)
        named = [model] if isinstance(model, str) else []
        named += [m for m in getattr(pipe, "fallbacks", None) or [] if isinstance(m, str)]
        found |= {aliases.get(m, m) for m in named}
    return found


def parse_patterns(text: str) -> list[str]:
    """The patterns of a ``DURAPIPE_MODELS`` value: comma- or space-separated, blanks dropped."""
    return [p for p in text.replace(",", " ").split() if p]
