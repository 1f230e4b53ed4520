"""The model deck: which settings a pipe may carry, and which only a worker's configuration may set.

A pipe's spec travels as workflow input, and any client of the namespace can start a workflow. So
what a spec says must never widen what a worker does: a pipe's ``settings`` hold only generation
parameters (``temperature``, ``max_tokens``, ...), while everything that decides where a request
goes and what it carries (``api_base``, ``headers``, ``custom_llm_provider``, callbacks, ...) comes
from the worker's own configuration: its environment (``OPENAI_API_BASE``, keys) and the
``models:`` deck of the pipeline files it loaded::

    models:
      fast: openai/gpt-4o-mini          # an alias
      gateway:                          # an alias with connection settings (worker-side only)
        model: openai/gpt-4o-mini
        api_base: https://my-gateway/v1

The check runs twice: `settings_problems` at validation (one sentence naming the pipe and field),
and `refused_settings` again in the activity, because a workflow input need not come from a
validated file. `durapipe serve`'s trust check (`durapipe.serve._trust`) asks the same question,
`generation_setting`, of the methods clients send: this module holds the trust boundary's one list
of what a pipe may carry.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Generation parameters a pipe may set, per kind: they change what the model writes, never where
# the request goes or what credentials and headers it carries.
_CHAT = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "stop",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "reasoning_effort",
        "parallel_tool_calls",
        "tool_choice",
        "verbosity",
        "user",
    }
)
GENERATION_SETTINGS: dict[str, frozenset[str]] = {
    "llm": _CHAT,
    "agent": _CHAT,
    "image": frozenset(
        {
            "quality",
            "style",
            "background",
            "output_format",
            "output_compression",
            "user",
            "seed",
            "raw",
        }
    ),
    "extract": frozenset({"pages", "include_image_base64", "image_limit", "image_min_size"}),
}
# Options of the embedded offline model (``offline_tool_rounds``, ...): read only by that model.
OFFLINE_PREFIX = "offline_"
# What a deck entry may set besides its model: where requests go and what headers they carry.
CONNECTION_SETTINGS = frozenset(
    {
        "api_base",
        "base_url",
        "api_version",
        "organization",
        "custom_llm_provider",
        "extra_headers",
        "headers",
    }
)
_CREDENTIAL_NAME = re.compile(r"key|token|secret|password|credential", re.IGNORECASE)
# Credentials stay in the worker's environment even in a deck: a pipeline file is read by clients.
CREDENTIAL_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})


class ModelEntry(BaseModel):
    """A deck entry: a model string and the connection settings a worker uses for it.

    Attributes:
        model: the litellm model string (``openai/gpt-4o-mini``).
        api_base: the provider's endpoint (``base_url`` is litellm's other name for it).
        extra_headers: headers sent with every request to this model (no credentials).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    api_base: str | None = None
    base_url: str | None = None
    api_version: str | None = None
    organization: str | None = None
    custom_llm_provider: str | None = None
    extra_headers: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    def connection(self) -> dict[str, Any]:
        """The connection settings this entry sets (unset ones left out)."""
        return self.model_dump(exclude={"model"}, exclude_none=True)


ModelRef = str | ModelEntry


def target(entry: ModelRef) -> str:
    """The model string an alias stands for."""
    return entry if isinstance(entry, str) else entry.model


def generation_setting(kind: str, name: str) -> bool:
    """True when a pipe of ``kind`` may carry the setting ``name`` (it only shapes the answer)."""
    return name in GENERATION_SETTINGS.get(kind, frozenset()) or name.startswith(OFFLINE_PREFIX)


