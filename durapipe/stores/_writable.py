"""Checking at worker start that the local stores can be written, so an unwritable folder fails
the worker with one sentence instead of the first step that needs it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from durapipe._errors import ConfigError
from durapipe._settings import Settings
from durapipe.stores import _blobs
from durapipe.stores._paths import default_path, is_off, is_redis
from durapipe.stores._payloads import DEFAULT_STORE, parse_size


def check_stores(settings: Settings) -> None:
    """Create each local store's folder and write a probe file in it.

    Raises:
        ConfigError: a folder cannot be created or written (names it and its variable).
    """
    if settings.payload_threshold:
        parse_size(settings.payload_threshold)
    for variable, folder in _local_folders(settings).items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".durapipe-probe-"):
                pass
        except OSError as err:
            raise ConfigError(
                f"{variable}: cannot write to {folder} ({err.strerror or err}); "
                f"set {variable} to a writable folder"
            ) from None


def _local_folders(settings: Settings) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    checkpoints = settings.checkpoints
    if not is_off(checkpoints) and not is_redis(checkpoints):
        folders["DURAPIPE_CHECKPOINTS"] = Path(checkpoints or default_path()).expanduser().parent
    limits = settings.limits_store
    if not is_redis(limits):
        where = default_path() if not limits or is_off(limits) else Path(limits)
        folders.setdefault("DURAPIPE_LIMITS", where.expanduser().parent)
    if _blobs.installed() is None:  # a store installed in code is its owner's business
        folders["DURAPIPE_BLOB_DIR"] = _blobs.default_blob_dir()
    store = settings.payload_store or str(DEFAULT_STORE)
    if not store.startswith("s3://"):
        folders["DURAPIPE_PAYLOAD_STORE"] = Path(os.path.expanduser(store))
    return folders
