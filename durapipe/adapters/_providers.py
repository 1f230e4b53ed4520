"""Which model providers a pipeline's model strings name, checked before a run rather than at its
first call (where litellm says "LLM Provider NOT provided" after the steps before it have run).

litellm is not imported for this: ``import litellm`` costs 3.5-4 s on this machine (measured with
``LITELLM_LOCAL_MODEL_COST_MAP=True``), and `durapipe validate` must stay fast. Its providers are
read from its installed source instead, in about 1 ms: the values of its ``LlmProviders`` enum
(``litellm.provider_list``) and the names of ``llms/openai_like/providers.json`` (OpenAI-compatible
providers litellm also routes by prefix). A test pins this set to ``litellm.provider_list`` and the
JSON registry, so a litellm upgrade that moves them fails there, not silently here. When the source
cannot be read the check is skipped rather than guessed.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from pathlib import Path

from durapipe._errors import Problem
from durapipe.spec._deck import ModelEntry, target
from durapipe.spec._flow import suggest
from durapipe.spec._spec import Pipeline

# durapipe's own models: the offline LLM/image model and the embedded extractor.
OWN_PROVIDERS = frozenset({"durapipe"})
_ENUM_VALUE = re.compile(r'^\s+[A-Z0-9_]+\s*=\s*"([^"]+)"', re.MULTILINE)


@functools.cache
def litellm_providers() -> frozenset[str]:
    """The providers litellm routes by a model string's prefix (empty: litellm's source is not
    where this release of it keeps them)."""
    found = importlib.util.find_spec("litellm")  # a top-level package: found, not imported
    if found is None or found.origin is None:
        return frozenset()
    root = Path(found.origin).parent
    try:
        source = (root / "types" / "utils.py").read_text(encoding="utf-8")
        start = source.index("class LlmProviders(")
        end = source.find("\nclass ", start + 1)
        names = set(_ENUM_VALUE.findall(source[start : end if end > 0 else None]))
        registry = root / "llms" / "openai_like" / "providers.json"
        if registry.is_file():
            names |= set(json.loads(registry.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return frozenset()
    return frozenset(names)


def _registered() -> set[str]:
    """Providers this process added to litellm (a Python pipeline file may register a custom
    handler), read only when litellm is already imported."""
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return set()
    names = {str(getattr(p, "value", p)) for p in getattr(litellm, "provider_list", [])}
    names |= {str(e.get("provider")) for e in getattr(litellm, "custom_provider_map", [])}
    return names


def provider_problems(pipeline: Pipeline, source: str = "") -> list[Problem]:
    """A problem for each model string whose provider prefix litellm does not know.

    A deck entry that sets ``custom_llm_provider`` routes its model string itself, so any prefix
    is fine there (and for the pipes that name that string or that alias).
    """
    known = litellm_providers()
    if not known:
        return []
    known = known | OWN_PROVIDERS | _registered()
    routed = {
        entry.model
        for entry in pipeline.models.values()
        if isinstance(entry, ModelEntry) and entry.custom_llm_provider
    }
    problems: list[Problem] = []

    def check(model: str, where: str) -> None:
        if model in pipeline.models or model in routed or "/" not in model:
            return  # an alias (checked where it is declared), routed, or reported by `check`
        provider = model.split("/", 1)[0]
        if provider in known:
            return
        hint = suggest(provider, dict.fromkeys(known))
        problems.append(
            Problem(
                where,
                f"model '{model}' names provider '{provider}', which litellm does not know"
                f"{hint}; a model a gateway serves needs a models: entry with its "
                "custom_llm_provider (see the README's Models section)",
                source,
            )
        )

    for alias, entry in pipeline.models.items():
        if not (isinstance(entry, ModelEntry) and entry.custom_llm_provider):
            check(target(entry), f"model alias '{alias}'")
    if pipeline.default_model:
        check(pipeline.default_model, "default_model")
    for name, pipe in pipeline.pipes.items():
        model = getattr(pipe, "model", None)
        if isinstance(model, str):
            check(model, f"pipe '{name}', field 'model'")
        for fallback in getattr(pipe, "fallbacks", None) or []:
            check(fallback, f"pipe '{name}', field 'fallbacks'")
    return problems
