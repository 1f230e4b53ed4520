"""The blob store: binary inputs and outputs are kept by content address, and only references travel.

A document handed to a run, or an image a step generates, is stored once under its SHA-256 and
passed around as a `Blob` reference (``{"blob": "sha256:<hex>", "media_type": ..., "size": ...,
"name": ...}``), so Temporal histories hold a hundred bytes instead of megabytes. The client uploads
input files; activities read and write blobs.

The store is pluggable (`BlobStore`). The default keeps the bytes in the content store the payload
store uses too (`durapipe.stores._content`) at ``DURAPIPE_BLOB_DIR``: a folder (default
``~/.cache/durapipe/blobs``), which clients and workers share when they run on one machine or mount
one folder, or ``s3://BUCKET[/PREFIX]`` for workers on several hosts. `use_blob_store` installs
another store for the process.

With encryption keys configured (``DURAPIPE_ENCRYPTION_KEYS`` or ``_FILE``), the default stores seal
each blob at rest with the current key (the cipher checkpoints use), and open it with the key it was
sealed with; a reference stays the hash of the plain bytes. Blobs written plain before keys were set
still read.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from durapipe._errors import ConfigError, PipelineError, Problem
from durapipe._settings import settings
from durapipe.security._codec import EncryptionCodec, encryption_from_env
from durapipe.spec import Blob, Pipeline, _types
from durapipe.stores._content import (
    ContentStore,
    LocalContentStore,
    open_content_store,
    read,
)
from durapipe.stores._paths import cache_dir, unwritable

BLOB_DIR_ENV = "DURAPIPE_BLOB_DIR"
_MAGIC = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)


class BlobNotFound(ConfigError):
    """A blob reference names content the store does not hold."""


class BlobStore(Protocol):
    """Where blobs live. Implementations must be content-addressed: equal bytes, equal reference."""

    def put(self, data: bytes, *, media_type: str, name: str = "") -> Blob:
        """Store ``data`` and return its reference (storing the same bytes twice is harmless)."""
        ...

    def get(self, ref: Blob) -> bytes:
        """The bytes of ``ref``.

        Raises:
            BlobNotFound: the store does not hold them.
        """
        ...


class ContentBlobStore:
    """Blobs in a content store (`durapipe.stores._content`: a folder, or an S3 bucket).

    Args:
        content: the store that keeps the bytes under their SHA-256.
    """

    def __init__(self, content: ContentStore) -> None:
        self.content = content

    def put(self, data: bytes, *, media_type: str, name: str = "") -> Blob:
        digest = self.content.put(data)
        return Blob(blob=f"sha256:{digest}", media_type=media_type, size=len(data), name=name)

    def get(self, ref: Blob) -> bytes:
        # A reference arrives in a run's input: the content store reads only content of the store
        # (no link out of it, no device) that matches its address.
        return read(
            self.content,
            ref.blob.removeprefix("sha256:"),
            missing=f"blob {ref.blob} ({ref.name or ref.media_type}) is not in "
            f"{self.content.where}; workers and clients must share one blob store "
            f"(set {BLOB_DIR_ENV})",
            refused="blob ",
            error=BlobNotFound,
        )


class LocalBlobStore(ContentBlobStore):
    """Blobs as files in a folder, one per content address (``<root>/ab/abcdef...``).

    Args:
        root: the folder.
        codec: seals blobs at rest (default: the keys of the environment; none set, none used).

    Example:
        >>> store = LocalBlobStore(Path("/tmp/blobs"))  # doctest: +SKIP
        >>> ref = store.put(b"%PDF-1.4 ...", media_type="application/pdf", name="invoice.pdf")  # doctest: +SKIP
        >>> store.get(ref)[:5]  # doctest: +SKIP
        b'%PDF-'
    """

    def __init__(self, root: Path, codec: EncryptionCodec | None = None) -> None:
        self.root = root
        self.local = LocalContentStore(root, codec if codec is not None else encryption_from_env())
        super().__init__(self.local)

    def path(self, ref: Blob) -> Path:
        """The file that holds ``ref``'s bytes."""
        return self.local.path(ref.blob.removeprefix("sha256:"))


_installed: BlobStore | None = None


def use_blob_store(store: BlobStore | None) -> None:
    """Use ``store`` for every blob this process reads or writes (None: back to the default)."""
    global _installed
    _installed = store


