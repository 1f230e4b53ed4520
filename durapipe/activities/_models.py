"""Which models a worker calls, decided by its operator, checked before any request.

A run's spec names its models, and any client of the namespace can start a run, so a spec must not
choose a provider or an endpoint the worker's operator never configured (``ollama/llama3`` sends
``POST /api/generate`` to the worker's own ``localhost:11434``). `worker_models` builds what a
worker allows when it starts, from what its operator told it; `check_models` refuses anything
else in the activity, before the checkpoint lookup and before any request.

Providers the worker holds a key or an endpoint for are allowed whole (``OPENAI_API_KEY`` allows
``openai/*``): the request then goes where the operator's environment points, with the operator's
key, to a provider the operator chose, so a run widens nothing its spec could not already do
within that provider (pick a prompt, spend the key; the namespace's authorisation bounds who may).
Runs started from other files keep working on a worker with keys. ``DURAPIPE_MODELS``, when set,
is the operator's own list and replaces that guess, so it can narrow a worker to named models.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe._settings import _environ_data, settings
from durapipe.adapters._providers import OWN_PROVIDERS, configured_providers
from durapipe.spec import LOCAL_EXTRACTOR, OFFLINE_MODEL, Pipeline
from durapipe.spec._allowed import named_models, parse_patterns
from durapipe.spec._deck import MODELS_VARIABLE, OWN_MODELS, AllowedModels, ModelDeck, ModelEntry
from durapipe.spec._resolve import resolve
from durapipe.spec._routing import provider_of, request_models

# What a model is for, per kind, in a refusal: "the OCR model 'mistral/...'".
_WHAT = {"llm": "model", "agent": "agent's model", "extract": "OCR model", "image": "image model"}


def worker_models(
    pipelines: Iterable[Pipeline | None] = (),
    deck: ModelDeck | None = None,
    environ: Mapping[str, str] | None = None,
) -> AllowedModels:
    """The models a worker (or a local run) calls: what its operator configured.

    Those are durapipe's own models, the models ``pipelines`` (the files it loaded) and ``deck``
    name, ``DURAPIPE_DEFAULT_MODEL``, the models of the MTHDS deck ``DURAPIPE_MTHDS_DECK`` names,
    and either the patterns of ``DURAPIPE_MODELS`` or, when it is unset, every provider
    ``environ`` (default: this process's environment) holds a key or an endpoint for.

    Raises:
        ConfigError: a ``DURAPIPE_*`` setting is not valid, or the MTHDS deck cannot be read.
    """
    configured = settings()
    named = {OFFLINE_MODEL, LOCAL_EXTRACTOR}
    for pipeline in pipelines:
        if pipeline is not None:
            named |= named_models(pipeline)
    if deck is not None:
        named |= deck.models()
    if configured.default_model and configured.default_model.strip():
        named.add(configured.default_model.strip())
    if configured.mthds_deck:
        from durapipe.adapters.mthds import load_deck  # only a worker serving MTHDS methods

        named |= load_deck().models()
    patterns = {OWN_MODELS: "durapipe's own"}
    if configured.models is not None:
        patterns |= dict.fromkeys(parse_patterns(configured.models), MODELS_VARIABLE)
    else:
        found = configured_providers(environ) if environ is not None else _environment_providers()
        patterns |= {f"{provider}/*": variable for provider, variable in found.items()}
    return AllowedModels(named, patterns)


_last: tuple[dict[Any, Any], dict[str, str]] | None = None
"""The environment `_environment_providers` last read, and the providers it configured."""


def _environment_providers() -> dict[str, str]:
    """`configured_providers` of this process's environment, read again only when it changed:
    each local run builds its allowance, and the ~130 providers' variables take 0.6 ms to read."""
    global _last
    environ = _environ_data()
    if _last is not None and _last[0] == environ:
        return _last[1]
    found = configured_providers(os.environ)
    _last = (dict(environ), found)
    return found


def check_models(
    kind: str, pipe_name: str, model: str, fallbacks: Iterable[str], deck: ModelDeck | None
) -> None:
    """Refuse a call whose model or fallbacks this worker does not call (none sent at all).

    Raises:
        ApplicationError: non-retryable ``durapipe.ModelNotAllowed`` naming the pipe and field.
    """
    allowed = deck.allowed if deck is not None else None
    if allowed is None:
        return  # a body called as a library function, outside a worker or a local run
    if not allowed.allows(model):
        refused = allowed.refusal(pipe_name, "model", _WHAT.get(kind, "model"), model)
        raise ApplicationError(refused, type=ErrorType.MODEL_NOT_ALLOWED, non_retryable=True)
    for fallback in fallbacks:
        if not allowed.allows(fallback):
            refused = allowed.refusal(pipe_name, "fallbacks", "fallback model", fallback)
            raise ApplicationError(refused, type=ErrorType.MODEL_NOT_ALLOWED, non_retryable=True)


def unkeyed_providers(
    pipeline: Pipeline, queues: Iterable[str]
) -> dict[str, tuple[list[str], list[str]]]:
    """Each provider that pipes of ``pipeline`` which may run on ``queues`` call while this
    process's environment lacks its key: ``{provider: (variables, pipes)}``.

    A pipe's leaf runs on a served queue when its route (its ``queue:`` or a routing rule) names
    one, or, unrouted, when a served queue is one no route names (a run's own queue): a worker of
    a routed pool is not told about the keys of other pools. Models of a deck entry that sets
    an endpoint (``api_base``: a gateway, the fake provider) are left out, since what such an
    endpoint asks for is not litellm's to say, and so are durapipe's own.
    """
    from durapipe.adapters._litellm import missing_keys  # imports litellm: a worker's start only

    served = set(queues)
    routed = {rule.queue for rule in pipeline.routing}
    routed |= {p.queue for p in pipeline.pipes.values() if p.queue is not None}
    runs_here = bool(served - routed)
    endpoints = {
        e.model for e in pipeline.models.values() if isinstance(e, ModelEntry) and e.connection()
    }
    found: dict[str, tuple[list[str], list[str]]] = {}
    for name in pipeline.pipes:
        pipe = resolve(pipeline, name, fallback_model=settings().default_model).pipes[name]
        if not (pipe.queue in served if pipe.queue is not None else runs_here):
            continue
        for model in request_models(pipe):
            if model is None or model in endpoints or provider_of(model) in OWN_PROVIDERS:
                continue
            provider, missing = missing_keys(model)
            if missing:
                pipes = found.setdefault(provider, (missing, []))[1]
                pipes += [name] if name not in pipes else []
    return found
