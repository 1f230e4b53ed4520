"""durapipe's settings: every ``DURAPIPE_*`` environment variable, declared, typed and validated in
one place (pydantic-settings).

Workers and clients validate them when they start (`durapipe.connect`, `durapipe.build_worker`), so
a bad value fails there with one sentence naming the variable, not at first use. Modules read them
through `settings()`, never through ``os.environ``; the pure spec layer reads none.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from durapipe._errors import ConfigError
from durapipe.spec._base import parse_duration

PREFIX = "DURAPIPE_"
# The steps one run may start (see `durapipe.runtime.Steps`): far above the largest honest run (a
# batch of tens of thousands of items, a few steps each), far below a runaway fan-out.
DEFAULT_MAX_RUN_STEPS = 100_000
# The least a worker may set: a run of at most this many steps that reaches no batch cannot grow
# past it, so on Temporal it does not ask its worker for the cap (a local activity per run).
STEPS_ALWAYS_ALLOWED = 100
GRPC_COMPRESSIONS = ("gzip", "none")
# The least cap on a request's output tokens a worker may set: litellm sends a smaller
# ``max_output_tokens`` to OpenAI's Responses API (o1-pro, gpt-5-codex, ``openai/responses/*``) as
# 16, that API's least, so a smaller cap would not bound those requests.
LEAST_OUTPUT_TOKEN_CAP = 16


class Settings(BaseSettings):
    """The ``DURAPIPE_*`` variables (field ``checkpoints`` is ``DURAPIPE_CHECKPOINTS``, ...)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True
    )

    checkpoints: str = ""
    """Checkpoint store: a SQLite file, a ``redis://`` URL or ``off`` (default: the cache folder)."""
    checkpoint_ttl: str | None = None
    """How long stored results are served (``30d``, ``12h``; default 30 days)."""
    max_step_timeout: str | None = None
    """The longest timeout a leaf step may ask of this worker (``1h``, ``30m``; default 1 hour)."""
    max_run_steps: int = Field(default=DEFAULT_MAX_RUN_STEPS, ge=STEPS_ALWAYS_ALLOWED)
    """The steps one run may start on this worker, across its nested runs (default 100,000)."""
    max_output_tokens: int | None = Field(default=None, ge=LEAST_OUTPUT_TOKEN_CAP)
    """The most output tokens one llm call or agent turn may ask of this worker (unset: no cap);
    a call that asks none is sent with it."""
    max_run_usd: float | None = Field(default=None, gt=0)
    """The most one run may spend on this worker, in USD, across its nested runs (unset: no cap;
    a client's budget, when tighter, holds)."""
    limits: str = ""
    """Provider-limit counts, when not where the checkpoints are."""
    blob_dir: str | None = None
    """The blob store: a folder (default: the cache folder) or ``s3://BUCKET[/PREFIX]``."""
    payload_store: str | None = None
    """Large-payload store: a folder or ``s3://BUCKET[/PREFIX]``."""
    payload_threshold: str | None = None
    """Payloads larger than this go to the payload store (``256KiB``, ``1MiB``...)."""
    payload_max: str | None = None
    """The largest payload a worker reads back from a folder store (default ``512MiB``)."""
    default_model: str | None = None
    """The model of llm pipes that name none and whose pipeline names no default."""
    models: str | None = None
    """The models a worker calls, as patterns (``openai/*``, ``anthropic/claude-*``; ``*``: any),
    besides those its pipeline files and decks name; set, it replaces the providers allowed
    because the worker holds their keys."""
    workflow_sandbox: bool = False
    """Run workflows in Temporal's sandbox (``on``)."""
    task_queue: str | None = None
    """The CLI's default task queue."""
    ui_url: str | None = None
    """The Temporal UI's address, for links the CLI prints."""
    codec_token: SecretStr | None = None
    """The bearer token of the codec server."""
    codec_cors_origins: str | None = None
    """Origins allowed to call the codec server."""
    secrets_file: Path | None = None
    """A KEY=VALUE file of provider credentials a worker loads."""
    encryption_keys: SecretStr | None = None
    """Payload encryption keys (``id:base64key``, current first)."""
    encryption_keys_file: Path | None = None
    """A file of payload encryption keys."""
    model_prices: str | None = None
    """Prices of models litellm does not know: JSON, or the path of a JSON file."""
    offline_delay: float | None = Field(default=None, ge=0)
    """Seconds the offline model waits before answering (tests, benchmarks)."""
    offline_ledger: Path | None = None
    """A JSONL file where the offline model records its calls."""
    mthds_packages: Path | None = None
    """The MTHDS package cache remote dependencies are read from (default ``~/.mthds/packages``)."""
    mthds_methods: str | None = None
    """Folders of installed MTHDS methods (``os.pathsep``-separated) that package addresses before
    ``->`` resolve from (default ``~/.mthds/methods``)."""
    metrics_host: str | None = None
    """The interface a worker's Prometheus endpoint listens on."""
    mthds_deck: Path | None = None
    """The MTHDS model deck (TOML) bundles' model references resolve through."""
    serve_token: SecretStr | None = None
    """The bearer token clients of ``durapipe serve`` send."""
    searchable_totals: bool = True
    """Whether runs this client starts upsert their totals as search attributes (``off``: none)."""
    grpc_compression: str | None = None
    """How this process's Temporal connection compresses its messages: ``gzip`` (the SDK's
    default) or ``none`` (less CPU where the cluster is near; see the README's Benchmark)."""
    sqlite_held: bool = True
    """Whether the event loop's checkpoint reads and writes keep the GIL (``off``: Python's
    sqlite3, which lets go of it in every call; for comparing the two)."""

    @field_validator("searchable_totals", "sqlite_held", mode="before")
    @classmethod
    def _on_or_off(cls, value: object) -> object:
        # pydantic reads on/off, true/false, yes/no and 1/0; its own message names none of them.
        if isinstance(value, str) and value.strip().lower() not in _SWITCH:
            raise ValueError("expected on or off")
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("checkpoints", "limits")
    @classmethod
    def _is_a_store(cls, value: str) -> str:
        # Anything else was taken as a SQLite path: 'postgres://db/x' made a folder 'postgres:'.
        scheme = value.partition("://")[0] if "://" in value else None
        if scheme is not None and scheme not in _STORE_SCHEMES:
            raise ValueError("expected a SQLite file, a redis://, rediss:// or unix:// URL, or off")
        return value

    @field_validator("blob_dir", "payload_store")
    @classmethod
    def _is_a_content_store(cls, value: str | None) -> str | None:
        # As for the checkpoints: 'gs://bucket' was taken as a folder 'gs:'.
        if value is not None and "://" in value and not value.startswith("s3://"):
            raise ValueError("expected a folder or s3://BUCKET[/PREFIX]")
        return value

    @field_validator("grpc_compression", mode="before")
    @classmethod
    def _is_a_compression(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in GRPC_COMPRESSIONS:
                raise ValueError("expected gzip or none")
        return value

    @field_validator("models")
    @classmethod
    def _are_patterns(cls, value: str | None) -> str | None:
        if value is not None and not value.replace(",", " ").split():
            raise ValueError("expected model patterns such as openai/*, anthropic/claude-* or *")
        return value

    @field_validator("payload_threshold", "payload_max")
    @classmethod
    def _is_a_size(cls, value: str | None) -> str | None:
        if value is not None and not _SIZE.match(value):
            raise ValueError("not a size (e.g. 262144, 256KiB, 1MiB)")
        return value

    @field_validator("checkpoint_ttl", "max_step_timeout")
    @classmethod
    def _is_a_duration(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_duration(value.strip())  # its ValueError says what a duration looks like
        return value

    @field_validator("model_prices")
    @classmethod
    def _prices_are_json(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_prices(value)
        return value

    def prices(self) -> dict[str, dict[str, Any]]:
        """``DURAPIPE_MODEL_PRICES`` read: model string -> litellm price fields (none: empty)."""
        return _parse_prices(self.model_prices) if self.model_prices else {}

    @property
    def limits_store(self) -> str:
        """Where provider-limit counts live: ``DURAPIPE_LIMITS``, else the checkpoint store."""
        return self.limits or self.checkpoints


_SWITCH = frozenset({"on", "off", "true", "false", "yes", "no", "1", "0"})
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|k|mb|mib|m|gb|gib|g)?\s*$", re.IGNORECASE)
# The URLs a checkpoint or limits store may be (`durapipe.stores._paths.is_redis`); else a path.
_STORE_SCHEMES = frozenset({"redis", "rediss", "unix"})
_UNIT = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: str, setting: str) -> int:
    """Bytes from ``262144``, ``256KiB`` or ``1MiB`` (binary units; ``k``, ``kb``, ``kib`` alike).

    Raises:
        ConfigError: not a size (names ``setting``).
    """
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"{setting}={value!r} is not a size (e.g. 262144, 256KiB, 1MiB)")
    return int(match.group(1)) * _UNIT[(match.group(2) or "b").lower()[0]]


