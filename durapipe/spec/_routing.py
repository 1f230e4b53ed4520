"""Routing and limits: which task queue each leaf runs on, and which provider limits its calls share.

Rules are applied when a run is resolved (client side), so the spec in the run's history names the
concrete queue of every leaf and a worker pool can be added or moved without touching workflow code.

Example (YAML)::

    routing:
      - model: "openai/*"       # every OpenAI model
        queue: llm-openai
      - provider: anthropic
        queue: llm-anthropic
      - kind: tool
        queue: tools

    limits:
      - model: "openai/gpt-4o*"
        concurrency: 8          # in flight at once, across every worker
        rate: 5/s               # started in any one second
        tokens: 30000/m         # used in any one minute
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from durapipe.spec._base import PipeBase
from durapipe.spec._spec import (
    AgentPipe,
    ExtractPipe,
    ImagePipe,
    LimitRule,
    LlmPipe,
    PipeSpec,
    RouteRule,
    _Criteria,
)


def provider_of(model: str) -> str:
    """The provider part of a litellm model string (``openai`` for ``openai/gpt-4o-mini``)."""
    return model.split("/", 1)[0] if "/" in model else model


def matches(rule: _Criteria, pipe: PipeSpec) -> bool:
    """Whether every criterion of ``rule`` holds for the (resolved) ``pipe``.

    Provider and model criteria look at the pipe's model (llm, agent, extract and image pipes),
    not at its fallbacks: a leaf runs on one queue, whichever model of its waterfall answers.
    """
    return request_matches(rule, pipe.kind, request_models(pipe)[0])


def route(pipe: PipeSpec, rules: Sequence[RouteRule]) -> str | None:
    """The task queue of a leaf: its own ``queue``, else the first matching rule's, else None."""
    if pipe.queue is not None:
        return pipe.queue
    return next((rule.queue for rule in rules if matches(rule, pipe)), None)


def limits_for(pipe: PipeBase, rules: Sequence[LimitRule]) -> list[LimitRule]:
    """The limits the calls of ``pipe`` may take: every rule that limits one of its requests.

    A call carries them all; each request takes the ones of its own model (`request_limits`), so a
    fallback's requests count against its own provider's limits, never against the primary's.
    """
    return [rule for rule in rules if limit_applies(rule, pipe)]


def limit_applies(rule: LimitRule, pipe: PipeBase) -> bool:
    """Whether ``rule`` limits some request of ``pipe``: to its model or to one of its fallbacks."""
    return any(request_matches(rule, pipe.kind, model) for model in request_models(pipe))


def request_limits(rules: Sequence[LimitRule], kind: str, model: str | None) -> list[LimitRule]:
    """The limits one request takes (of a ``kind`` pipe, to ``model``): every match, one per name."""
    found: dict[str, LimitRule] = {}
    for rule in rules:
        if request_matches(rule, kind, model):
            found.setdefault(rule.bucket, rule)
    return list(found.values())


def request_matches(rule: _Criteria, kind: str, model: str | None) -> bool:
    """Whether every criterion of ``rule`` holds for one request of a ``kind`` pipe to ``model``.

    A request with no model (a tool call) matches only rules without provider and model criteria.
    """
    if rule.kind is not None and rule.kind != kind:
        return False
    if rule.provider is None and rule.model is None:
        return True
    if model is None:
        return False
    if rule.provider is not None and rule.provider != provider_of(model):
        return False
    return rule.model is None or fnmatch.fnmatchcase(model, rule.model)


def request_models(pipe: PipeBase) -> list[str | None]:
    """The models the requests of a (resolved) ``pipe`` may go to: its model, then its fallbacks.

    ``[None]`` for a pipe whose calls name no model (a tool, a registered kind without one).
    """
    model = pipe.model if isinstance(pipe, LlmPipe | AgentPipe | ExtractPipe | ImagePipe) else None
    fallbacks = pipe.fallbacks if isinstance(pipe, LlmPipe | ExtractPipe | ImagePipe) else []
    return [model, *fallbacks] if model is not None else [None]
