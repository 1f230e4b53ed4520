"""Checking at worker start that the stores can be written, so an unwritable folder or an
unreachable bucket fails the worker with one sentence instead of the first step that needs it."""

from __future__ import annotations

from pathlib import Path

from durapipe._errors import ConfigError
from durapipe._settings import Settings
from durapipe.stores import _blobs
from durapipe.stores._checkpoints import store_for
from durapipe.stores._content import ContentStore, LocalContentStore, open_content_store
from durapipe.stores._limits import configured_limits
from durapipe.stores._paths import default_path, is_off, is_redis, unwritable
from durapipe.stores._payloads import DEFAULT_STORE


def check_stores(settings: Settings, *, checkpoints: bool = True) -> None:
    """Write once to each store this worker uses: each local store's folder (created when
    missing), and the content stores (blobs, payloads) wherever they are, S3 included.

    ``checkpoints=False`` leaves out the store ``DURAPIPE_CHECKPOINTS`` names: the worker's steps
    use one given in code (``durapipe.connect(checkpoints=...)``), and its file is not touched.

    Raises:
        ConfigError: a store cannot be written or reached (names it and its variable), or the
            checkpoint or limits file has a layout this version cannot read.
    """
    for variable, store in _stores(settings, checkpoints=checkpoints).items():
        try:
            store.check()
        except OSError as err:
            if isinstance(store, LocalContentStore):
                raise unwritable(variable, store.where, err) from None
            raise ConfigError(
                f"{variable}: cannot write to or reach {store.where} ({err.strerror or err}); "
                f"set {variable} to a writable store"
            ) from None
    if checkpoints and not is_off(settings.checkpoints) and not is_redis(settings.checkpoints):
        # Opened now (and kept for the worker's steps): a file of an earlier durapipe is migrated
        # here, and one this version cannot read fails the worker instead of its first step.
        store_for(settings.checkpoints)
    named = settings.limits or (checkpoints and not is_off(settings.checkpoints))
    if named and not is_redis(settings.limits_store):
        # The limits file likewise, when this worker's settings name it (DURAPIPE_LIMITS, or the
        # checkpoint file above): its first limited step would otherwise open it, inside the
        # provider's window. A worker given its checkpoints in code leaves that file alone.
        configured_limits()


def _stores(settings: Settings, *, checkpoints: bool) -> dict[str, ContentStore]:
    folders: dict[str, Path] = {}
    configured = settings.checkpoints
    if checkpoints and not is_off(configured) and not is_redis(configured):
        folders["DURAPIPE_CHECKPOINTS"] = Path(configured or default_path()).expanduser().parent
    limits = settings.limits_store
    if not is_redis(limits):
        where = default_path() if not limits or is_off(limits) else Path(limits)
        folders.setdefault("DURAPIPE_LIMITS", where.expanduser().parent)
    # The SQLite stores' folders are probed like a content store's: a file written in them.
    stores: dict[str, ContentStore] = {v: LocalContentStore(f) for v, f in folders.items()}
    if _blobs.installed() is None:  # a store installed in code is its owner's business
        stores["DURAPIPE_BLOB_DIR"] = open_content_store(_blobs.blob_location())
    stores["DURAPIPE_PAYLOAD_STORE"] = open_content_store(
        settings.payload_store or str(DEFAULT_STORE)
    )
    return stores
