"""Large payloads: Temporal's external storage (claim check) with a local-folder or S3 store.

A payload (a run's input, an activity's input or result) larger than the threshold is written to the
store and the history keeps a small reference to it; every worker and client that reads it fetches
it back. So a 20 MB document or a 5 MB answer neither fails a run (Temporal rejects payloads above
2 MB) nor bloats its history.

Settings (read from the environment when the client or worker is built):
    ``DURAPIPE_PAYLOAD_STORE``: a folder (default ``~/.cache/durapipe/payloads``; every worker and
        client must see the same folder, so use it on one host or on a shared file system), or
        ``s3://BUCKET`` for Temporal's S3 driver (``pip install 'durapipe[s3]'``; credentials and
        region come from the usual AWS environment).
    ``DURAPIPE_PAYLOAD_THRESHOLD``: payloads of at least this size are stored outside the history;
        bytes, or with a unit: ``256KiB`` (the default), ``1MiB``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from temporalio.api.common.v1 import Payload
from temporalio.contrib.aws.s3driver import S3StorageDriver, S3StorageDriverClient
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from durapipe._errors import ConfigError
from durapipe._settings import settings

STORE_ENV = "DURAPIPE_PAYLOAD_STORE"
THRESHOLD_ENV = "DURAPIPE_PAYLOAD_THRESHOLD"
DEFAULT_THRESHOLD = 256 * 1024
DEFAULT_STORE = Path("~/.cache/durapipe/payloads")

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|k|mb|mib|m)?\s*$", re.IGNORECASE)
_UNIT = {"b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}


class LocalFileDriver(StorageDriver):
    """Stores payloads as files named by their SHA-256 in one folder (content-addressed).

    Args:
        folder: where the payloads go; created when missing.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()

    def name(self) -> str:
        """The name references carry, so any reader finds this driver."""
        return "durapipe.local"

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        """Write each payload once (the same bytes give the same file) and claim it by digest."""
        return await asyncio.to_thread(self._store, payloads)

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        """Read the payloads the claims name."""
        return await asyncio.to_thread(self._retrieve, claims)

    def _store(self, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        self.folder.mkdir(parents=True, exist_ok=True)
        claims = []
        for payload in payloads:
            data = payload.SerializeToString(deterministic=True)
            digest = hashlib.sha256(data).hexdigest()
            target = self.folder / digest
            if not target.exists():
                # Write then rename, so a reader never sees half a payload.
                partial = target.with_suffix(f".{os.getpid()}.partial")
                partial.write_bytes(data)
                partial.replace(target)
            claims.append(StorageDriverClaim(claim_data={"sha256": digest}))
        return claims

    def _retrieve(self, claims: Sequence[StorageDriverClaim]) -> list[Payload]:
        payloads = []
        for claim in claims:
            digest = claim.claim_data["sha256"]
            try:
                data = (self.folder / digest).read_bytes()
            except FileNotFoundError:
                raise ConfigError(
                    f"payload {digest} is not in {self.folder}: every worker and client must use "
                    f"the same {STORE_ENV}"
                ) from None
            payloads.append(Payload.FromString(data))
        return payloads


def parse_size(value: str) -> int:
    """Bytes from ``262144``, ``256KiB`` or ``1MiB``.

    Raises:
        ConfigError: not a size.
    """
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"{THRESHOLD_ENV}={value!r} is not a size (e.g. 262144, 256KiB, 1MiB)")
    return int(match.group(1)) * _UNIT[(match.group(2) or "b").lower()]


def external_storage(store: str | None = None, threshold: int | None = None) -> ExternalStorage:
    """The external storage for a store setting (a folder or ``s3://BUCKET``) and a threshold.

    Both default to the environment (see the module docstring).
    """
    store = store or settings().payload_store or str(DEFAULT_STORE)
    if threshold is None:
        env = settings().payload_threshold
        threshold = parse_size(env) if env else DEFAULT_THRESHOLD
    driver: StorageDriver
    if store.startswith("s3://"):
        driver = S3StorageDriver(client=_LazyS3Client(), bucket=store.removeprefix("s3://"))
    else:
        driver = LocalFileDriver(store)
    return ExternalStorage(drivers=[driver], payload_size_threshold=threshold)


def with_external_storage(converter: DataConverter) -> DataConverter:
    """``converter`` with large payloads sent to the configured store (the claim check)."""
    shared = converter.payload_converter_class
    if shared is PydanticPayloadConverter:
        shared = SharedPydanticPayloadConverter
    return dataclasses.replace(
        converter, payload_converter_class=shared, external_storage=external_storage()
    )


class SharedPydanticPayloadConverter(PydanticPayloadConverter):
    """The pydantic payload converter, one instance for the whole process.

    With external storage on, the SDK copies the data converter for every activity task and workflow
    activation, and each copy made a new pydantic converter with an empty cache of type adapters:
    building them again cost milliseconds per step. The converter holds nothing but that cache.
    """

    _shared: ClassVar[SharedPydanticPayloadConverter | None] = None

    def __new__(cls) -> SharedPydanticPayloadConverter:
        if cls._shared is None:
            shared = super().__new__(cls)
            PydanticPayloadConverter.__init__(shared)
            cls._shared = shared
        return cls._shared

    def __init__(self) -> None:
        pass  # built once, in __new__


class _LazyS3Client(S3StorageDriverClient):
    """An aioboto3 S3 client opened on first use, on the event loop that uses it."""

    def __init__(self) -> None:
        self._client: Any = None
        self._open = contextlib.AsyncExitStack()

    async def _get(self) -> Any:
        if self._client is None:
            try:
                import aioboto3
                from temporalio.contrib.aws.s3driver.aioboto3 import new_aioboto3_client
            except ImportError:
                raise ConfigError(
                    "the S3 payload store needs the S3 extra: pip install 'durapipe[s3]'"
                ) from None
            s3 = await self._open.enter_async_context(aioboto3.Session().client("s3"))
            self._client = new_aioboto3_client(s3)
        return self._client

    async def put_object(self, *, bucket: str, key: str, data: bytes) -> None:
        await (await self._get()).put_object(bucket=bucket, key=key, data=data)

    async def object_exists(self, *, bucket: str, key: str) -> bool:
        return bool(await (await self._get()).object_exists(bucket=bucket, key=key))

    async def get_object(self, *, bucket: str, key: str) -> bytes:
        return bytes(await (await self._get()).get_object(bucket=bucket, key=key))