def installed() -> BlobStore | None:
    """The store installed with `use_blob_store`, if any."""
    return _installed


def default_blob_dir() -> Path:
    """The blob folder when ``DURAPIPE_BLOB_DIR`` names none: the user's cache folder."""
    return cache_dir() / "blobs"


def blob_location() -> str:
    """Where blobs live: ``DURAPIPE_BLOB_DIR`` (a folder or ``s3://BUCKET[/PREFIX]``), else the
    user's cache folder."""
    return settings().blob_dir or str(default_blob_dir())


def blob_store() -> BlobStore:
    """The store this process uses: the installed one, else the one ``DURAPIPE_BLOB_DIR`` names,
    sealing blobs with the keys of ``DURAPIPE_ENCRYPTION_KEYS`` (or ``_FILE``) when set.

    Raises:
        ConfigError: a setting is not valid, or the keys are malformed (names the variable).
    """
    if _installed is not None:
        return _installed
    codec = encryption_from_env()
    content = open_content_store(blob_location(), codec)
    if isinstance(content, LocalContentStore):
        return LocalBlobStore(content.root, codec)
    return ContentBlobStore(content)


def media_type_of(data: bytes, name: str = "") -> str:
    """The media type of a file, from its first bytes, else its name."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def upload(data: bytes, *, name: str = "", store: BlobStore | None = None) -> Blob:
    """Store ``data`` (its media type sniffed) and return its reference."""
    return (store or blob_store()).put(data, media_type=media_type_of(data, name), name=name)


def prepare_inputs(
    pipeline: Pipeline,
    pipe: str,
    inputs: Mapping[str, Any],
    *,
    store: BlobStore | None = None,
) -> dict[str, Any]:
    """Run inputs with files uploaded: a `Path` or bytes given for a ``file``/``document``/``image``
    input (or as an item of a ``list[document]``...) becomes a `Blob` reference; a `Path` given for
    any other input is read as UTF-8 text.

    Raises:
        PipelineError: a file cannot be read, or an ``image`` input is not an image.
        ConfigError: the blob folder ``DURAPIPE_BLOB_DIR`` names cannot be written.
    """
    declared = pipeline.pipes[pipe].inputs if pipe in pipeline.pipes else {}
    prepared = dict(inputs)
    problems: list[Problem] = []
    for name, value in inputs.items():
        type_ref = declared.get(name, "any")
        where = f"pipe '{pipe}', input '{name}'"
        if isinstance(value, list) and any(isinstance(v, Path | bytes) for v in value):
            node = _types.parse_type(type_ref) if type_ref.startswith("list[") else None
            item = str(node.item) if node is not None and node.item is not None else "any"
            prepared[name] = [
                _file_value(f"pipe '{pipe}', input '{name}[{i}]'", v, item, store, problems)
                for i, v in enumerate(value)
            ]
        elif isinstance(value, Path | bytes):
            prepared[name] = _file_value(where, value, type_ref, store, problems)
    if problems:
        raise PipelineError(problems)
    return prepared


def _file_value(
    where: str, value: Any, type_ref: str, store: BlobStore | None, problems: list[Problem]
) -> Any:
    """A blob reference for a file input, the text of a file for any other (else ``value``)."""
    if not isinstance(value, Path | bytes):
        return value
    label = str(value) if isinstance(value, Path) else f"{len(value)} bytes"
    try:
        data = value.read_bytes() if isinstance(value, Path) else value
    except OSError as err:
        problems.append(Problem(where, f"cannot read '{label}': {err.strerror}"))
        return value
    if not _types.is_assignable(type_ref, "file") or type_ref == "any":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(Problem(where, f"'{label}' is not UTF-8 text, and {type_ref} is text"))
            return value
    try:
        ref = upload(data, name=value.name if isinstance(value, Path) else "", store=store)
    except OSError as err:
        if store is not None or _installed is not None:
            raise  # a store given in code is its owner's to explain
        # Before the run starts, so nothing is started (a worker checks this folder at start).
        raise unwritable("DURAPIPE_BLOB_DIR", blob_location(), err) from None
    if type_ref == "image" and not ref.media_type.startswith("image/"):
        problems.append(Problem(where, f"'{label}' is {ref.media_type}, not an image"))
    return ref.model_dump(mode="json")
