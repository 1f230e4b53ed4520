"""Provider credentials: read by workers from their environment, never carried by a run.

A key must never reach Temporal: not in workflow or activity inputs, results, memos, search
attributes, failures, logs or spans. So keys live only in the worker's environment (set directly,
or loaded from a ``KEY=VALUE`` secrets file with `load_secrets_file`), where litellm reads them
(``OPENAI_API_KEY``, ``OPENAI_API_BASE``, ``ANTHROPIC_API_KEY``, ...), and error messages coming back
from providers are passed through `redact` before they become a failure in history.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from durapipe._errors import ConfigError

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
# Environment names whose values are credentials: their values are masked in provider errors.
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_MIN_SECRET_LENGTH = 6  # shorter values would mask ordinary words
# A URL's user part (``https://user:password@host``): an endpoint such as ``OPENAI_API_BASE`` may
# carry its credentials there, under a name no credential pattern matches, and a provider's or
# litellm's message may quote the URL it called.
_URL_USERINFO = re.compile(r"(?<=://)[^/\s@?#]+@")


def parse_secrets(text: str, *, source: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional ``export``, optional quotes) as a mapping.

    Raises:
        ConfigError: a line is neither blank, a comment, nor ``KEY=VALUE`` (the value is not shown).
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(f"{source}, line {number}: expected KEY=VALUE")
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name] = value
    return values


def load_secrets_file(path: str | os.PathLike[str]) -> list[str]:
    """Load a ``KEY=VALUE`` file into this process's environment; return the names it set.

    Values already in the environment are replaced: the file is the worker's explicit choice.

    Raises:
        ConfigError: the file cannot be read or has a malformed line.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"secrets file '{path}': cannot read it: {err.strerror}") from None
    values = parse_secrets(text, source=f"secrets file '{path}'")
    os.environ.update(values)
    return sorted(values)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names mark them as credentials, longest first."""
    env = os.environ if environ is None else environ
    found = {
        value
        for name, value in env.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    }
    return sorted(found, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """``text`` with every credential of the environment, and every URL's user part, replaced by
    ``[redacted]``.

    Providers sometimes echo the key they were sent in an error message; that message becomes a
    failure in history and a line in the worker's log unless it is masked first.
    """
    for value in secret_values(environ):
        text = text.replace(value, "[redacted]")
    return _URL_USERINFO.sub("[redacted]@", text)


def redact_value(value: Any) -> Any:
    """``value`` with `redact` applied to every string within it (through lists, tuples and
    dicts, keys included); other values as they are.

    A failure's details (an ``ApplicationError``'s) are recorded in history as its message is.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item) for item in value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    return value
