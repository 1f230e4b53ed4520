"""The trust boundary of `durapipe serve`: what a client-sent method may use.

A method sent over the protocol is pipeline logic. It may name only the models of the worker's deck
and only the tool functions registered on the worker; it may not bring an endpoint, a header, a
credential or a callback in a pipe's settings. This module is the one place that decides it, on the
resolved spec (aliases replaced by model strings, defaults filled), before anything is imported or
sent to Temporal. The worker's model deck (issue 15) plugs in here as `Capabilities.models`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from durapipe.spec import LOCAL_EXTRACTOR, OFFLINE_MODEL, Pipeline, ToolPipe
from durapipe.spec._deck import GENERATION_SETTINGS, generation_setting, target

# Settings a client may set: generation parameters only, the deck's list for each kind
# (`durapipe.spec._deck.GENERATION_SETTINGS`, the one copy). Anything else that litellm accepts
# (api_base, base_url, extra_headers, custom_llm_provider, callbacks, ...) could add an endpoint,
# a header or a callback, which only a worker may do; an allowlist keeps unknown keys out too.
CLIENT_SETTINGS: Final = frozenset().union(*GENERATION_SETTINGS.values())
# The spec fields that name models: a pipe's own model and any fallbacks tried after it.
_MODEL_FIELDS: Final = ("model", "fallbacks", "fallback_models", "models")


@dataclass(frozen=True)
class Capabilities:
    """What the workers behind a `durapipe serve` can do.

    Attributes:
        models: the model strings a client's pipes may resolve to (the worker's deck), each with
            its category (``llm``, ``extract``, ``img_gen``, ``search``).
        functions: the tool functions registered on the workers, by ``module:name`` reference.
        deck_settings: the settings of the deck's presets, as (name, JSON value): a pipe may
            carry exactly these besides generation parameters (the deck, not the client, put them
            there).
    """

    models: dict[str, str] = field(
        default_factory=lambda: {OFFLINE_MODEL: "llm", LOCAL_EXTRACTOR: "extract"}
    )
    functions: frozenset[str] = frozenset()
    deck_settings: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def of(
        cls, pipeline: Pipeline | None, models: Iterable[str] = (), mthds_deck: Any = None
    ) -> Capabilities:
        """The capabilities of workers started on ``pipeline``: its tools, its models, the defaults.

        Args:
            pipeline: the file the workers load (their tools and model aliases), or None.
            models: more model strings the workers' environment can reach (``--model``).
            mthds_deck: the MTHDS model deck (`durapipe.adapters.mthds.ModelDeck`): every model
                its aliases, presets, waterfalls, handles and defaults name.
        """
        deck = dict(cls().models)
        functions: set[str] = set()
        for name in models:
            deck.setdefault(name, "llm")
        if mthds_deck is not None:
            for kind, model in mthds_deck.default.items():
                deck.setdefault(model, _DECK_KINDS.get(kind, "llm"))
            named = [
                *mthds_deck.aliases.values(),
                *mthds_deck.handles.values(),
                *(str(p.get("model", "")) for p in mthds_deck.presets.values()),
                *(m for waterfall in mthds_deck.waterfalls.values() for m in _chain(waterfall)),
            ]
            for model in named:
                if model and not model.startswith("@"):
                    deck.setdefault(model, "llm")
        if pipeline is not None:
            # An alias stands for a model string, or for a deck entry with its connection.
            aliases = {alias: target(entry) for alias, entry in pipeline.models.items()}
            for model in aliases.values():
                deck.setdefault(model, "llm")
            if pipeline.default_model:
                deck.setdefault(aliases.get(pipeline.default_model, pipeline.default_model), "llm")
            for pipe in pipeline.pipes.values():
                category = _CATEGORIES.get(pipe.kind, "llm")
                for model in _models_of(pipe):
                    deck.setdefault(aliases.get(model, model), category)
                if isinstance(pipe, ToolPipe):
                    functions.add(pipe.function)
        # The settings of the deck's presets and of the workers' own pipes (an endpoint, say) are
        # the operator's: a pipe may carry exactly those values, which no client can have chosen.
        owned: list[dict[str, Any]] = []
        if mthds_deck is not None:
            owned += list(mthds_deck.presets.values())
            owned += [
                {k: v for k, v in w.items() if k != "models"}
                for w in mthds_deck.waterfalls.values()
                if isinstance(w, dict)
            ]
        if pipeline is not None:  # the workers' own pipes: their settings are the operator's too
            owned += [getattr(pipe, "settings", None) or {} for pipe in pipeline.pipes.values()]
        deck_settings = {
            (key, json.dumps(value, sort_keys=True))
            for settings in owned
            for key, value in settings.items()
            if key != "model"
        }
        return cls(
            models=deck, functions=frozenset(functions), deck_settings=frozenset(deck_settings)
        )


_DECK_KINDS: Final = {"image": "img_gen", "extract": "extract", "search": "search", "llm": "llm"}
_CATEGORIES: Final = {"llm": "llm", "agent": "llm", "extract": "extract", "image": "img_gen"}


def _chain(waterfall: Any) -> list[str]:
    """The models of a deck waterfall: ``{"models": [...], <settings>}`` or a plain list."""
    models = waterfall.get("models", []) if isinstance(waterfall, dict) else waterfall
    return [str(m) for m in models] if isinstance(models, list | tuple) else []


def _models_of(pipe: Any) -> list[str]:
    found: list[str] = []
    for name in _MODEL_FIELDS:
        value = getattr(pipe, name, None)
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list | tuple):
            found.extend(v for v in value if isinstance(v, str))
    return found


def trust_problems(spec: Pipeline, capabilities: Capabilities) -> list[tuple[str, str, str]]:
    """Every way the resolved ``spec`` oversteps ``capabilities``, as (pipe, field, sentence).

    Nothing is imported and nothing is called: a function is checked by its reference only.
    """
    problems: list[tuple[str, str, str]] = []
    deck = capabilities.models
    for name, pipe in spec.pipes.items():
        for model in _models_of(pipe):
            if model not in deck:
                offered = ", ".join(sorted(deck)) or "none"
                problems.append(
                    (
                        name,
                        "model",
                        f"pipe '{name}' names the model '{model}', which is not in this runner's "
                        f"model deck; use one of: {offered}",
                    )
                )
        if isinstance(pipe, ToolPipe) and pipe.function not in capabilities.functions:
            registered = ", ".join(sorted(capabilities.functions)) or "none"
            problems.append(
                (
                    name,
                    "function",
                    f"pipe '{name}' calls the function '{pipe.function}', which is not registered "
                    f"on this runner's workers (registered: {registered})",
                )
            )
        settings = getattr(pipe, "settings", None) or {}
        for key in sorted(settings):
            from_deck = (
                key,
                json.dumps(settings[key], sort_keys=True),
            ) in capabilities.deck_settings
            if not generation_setting(pipe.kind, key) and not from_deck:
                allowed = ", ".join(sorted(GENERATION_SETTINGS.get(pipe.kind, ()))) or "none"
                problems.append(
                    (
                        name,
                        f"settings.{key}",
                        f"pipe '{name}' sets '{key}', which a client may not set (endpoints, "
                        "headers, keys and callbacks belong to the worker); allowed settings of "
                        f"a {pipe.kind} pipe: {allowed}",
                    )
                )
    return problems


def bundle_function_problems(
    bundles: dict[str, bytes], capabilities: Capabilities
) -> list[tuple[str, str, str]]:
    """Unregistered functions named by ``PipeFunc`` pipes of raw `.mthds` files, as (pipe, field, sentence).

    Checked on the TOML text, before the bundle loader runs: the loader imports every function a
    ``PipeFunc`` names to check it exists, and a client must not make this server import a module.
    A file that does not parse is left to the loader, which reports it with its line.
    """
    from durapipe.adapters.mthds._bundle import read_toml  # the MTHDS adapter loads on use

    problems: list[tuple[str, str, str]] = []
    registered = ", ".join(sorted(capabilities.functions)) or "none"
    for path, data in bundles.items():
        try:
            document = read_toml(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            continue
        pipes = document.get("pipe")
        if not isinstance(pipes, dict):
            continue
        for code, pipe in pipes.items():
            if not isinstance(pipe, dict) or pipe.get("type") != "PipeFunc":
                continue
            name = pipe.get("function_name")
            module, _, attribute = str(name).rpartition(".")
            if f"{module}:{attribute}" not in capabilities.functions:
                problems.append(
                    (
                        str(code),
                        "function_name",
                        f"pipe '{code}' of {path} calls the function '{name}', which is not "
                        f"registered on this runner's workers (registered: {registered})",
                    )
                )
    return problems


def unregistered(bundles: dict[str, bytes], capabilities: Capabilities) -> set[str]:
    """The dotted names of the unregistered functions ``PipeFunc`` pipes of raw bundles name."""
    from durapipe.adapters.mthds._bundle import read_toml

    names: set[str] = set()
    for data in bundles.values():
        try:
            pipes = read_toml(data.decode("utf-8")).get("pipe")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            continue
        for pipe in pipes.values() if isinstance(pipes, dict) else ():
            if isinstance(pipe, dict) and pipe.get("type") == "PipeFunc":
                module, _, attribute = str(pipe.get("function_name")).rpartition(".")
                if f"{module}:{attribute}" not in capabilities.functions:
                    names.add(str(pipe.get("function_name")))
    return names
