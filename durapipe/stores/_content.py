"""One content-addressed store, with a local-folder driver and an S3 driver, under both the blob store
(files passed to pipes) and the payload store (Temporal's external storage of large payloads).

Content is named by the SHA-256 of its bytes, in hex: ``put`` returns it, ``get`` and ``exists`` take
it. A name arrives from a run's input or a history, which any client of the namespace can write, so
every read checks it is a digest (never a path), reads at most ``limit`` bytes, and checks the bytes
hash to the name. Where a store is comes from a setting: a folder, or ``s3://BUCKET[/PREFIX]``
(credentials, region and endpoint from the usual AWS environment: ``AWS_ENDPOINT_URL_S3`` points at
an S3-compatible server).

A store given an `EncryptionCodec` with a key (the blob store: ``DURAPIPE_ENCRYPTION_KEYS``) seals
what it writes with the cipher checkpoints use (`EncryptionCodec.seal_bytes`); the name stays the
hash of the plain bytes, so references recorded in histories keep resolving, and a read checks the
hash after opening. Content written plain (before encryption was on) still reads. The payload store
gives none: the payloads Temporal hands it are already encrypted by the payload codec.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from durapipe._errors import ConfigError
from durapipe.security._codec import EncryptionCodec, EncryptionError, is_sealed

DIGEST = re.compile(r"[0-9a-f]{64}")
S3_SCHEME = "s3://"
# The bytes of an empty file: written by `check` as its probe (content-addressed, so harmless to keep).
_EMPTY = hashlib.sha256(b"").hexdigest()
# Sealed content is longer than the plain by the prefix, the key id, a nonce and a tag: a read
# allows this much over its limit before opening, and checks the opened bytes against the limit.
_SEAL_MARGIN = 512
# S3 object metadata marking sealed content, so `put` can tell a plain object written before
# encryption was on (and rewrite it sealed) without reading it.
_SEALED_METADATA = "durapipe-sealed"


class ContentNotFound(ConfigError):
    """The store holds no content under this digest."""


class ContentRefused(ConfigError):
    """A name or the content it names is refused: not a digest, not a regular file, too large, or
    not matching its name. The message starts with the name and says why."""


def read(
    store: ContentStore,
    digest: str,
    *,
    missing: str,
    refused: str,
    error: type[ConfigError] = ConfigError,
    limit: Limit | None = None,
) -> bytes:
    """``store.get(digest)``, its two refusals told in the caller's words (blob, payload).

    Args:
        missing: the sentence when the store does not hold the content.
        refused: what goes before the store's own reason when the name or content is refused.
        error: the error to raise, without the store's traceback (the name came from a client).

    Raises:
        ConfigError: ``error``, for either refusal; any other failure of the store as it came.
    """
    try:
        return store.get(digest, limit=limit)
    except ContentNotFound:
        raise error(missing) from None
    except ContentRefused as err:
        raise error(f"{refused}{err}") from None


class ContentStore(Protocol):
    """Bytes kept by their SHA-256: equal bytes, equal name; storing them twice is harmless."""

    @property
    def where(self) -> str:
        """The store's place as its setting spells it (a folder, ``s3://...``), for messages."""
        ...

    def put(self, data: bytes) -> str:
        """Store ``data``; return its SHA-256 (hex)."""
        ...

    def get(self, digest: str, *, limit: Limit | None = None) -> bytes:
        """The bytes named ``digest``, checked against it.

        Raises:
            ContentNotFound: the store does not hold them.
            ContentRefused: ``digest`` is not a SHA-256, or the content is larger than ``limit``,
                is not a regular file or does not hash to ``digest``.
            ConfigError: the store cannot be reached.
        """
        ...

    def exists(self, digest: str) -> bool:
        """Whether the store holds the bytes named ``digest``."""
        ...

    def check(self) -> None:
        """Write to the store once, so a worker fails at start, not at its first large payload.

        Raises:
            OSError: the store cannot be written or reached (``strerror`` says why).
        """
        ...


def digest_of(data: bytes) -> str:
    """The SHA-256 of ``data``, in hex: its name in every store."""
    return hashlib.sha256(data).hexdigest()


class Limit(NamedTuple):
    """The most bytes a read accepts, and the setting that says so (named when a read is refused)."""

    size: int
    setting: str


