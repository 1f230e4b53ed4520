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

from durapipe.spec._spec import AgentPipe, LimitRule, LlmPipe, PipeSpec, RouteRule, _Criteria


def provider_of(model: str) -> str:
    """The provider part of a litellm model string (``openai`` for ``openai/gpt-4o-mini``)."""
    return model.split("/", 1)[0] if "/" in model else model


def matches(rule: _Criteria, pipe: PipeSpec) -> bool:
    """Whether every criterion of ``rule`` holds for the (resolved) ``pipe``.

    Provider and model criteria look at the chat model of llm and agent pipes.
    """
    if rule.kind is not None and rule.kind != pipe.kind:
        return False
    if rule.provider is None and rule.model is None:
        return True
    model = pipe.model if isinstance(pipe, LlmPipe | AgentPipe) else None
    if model is None:
        return False
    if rule.provider is not None and rule.provider != provider_of(model):
        return False
    return rule.model is None or fnmatch.fnmatchcase(model, rule.model)


def route(pipe: PipeSpec, rules: Sequence[RouteRule]) -> str | None:
    """The task queue of a leaf: its own ``queue``, else the first matching rule's, else None."""
    if pipe.queue is not None:
        return pipe.queue
    return next((rule.queue for rule in rules if matches(rule, pipe)), None)


def limits_for(pipe: PipeSpec, rules: Sequence[LimitRule]) -> list[LimitRule]:
    """The limits the calls of ``pipe`` share: every matching rule, one per name."""
    found: dict[str, LimitRule] = {}
    for rule in rules:
        if matches(rule, pipe):
            found.setdefault(rule.bucket, rule)
    return list(found.values())
