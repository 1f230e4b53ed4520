"""Routing: which task queue each leaf runs on, from the pipeline's ``routing`` rules.

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
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from durapipe.pipes._spec import LlmPipe, PipeSpec, RouteRule


def provider_of(model: str) -> str:
    """The provider part of a litellm model string (``openai`` for ``openai/gpt-4o-mini``)."""
    return model.split("/", 1)[0] if "/" in model else model


def matches(rule: RouteRule, pipe: PipeSpec) -> bool:
    """Whether every criterion of ``rule`` holds for the (resolved) leaf ``pipe``."""
    if rule.kind is not None and rule.kind != pipe.kind:
        return False
    if rule.provider is None and rule.model is None:
        return True
    model = pipe.model if isinstance(pipe, LlmPipe) else None
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