def require_digest(digest: str) -> str:
    """``digest`` when it is a SHA-256 in hex.

    Raises:
        ContentRefused: it is not (a name arrives in run inputs: it names content, never a path).
    """
    if not DIGEST.fullmatch(digest):
        raise ContentRefused(
            f"{digest[:80]!r} is not a SHA-256 digest "
            "(a reference names content of the store, never a path)"
        )
    return digest


class LocalContentStore:
    """Content as files in one folder: ``<root>/<first two hex digits>/<digest>``, each written to a
    temporary file then renamed (a reader never sees half of one), readable by its owner only.

    Reads also find ``<root>/<digest>``, where the payload store kept payloads before the stores
    shared this driver, so folders written by earlier versions keep resolving.

    Args:
        root: the folder (``~`` is expanded); created at the first write.
        codec: seals what is written (None, or a codec without keys: written plain).
    """

    def __init__(self, root: str | os.PathLike[str], codec: EncryptionCodec | None = None) -> None:
        self.root = Path(root).expanduser()
        self.codec = codec

    @property
    def where(self) -> str:
        """The folder."""
        return str(self.root)

    def path(self, digest: str) -> Path:
        """The file new content named ``digest`` is written to."""
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        target = self.path(digest)
        if not target.exists() or (_sealing(self.codec) and not self._sealed(target)):
            target.parent.mkdir(parents=True, exist_ok=True)
            # Mode 0600 (NamedTemporaryFile's): what a run reads or writes is its owner's.
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
                handle.write(_sealed(self.codec, data))
            os.replace(handle.name, target)
        return digest

    @staticmethod
    def _sealed(path: Path) -> bool:
        # Content written plain before encryption was on is rewritten sealed when put again.
        try:
            with path.open("rb") as file:
                return is_sealed(file.read(64))
        except OSError:
            return False

    def exists(self, digest: str) -> bool:
        require_digest(digest)
        return any(path.is_file() for path in self._places(digest))

    def get(self, digest: str, *, limit: Limit | None = None) -> bytes:
        require_digest(digest)
        for path in self._places(digest):
            try:
                # O_NOFOLLOW: a link planted in the store cannot point the worker at another file.
                descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
            except FileNotFoundError:
                continue
            except OSError as err:
                raise ContentRefused(f"{digest} cannot be read: {err.strerror}") from None
            with os.fdopen(descriptor, "rb") as file:
                info = os.fstat(file.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise ContentRefused(f"{digest} is not a regular file in {self.root}")
                _check_size(digest, info.st_size, limit)
                data = file.read() if limit is None else file.read(limit.size + _SEAL_MARGIN + 1)
            return _checked(digest, _opened(self.codec, digest, data), limit)
        raise ContentNotFound(f"{digest} is not in {self.root}")

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.root, prefix=".durapipe-probe-"):
            pass

    def _places(self, digest: str) -> tuple[Path, Path]:
        return self.path(digest), self.root / digest


class S3ContentStore:
    """Content as objects of an S3 bucket: ``<prefix>/<digest>`` (boto3, the ``s3`` extra).

    Any S3-compatible server works: boto3 reads the endpoint (``AWS_ENDPOINT_URL_S3``), region and
    credentials from the environment, as the AWS CLI does.

    Args:
        bucket: the bucket (it must exist).
        prefix: a key prefix, e.g. ``durapipe/payloads`` (none by default).
        codec: seals what is written (None, or a codec without keys: written plain).
    """

    def __init__(self, bucket: str, prefix: str = "", codec: EncryptionCodec | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.codec = codec

    @property
    def where(self) -> str:
        """``s3://BUCKET[/PREFIX]``."""
        return f"{S3_SCHEME}{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")

    def key(self, digest: str) -> str:
        """The object key of the content named ``digest``."""
        return f"{self.prefix}/{digest}" if self.prefix else digest

    @property
    def _client(self) -> Any:
        return _s3_client(self.bucket, self.prefix)

    def put(self, data: bytes) -> str:
        digest = digest_of(data)
        sealing = _sealing(self.codec)
        # A role allowed only to get and put objects (no s3:ListBucket) is answered 403, not 404,
        # for an object that is not there: writing it again is the safe answer.
        head = self._head(digest, absent={403, 404})
        if head is None or (sealing and _SEALED_METADATA not in head.get("Metadata", {})):
            extra = {"Metadata": {_SEALED_METADATA: "1"}} if sealing else {}
            try:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(digest),
                    Body=_sealed(self.codec, data),
                    **extra,
                )
            except Exception as err:
                raise _failure("write", self.where, digest, err) from None
        return digest

    def exists(self, digest: str) -> bool:
        return self._head(require_digest(digest), absent={404}) is not None

    def _head(self, digest: str, *, absent: set[int]) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self._client.head_object(
                Bucket=self.bucket, Key=self.key(digest)
            )
        except Exception as err:
            if _status(err) in absent:
                return None
            raise _failure("read", self.where, digest, err) from None
        return head

    def get(self, digest: str, *, limit: Limit | None = None) -> bytes:
        return self.get_key(self.key(require_digest(digest)), digest, limit=limit)

    def get_key(self, key: str, digest: str, *, limit: Limit | None = None) -> bytes:
        """The object at ``key``, checked against ``digest`` (also reads keys of older layouts)."""
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            if _status(err) == 404:
                raise ContentNotFound(f"{digest} is not in {self.where}") from None
            raise _failure("read", self.where, digest, err) from None
        body = answer["Body"]
        try:
            _check_size(digest, int(answer.get("ContentLength") or 0), limit)
            data = body.read() if limit is None else body.read(limit.size + _SEAL_MARGIN + 1)
        finally:
            body.close()
        return _checked(digest, _opened(self.codec, digest, data), limit)

    def check(self) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=self.key(_EMPTY), Body=b"")
        except ConfigError:
            raise
        except Exception as err:
            raise OSError(_reason(err)) from None