def _parse_prices(value: str) -> dict[str, dict[str, Any]]:
    text = value.strip()
    if not text.startswith("{"):
        try:
            text = Path(text).read_text(encoding="utf-8")
        except OSError as err:
            raise ValueError(f"cannot read the file '{value}': {err.strerror}") from None
    try:
        prices = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(prices, dict) or not all(isinstance(v, dict) for v in prices.values()):
        raise ValueError('expected {"provider/model": {"input_cost_per_token": ...}, ...}')
    return prices


def settings() -> Settings:
    """The settings in this process's environment (parsed once per distinct set of values).

    Raises:
        ConfigError: a variable's value is not valid (names the variable).
    """
    # Every activity reads settings (the offline model twice per call), so the common case, an
    # environment unchanged since the last call, is one C-level comparison of the environment's
    # mapping against a copy (~0.5 us), not a sorted tuple of its DURAPIPE_* items (~50 us).
    # Any change (a test's monkeypatch, a CLI flag) fails the comparison and re-reads as before.
    global _last
    environ = _environ_data()
    seen = _last
    if seen is not None and seen[0] == environ:
        return seen[1]
    snapshot = dict(environ)
    current = _parsed(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(PREFIX))))
    _last = (snapshot, current)
    return current


def _environ_data() -> Mapping[Any, Any]:
    # os.environ wraps a plain dict (CPython's ``_data``, encoded keys and values) that an equality
    # check compares without decoding each item; other implementations compare os.environ itself.
    data = getattr(os.environ, "_data", None)
    return data if isinstance(data, dict) else os.environ


_last: tuple[dict[Any, Any], Settings] | None = None
"""The environment the last `settings()` call saw, and the settings it returned."""


@functools.cache
def _parsed(values: tuple[tuple[str, str], ...]) -> Settings:
    # Keyed on the variables' values: a test or a CLI flag that sets one gets fresh settings, and
    # setting a variable back to an earlier value finds the settings parsed then.
    try:
        return Settings()
    except ValidationError as err:
        first = err.errors()[0]
        name = PREFIX + str(first["loc"][0]).upper()
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name}={first.get('input')!r} is not valid: {reason}") from None
