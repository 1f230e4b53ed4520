"""MTHDS model references (``@alias``, ``$preset``, ``~waterfall``, handles, inline settings)
resolved through a model deck.

The deck is the worker's list of models: a bundle names a reference, the deck says which model
string and settings it means. All resolution goes through `resolve_model`, so pointing it at another
deck (the worker-side deck of the trust boundary) is one argument. The default deck sends every
reference to the offline model, so any bundle runs on a fresh machine with no keys.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durapipe._errors import ConfigError
from durapipe._settings import settings
from durapipe.spec import LOCAL_EXTRACTOR, OFFLINE_MODEL

DECK_ENV = "DURAPIPE_MTHDS_DECK"
# Inline LLM settings that become litellm arguments; the others are prompt-formatting hints for
# Pipelex (prompting_target, image_detail) or documentation (description).
_LLM_SETTINGS = ("temperature", "max_tokens", "reasoning_effort")
_IMAGE_SETTINGS = ("quality",)


@dataclass(frozen=True)
class ModelDeck:
    """Named models a bundle may refer to.

    Attributes:
        aliases: ``@name`` -> model string.
        presets: ``$name`` -> ``{"model": ..., <settings>}``.
        waterfalls: ``~name`` -> ``{"models": [...], <settings>}``: model strings tried in order
            (in a deck file, a plain list of model strings works too).
        handles: a bare handle (``claude-4.5-sonnet``) -> model string.
        default: the model for any reference the deck does not name (per kind: ``llm``, ``image``,
            ``extract``, ``search``).
    """

    aliases: dict[str, str] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    waterfalls: dict[str, dict[str, Any]] = field(default_factory=dict)
    handles: dict[str, str] = field(default_factory=dict)
    default: dict[str, str] = field(
        default_factory=lambda: {
            "llm": OFFLINE_MODEL,
            "image": OFFLINE_MODEL,
            "search": OFFLINE_MODEL,
            "extract": LOCAL_EXTRACTOR,
        }
    )

    def models(self) -> set[str]:
        """Every model string the deck names (its aliases, presets, waterfalls, handles' targets
        and defaults): what a worker with this deck calls."""
        named = [
            *self.default.values(),
            *self.aliases.values(),
            *self.handles.values(),  # a handle's key is what a bundle pins, not what is called
            *(str(preset.get("model", "")) for preset in self.presets.values()),
        ]
        for waterfall in self.waterfalls.values():
            chain = waterfall.get("models", [])
            named += [str(m) for m in chain] if isinstance(chain, list | tuple) else []
        return {m for m in named if m and not m.startswith(("@", "$", "~"))}


@dataclass(frozen=True)
class ResolvedModel:
    """What a model reference means: the model string, its settings, the fallbacks after it."""

    model: str
    settings: dict[str, Any] = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()


def load_deck(path: str | Path | None = None) -> ModelDeck:
    """The deck in TOML file ``path`` (or ``$DURAPIPE_MTHDS_DECK``); the offline deck without one.

    The file has tables ``[aliases]``, ``[presets.<name>]``, ``[waterfalls]``, ``[handles]`` and
    ``[default]``, keyed without the prefix (``fast = "openai/gpt-4o-mini"``).

    Raises:
        ConfigError: the file is missing or not a deck.
    """
    path = path or settings().mthds_deck
    if not path:
        return ModelDeck()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:  # its reason, not Python's "[Errno 2] ...: 'path'" again
        raise ConfigError(f"model deck '{path}' cannot be read: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"model deck '{path}' cannot be read: {err}") from None
    base = ModelDeck()
    try:
        return ModelDeck(
            aliases=dict(data.get("aliases", {})),
            presets={k: dict(v) for k, v in data.get("presets", {}).items()},
            waterfalls={
                k: dict(v) if isinstance(v, dict) else {"models": list(v)}
                for k, v in data.get("waterfalls", {}).items()
            },
            handles=dict(data.get("handles", {})),
            default={**base.default, **data.get("default", {})},
        )
    except (TypeError, ValueError) as err:
        raise ConfigError(f"model deck '{path}' is not a deck: {err}") from None


def resolve_model(ref: str | dict[str, Any] | None, kind: str, deck: ModelDeck) -> ResolvedModel:
    """The model ``ref`` names for a pipe of ``kind`` (``llm``, ``image``, ``extract``, ``search``).

    A reference the deck does not name resolves to the deck's default for the kind, so a bundle
    written for Pipelex's presets runs as is; a deployment maps the names it cares about.
    """
    default = deck.default.get(kind, OFFLINE_MODEL)
    if ref is None:
        return ResolvedModel(default)
    if isinstance(ref, dict):
        base = resolve_model(str(ref.get("model", "")), kind, deck)
        allowed = _IMAGE_SETTINGS if kind == "image" else _LLM_SETTINGS if kind == "llm" else ()
        settings = {k: v for k, v in ref.items() if k in allowed and v not in (None, "auto")}
        return ResolvedModel(base.model, {**base.settings, **settings}, base.fallbacks)
    if ref.startswith("@"):
        return ResolvedModel(deck.aliases.get(ref[1:], default))
    if ref.startswith("$"):
        preset = deck.presets.get(ref[1:])
        if preset is None:
            return ResolvedModel(default)
        model = str(preset.get("model", default))
        if model.startswith("@"):
            model = deck.aliases.get(model[1:], default)
        return ResolvedModel(model, {k: v for k, v in preset.items() if k != "model"})
    if ref.startswith("~"):
        waterfall = deck.waterfalls.get(ref[1:], {})
        chain = [str(m) for m in waterfall.get("models", [])] or [default]
        settings = {k: v for k, v in waterfall.items() if k != "models"}
        return ResolvedModel(chain[0], settings, tuple(chain[1:]))
    if ref in deck.handles:
        # Checked first: a deck can redirect even a provider model a bundle pins (`ollama/...`).
        return ResolvedModel(deck.handles[ref])
    if "/" in ref:
        return ResolvedModel(ref)
    return ResolvedModel(default)
