"""What a worker checks before it polls: that every store it will write to is writable.

A worker whose checkpoint store, blob folder or payload store cannot be written fails every call
that touches it, only after the call's retries, with a ``FileNotFoundError`` or a read-only file
system error deep in an activity. In a container (no home folder, a read-only root file system) that
is every llm call. Checked at start, it is one sentence naming the setting to change.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from durapipe._errors import ConfigError
from durapipe._storage import DEFAULT_STORE
from durapipe._storage import STORE_ENV as PAYLOAD_STORE_ENV
from durapipe.activities._stores import CHECKPOINTS_ENV, default_path, is_off, is_redis
from durapipe.adapters._blobs import BLOB_DIR_ENV, default_blob_dir


def check_stores() -> None:
    """Make sure the stores this process's settings name can be written.

    Checks the checkpoint file (``DURAPIPE_CHECKPOINTS``, unless ``off`` or ``redis://``), the
    blob folder (``DURAPIPE_BLOB_DIR``) and the payload store folder (``DURAPIPE_PAYLOAD_STORE``,
    unless ``s3://``), creating the folders when missing.

    Raises:
        ConfigError: a store cannot be written (the message names the setting and the path).
    """
    checkpoints = os.environ.get(CHECKPOINTS_ENV, "")
    if not (is_off(checkpoints) or is_redis(checkpoints)):
        file = Path(checkpoints).expanduser() if checkpoints else default_path()
        _writable(file.parent, CHECKPOINTS_ENV, "the checkpoint store", file)
    _writable(default_blob_dir(), BLOB_DIR_ENV, "the blob store")
    payloads = os.environ.get(PAYLOAD_STORE_ENV) or str(DEFAULT_STORE)
    if not payloads.startswith("s3://"):
        _writable(Path(payloads).expanduser(), PAYLOAD_STORE_ENV, "the payload store")


def _writable(folder: Path, setting: str, what: str, shown: Path | None = None) -> None:
    probe = folder / f".durapipe-write-check-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"{setting}: cannot write {what} at '{shown or folder}' ({err.strerror}); set "
            f"{setting} to a writable path (in a container: a mounted volume)"
        ) from None
