"""A chain of llm steps against the fake provider: step ``s<i>`` calls model ``gpt-s<i>``.

One model per step lets a test script the provider per step (e.g. step 4 answers 401) and count
the provider's calls per step in its ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from durapipe.testing import Call


def chain_spec(
    base_url: str, steps: int = 5, *, timeout: str = "20s", retry: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The pipeline document of pipe ``chain``: topic -> s1 -> ... -> s<steps>."""
    pipes: dict[str, Any] = {
        "chain": {
            "kind": "sequence",
            "inputs": {"topic": "text"},
            "steps": [{"pipe": f"s{i}", "result": f"r{i}"} for i in range(1, steps + 1)],
            "output": f"r{steps}",
        }
    }
    for i in range(1, steps + 1):
        source = "topic" if i == 1 else f"r{i - 1}"
        pipes[f"s{i}"] = {
            "kind": "llm",
            "model": f"openai/gpt-s{i}",
            "inputs": {source: "text"},
            "prompt": f"Step {i}: {{{{ {source} }}}}",
            "timeout": timeout,
            "retry": retry or {"initial_interval": "200ms", "max_attempts": 5},
        }
    # The worker's deck sends every step's model to the fake provider (a pipe may not say where).
    models = {
        f"s{i}": {"model": f"openai/gpt-s{i}", "api_base": base_url} for i in range(1, steps + 1)
    }
    return {"version": 1, "models": models, "pipes": pipes}


def write_chain(path: Path, base_url: str, steps: int = 5, **options: Any) -> Path:
    """Write the chain pipeline to ``path`` (YAML) and return it."""
    path.write_text(yaml.safe_dump(chain_spec(base_url, steps, **options), sort_keys=False))
    return path


def expected_output(topic: str, steps: int = 5) -> str:
    """The chain's output when every step gets the fake provider's default reply."""
    text = topic
    for i in range(1, steps + 1):
        text = f"Fake gpt-s{i} reply to: Step {i}: {text}"
    return text


def paid_by_step(calls: list[Call]) -> dict[str, int]:
    """Paid provider calls per step name (``s1``...), from a ledger."""
    counts: dict[str, int] = {}
    for call in calls:
        if call.paid:
            step = call.model.removeprefix("gpt-")
            counts[step] = counts.get(step, 0) + 1
    return counts