def open_content_store(where: str, codec: EncryptionCodec | None = None) -> ContentStore:
    """The store a setting names: ``s3://BUCKET[/PREFIX]``, else a folder; sealing with ``codec``
    (see the module's docstring).

    Raises:
        ConfigError: an ``s3://`` setting names no bucket.
    """
    if where.startswith(S3_SCHEME):
        bucket, _, prefix = where.removeprefix(S3_SCHEME).partition("/")
        if not bucket:
            raise ConfigError(f"{where!r} names no bucket: write s3://BUCKET or s3://BUCKET/PREFIX")
        return S3ContentStore(bucket, prefix.strip("/"), codec)
    return LocalContentStore(where, codec)


@functools.cache
def _s3_client(bucket: str, prefix: str) -> Any:
    # One client per bucket and prefix for the process (stores are made per call, with the codec
    # of the moment): making a boto3 client costs tens of ms.
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError("an s3:// store needs the S3 extra: pip install 'durapipe[s3]'") from None
    # Bounded waits: an unreachable endpoint fails a worker's start in seconds, not minutes.
    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3})
    return boto3.client("s3", config=config)


def _sealing(codec: EncryptionCodec | None) -> bool:
    return codec is not None and codec.current is not None


def _sealed(codec: EncryptionCodec | None, data: bytes) -> bytes:
    return codec.seal_bytes(data) if codec is not None else data


def _opened(codec: EncryptionCodec | None, digest: str, data: bytes) -> bytes:
    """The plain content of stored ``data``: opened when sealed, as is when written plain."""
    if not is_sealed(data):
        return data
    try:
        # A store without keys still recognises sealed content, to say which variable to set.
        return (codec or EncryptionCodec({})).open_bytes(data, what=f"content {digest}")
    except EncryptionError:
        if digest_of(data) == digest:  # plain content that happens to start as sealed does
            return data
        raise


def _check_size(digest: str, size: int, limit: Limit | None) -> None:
    if limit is not None and size > limit.size + _SEAL_MARGIN:
        raise ContentRefused(f"{digest} holds {size} bytes, more than {limit.setting}={limit.size}")


def _checked(digest: str, data: bytes, limit: Limit | None) -> bytes:
    if limit is not None and len(data) > limit.size:
        raise ContentRefused(f"{digest} holds more than {limit.setting}={limit.size} bytes")
    if digest_of(data) != digest:
        raise ContentRefused(f"{digest}: the stored content does not match its address")
    return data


def _status(err: Exception) -> int | None:
    response = getattr(err, "response", None)
    if isinstance(response, dict):
        code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
            return 404
        return int(code) if code else None
    return None


def _reason(err: Exception) -> str:
    """botocore's one-line reason (its messages name the endpoint, bucket or missing credentials)."""
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__


def _failure(action: str, where: str, digest: str, err: Exception) -> ConfigError:
    return ConfigError(f"cannot {action} {digest} in {where}: {_reason(err)}")
