"""Which model providers a pipeline's model strings name, checked before a run rather than at its
first call (where litellm says "LLM Provider NOT provided" after the steps before it have run).

litellm is not imported for this: ``import litellm`` costs 3.5-4 s on this machine (measured with
``LITELLM_LOCAL_MODEL_COST_MAP=True``), and `durapipe validate` must stay fast. Its providers are
read from its installed source instead, in about 1 ms: the values of its ``LlmProviders`` enum
(``litellm.provider_list``) and the names of ``llms/openai_like/providers.json`` (OpenAI-compatible
providers litellm also routes by prefix). A test pins this set to ``litellm.provider_list`` and the
JSON registry, so a litellm upgrade that moves them fails there, not silently here. When the source
cannot be read the check is skipped rather than guessed.

The same list says which providers a worker's environment configures (`configured_providers`):
a worker calls the models of a provider it holds a key or an endpoint for (see
`durapipe.activities._models`).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from durapipe._errors import Problem
from durapipe.spec._deck import ModelEntry, target
from durapipe.spec._names import suggest
from durapipe.spec._spec import Pipeline

# durapipe's own models: the offline LLM/image model and the embedded extractor.
OWN_PROVIDERS = frozenset({"durapipe"})
_ENUM_VALUE = re.compile(r'^\s+[A-Z0-9_]+\s*=\s*"([^"]+)"', re.MULTILINE)


# Variables litellm reads for a provider besides ``<PROVIDER>_API_KEY`` and ``<PROVIDER>_API_BASE``
# (checked for every provider): a worker holding one of them has been given that provider.
_AWS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_ROLE_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_BEARER_TOKEN_BEDROCK",
)
_VERTEX = ("VERTEXAI_PROJECT", "VERTEX_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS")
PROVIDER_VARIABLES: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_BASE_URL",),
    "text-completion-openai": ("OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL"),
    "azure": ("AZURE_OPENAI_API_KEY",),
    "azure_text": ("AZURE_API_KEY", "AZURE_OPENAI_API_KEY", "AZURE_API_BASE"),
    "ollama_chat": ("OLLAMA_API_KEY", "OLLAMA_API_BASE"),
    "vllm": ("HOSTED_VLLM_API_BASE",),
    "gemini": ("GOOGLE_API_KEY",),
    "vertex_ai": _VERTEX,
    "vertex_ai_beta": _VERTEX,
    "bedrock": _AWS,
    "sagemaker": _AWS,
    "sagemaker_chat": _AWS,
    "together_ai": ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"),
    "huggingface": ("HF_TOKEN",),
    "cohere": ("CO_API_KEY",),
    "cohere_chat": ("COHERE_API_KEY", "CO_API_KEY"),
    "fireworks_ai": ("FIREWORKS_API_KEY",),
    "perplexity": ("PERPLEXITYAI_API_KEY",),
    "replicate": ("REPLICATE_API_TOKEN",),
    "watsonx": ("WATSONX_APIKEY", "WATSONX_TOKEN", "WATSONX_URL"),
    "text-completion-codestral": ("CODESTRAL_API_KEY",),
}


def configured_providers(environ: Mapping[str, str]) -> dict[str, str]:
    """Each provider ``environ`` holds a key or an endpoint for, with the variable that does.

    A provider counts when ``<PROVIDER>_API_KEY`` or ``<PROVIDER>_API_BASE`` is set (``OPENAI_API_KEY``,
    ``OLLAMA_API_BASE``), when litellm's registry of OpenAI-compatible providers names a variable
    of it that is, or one of `PROVIDER_VARIABLES` (``AWS_PROFILE`` for ``bedrock``). A keyless
    provider whose default endpoint is the worker's own host (``ollama``, ``lm_studio``,
    ``hosted_vllm``, ``llamafile``) is in only when its endpoint is set.
    """
    found: dict[str, str] = {}
    registry = _registry_variables()
    for provider in sorted(litellm_providers() | set(PROVIDER_VARIABLES) | set(registry)):
        stem = re.sub(r"[^A-Z0-9]", "_", provider.upper())
        names = (
            f"{stem}_API_KEY",
            f"{stem}_API_BASE",
            *registry.get(provider, ()),
            *PROVIDER_VARIABLES.get(provider, ()),
        )
        variable = next((name for name in names if environ.get(name, "").strip()), None)
        if variable is not None:
            found[provider] = variable
    return found


@functools.cache
def _registry_variables() -> dict[str, tuple[str, ...]]:
    """The key and endpoint variables litellm's OpenAI-compatible registry names per provider."""
    found = importlib.util.find_spec("litellm")
    if found is None or found.origin is None:
        return {}
    registry = Path(found.origin).parent / "llms" / "openai_like" / "providers.json"
    try:
        entries = json.loads(registry.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {
        str(name): tuple(
            str(entry[k]) for k in ("api_key_env", "api_base_env") if isinstance(entry.get(k), str)
        )
        for name, entry in entries.items()
        if isinstance(entry, dict)
    }


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
        hint = suggest(provider, known)
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