def settings_problems(kind: str, settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(setting, sentence)`` for each setting a pipe of ``kind`` may not carry."""
    allowed = GENERATION_SETTINGS.get(kind, frozenset())
    problems = []
    for name in sorted(settings):
        if name == "n" and settings[name] != 1 and generation_setting(kind, name):
            # A step reads one answer; the provider bills every one of them (n: 1000000 is a
            # million answers per call, none of them read and none of them in a budget's estimate).
            why = (
                f"'n' asks the provider for {settings[name]!r} answers to each call, of which the "
                "step reads the first, and each is paid for; leave it out (or set it to 1)"
            )
            problems.append((name, why))
            continue
        if generation_setting(kind, name):
            continue
        if _CREDENTIAL_NAME.search(name):
            why = (
                "credentials must not be in a pipe (settings are stored in run history); "
                "set the provider's key in the worker's environment or --secrets-file"
            )
        elif name in CONNECTION_SETTINGS:
            why = (
                f"'{name}' is a connection setting, which only a worker's configuration may set "
                "(its models: deck or environment), never a pipe sent in a run"
            )
        else:
            known = ", ".join(sorted(allowed)) or "none"
            why = f"'{name}' is not a generation setting a {kind} pipe may set (allowed: {known})"
        problems.append((name, why))
    return problems


def refused_settings(kind: str, pipe_name: str, settings: Mapping[str, Any]) -> str | None:
    """One sentence refusing the first setting a pipe may not carry, or None when all are allowed."""
    problems = settings_problems(kind, settings)
    if not problems:
        return None
    name, why = problems[0]
    return f"pipe '{pipe_name}', field 'settings.{name}': {why}"


def entry_problems(entry: ModelEntry) -> list[tuple[str, str]]:
    """``(field, sentence)`` for credentials written into a deck entry's headers."""
    problems = []
    for field in ("extra_headers", "headers"):
        for header in sorted(getattr(entry, field) or {}):
            if header.lower() in CREDENTIAL_HEADERS:
                problems.append(
                    (
                        f"{field}.{header}",
                        "credential headers must not be in a pipeline file (clients read it); "
                        "set the provider's key in the worker's environment or --secrets-file",
                    )
                )
    return problems


# durapipe's own models (the offline model, the embedded extractor): in-process, no request.
OWN_MODELS = "durapipe/*"
# The variable an operator sets to allow more models (patterns, comma-separated).
MODELS_VARIABLE = "DURAPIPE_MODELS"
# Model strings remembered per allowance: enough for any real deck; past it the memo starts again
# (model strings come from runs, so a client sending endless new ones must not grow a worker).
_REMEMBERED = 4096
# Named models listed in the worker's one line before "and N more".
_LISTED = 4


class AllowedModels:
    """The model strings a worker calls.

    Args:
        named: exact model strings (its pipelines' models and deck entries, the default model).
        patterns: ``fnmatch`` patterns (``openai/*``, ``anthropic/claude-*``, ``*``), each with why
            it is allowed (``DURAPIPE_MODELS``, ``OPENAI_API_KEY``), for the worker's one line.

    The answer for a model string is kept, so the check of a call is one dictionary lookup.

    Example:
        >>> allowed = AllowedModels({"openai/gpt-4o-mini"}, {"anthropic/*": "ANTHROPIC_API_KEY"})
        >>> allowed.allows("anthropic/claude-sonnet-4-5"), allowed.allows("ollama/llama3")
        (True, False)
    """

    def __init__(
        self, named: Iterable[str] = (), patterns: Mapping[str, str] | None = None
    ) -> None:
        self.named = frozenset(named)
        self.patterns = dict(patterns or {})
        self._answers: dict[str, bool] = {}

    def allows(self, model: str) -> bool:
        """Whether this worker calls ``model``."""
        answer = self._answers.get(model)
        if answer is None:
            answer = model in self.named or any(
                fnmatch.fnmatchcase(model, pattern) for pattern in self.patterns
            )
            if len(self._answers) >= _REMEMBERED:
                self._answers.clear()
            self._answers[model] = answer
        return answer

    def refusal(self, pipe_name: str, field: str, what: str, model: str) -> str:
        """One sentence refusing ``model`` in ``field`` of pipe ``pipe_name``.

        ``what`` says what the model is for (``model``, ``fallback model``, ``OCR model``, ...).
        """
        provider = model.split("/", 1)[0] if "/" in model else ""
        unknown = (
            f" and configured no key or endpoint for provider '{provider}'" if provider else ""
        )
        return (
            f"pipe '{pipe_name}', field '{field}': this worker does not call the {what} "
            f"'{model}' (its operator named no such model{unknown}); the operator allows it by "
            "naming it in a pipeline file the worker loads, by giving the worker the provider's "
            f"key or endpoint, or with {MODELS_VARIABLE}='{provider + '/*' if provider else model}'"
        )

    def describe(self) -> str:
        """What this worker calls, in one line (``durapipe worker`` prints it)."""
        if "*" in self.patterns:
            return f"models: any ({self.patterns['*']})"
        parts = [f"{pattern} ({why})" for pattern, why in sorted(self.patterns.items())]
        named = sorted(m for m in self.named if not self._matched(m))
        if named:
            more = len(named) - _LISTED
            listed = ", ".join(named[:_LISTED]) + (f" and {more} more" if more > 0 else "")
            parts.append(f"{listed} (named by its pipelines)")
        return (
            f"models: {'; '.join(parts)}; others are refused "
            f"({MODELS_VARIABLE} sets the list, '*' any)"
        )

    def _matched(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.patterns)


class ModelDeck:
    """The connection settings a worker uses per model string, from the pipelines it loaded.

    Example:
        >>> deck = ModelDeck.of({"gw": ModelEntry(model="openai/x", api_base="http://gw/v1")})
        >>> deck.connection("openai/x")
        {'api_base': 'http://gw/v1'}
    """

    def __init__(
        self,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        allowed: AllowedModels | None = None,
        max_output_tokens: int | None = None,
    ) -> None:
        self._connections = {model: dict(c) for model, c in (connections or {}).items()}
        # Which model strings the worker calls (None: no check, for a library call of a body).
        self.allowed = allowed
        # The most output tokens a chat request of this worker asks for (None: no cap; see
        # `durapipe.activities._settings.check_output_tokens`).
        self.max_output_tokens = max_output_tokens

    def allowing(self, allowed: AllowedModels) -> ModelDeck:
        """This deck's connections and cap, calling only the models ``allowed`` allows."""
        return ModelDeck(self._connections, allowed, self.max_output_tokens)

    def capping(self, max_output_tokens: int | None) -> ModelDeck:
        """This deck, its chat requests asking at most ``max_output_tokens`` output tokens."""
        return ModelDeck(self._connections, self.allowed, max_output_tokens)

    def models(self) -> set[str]:
        """The model strings this deck has connection settings for."""
        return set(self._connections)

    @classmethod
    def of(cls, *decks: Mapping[str, ModelRef]) -> ModelDeck:
        """The deck of one or more pipelines' ``models:`` (a later entry for a model wins)."""
        connections: dict[str, dict[str, Any]] = {}
        for deck in decks:
            for entry in deck.values():
                if isinstance(entry, ModelEntry) and entry.connection():
                    connections[entry.model] = entry.connection()
        return cls(connections)

    def connection(self, model: str) -> dict[str, Any]:
        """The connection settings for ``model`` (empty: the worker's environment decides)."""
        return dict(self._connections.get(model, {}))

    def __bool__(self) -> bool:
        return (
            bool(self._connections)
            or self.allowed is not None
            or self.max_output_tokens is not None
        )
