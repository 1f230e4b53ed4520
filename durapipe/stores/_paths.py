"""Where workers keep what they share: checkpoints, and the counts of provider limits.

``DURAPIPE_CHECKPOINTS`` names one place for both: a SQLite file (the workers of one host), a
``redis://`` URL (workers on several hosts), or ``off`` (no checkpoints; limits then count in the
default file). ``DURAPIPE_LIMITS`` may put the limit counts elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from durapipe._errors import ConfigError

CHECKPOINTS_ENV = "DURAPIPE_CHECKPOINTS"
LIMITS_ENV = "DURAPIPE_LIMITS"


def cache_dir() -> Path:
    """durapipe's folder in the user's cache (``$XDG_CACHE_HOME/durapipe``, else ``~/.cache/durapipe``):
    where the stores live when no setting names a place."""
    # XDG_CACHE_HOME is the desktop's convention, not a durapipe setting: read where it is used.
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "durapipe"


def default_path() -> Path:
    """The SQLite file used when no setting names one."""
    return cache_dir() / "checkpoints.sqlite"


def is_off(where: str) -> bool:
    """Whether a setting turns the store off."""
    return where.lower() in {"off", "none", "0"}


def is_redis(where: str) -> bool:
    """Whether a setting names a Redis server."""
    return where.startswith(("redis://", "rediss://", "unix://"))


def unwritable(variable: str, where: object, err: OSError) -> ConfigError:
    """The sentence for a store's folder this process cannot make or write, naming its setting."""
    return ConfigError(
        f"{variable}: cannot write to {where} ({err.strerror or err}); "
        f"set {variable} to a writable folder"
    )
