"""Large payloads: Temporal's external storage (claim check) with a local-folder or S3 store.

A payload (a run's input, an activity's input or result) larger than the threshold is written to the
store and the history keeps a small reference to it; every worker and client that reads it fetches
it back. So a 20 MB document or a 5 MB answer neither fails a run (Temporal rejects payloads above
2 MB) nor bloats its history.

The store is a `durapipe.stores._content` store, the driver the blob store uses too.

Settings (read through `durapipe._settings` when the client or worker is built):
    ``DURAPIPE_PAYLOAD_STORE``: a folder (default ``~/.cache/durapipe/payloads``; every worker and
        client must see the same folder, so use it on one host or on a shared file system), or
        ``s3://BUCKET[/PREFIX]`` (``pip install 'durapipe[s3]'``; credentials, region and endpoint
        come from the usual AWS environment).
    ``DURAPIPE_PAYLOAD_THRESHOLD``: payloads of at least this size are stored outside the history;
        bytes, or with a unit: ``256KiB`` (the default), ``1MiB``.
    ``DURAPIPE_PAYLOAD_MAX``: the largest payload a worker reads back (default ``512MiB``); a
        larger one named by a claim is refused, not read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverSelectContext,
    StorageDriverStoreContext,
)

from durapipe import _settings
from durapipe._errors import ConfigError
from durapipe._settings import settings
from durapipe.runtime._calls import dumped_json
from durapipe.stores._content import (
    ContentRefused,
    ContentStore,
    Limit,
    LocalContentStore,
    S3ContentStore,
    open_content_store,
    read,
)

STORE_ENV = "DURAPIPE_PAYLOAD_STORE"
THRESHOLD_ENV = "DURAPIPE_PAYLOAD_THRESHOLD"
DEFAULT_THRESHOLD = 256 * 1024
DEFAULT_STORE = Path("~/.cache/durapipe/payloads")
MAX_PAYLOAD_ENV = "DURAPIPE_PAYLOAD_MAX"
DEFAULT_MAX_PAYLOAD = 512 * 1024 * 1024
# Driver names are recorded in every claim, so in histories: never renamed.
LOCAL_DRIVER = "durapipe.local"
S3_DRIVER = "durapipe.s3"
# The keys temporalio's S3 driver wrote: v0[/ns/...][/wt|at/...]/d/sha256/<digest>.
_EARLIER_S3_KEY = re.compile(r"v0(?:/[^/]+)*/d/sha256/([0-9a-f]{64})")


class ContentStoreDriver(StorageDriver):
    """Temporal's external storage on a `ContentStore`: a payload is stored under the SHA-256 of its
    bytes and the history keeps the claim ``{"sha256": <hex>}``, never a place.

    Args:
        store: where the payloads go (a folder or an S3 bucket).
        name: the name claims carry, so a reader finds this driver (recorded in histories).
    """

    # A payload's name is its digest, whoever stores it: the store context (the workflow or
    # activity it belongs to) is never read, so the converter need not bind it (see
    # `reads_store_context`). The flag speaks for this class's ``store``: a subclass that overrides
    # ``store`` is bound unless it says the same of its own.
    reads_store_context: ClassVar[bool] = False

    def __init__(self, store: ContentStore, name: str) -> None:
        self.content = store
        self._name = name

    def name(self) -> str:
        """The name references carry, so any reader finds this driver."""
        return self._name

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        """Write each payload once (the same bytes give the same name) and claim it by digest."""
        return await asyncio.to_thread(self._store, payloads)

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        """Read the payloads the claims name."""
        return await asyncio.to_thread(self._retrieve, claims)

    def _store(self, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        return [
            StorageDriverClaim(
                claim_data={"sha256": self.content.put(p.SerializeToString(deterministic=True))}
            )
            for p in payloads
        ]

    def _retrieve(self, claims: Sequence[StorageDriverClaim]) -> list[Payload]:
        return [Payload.FromString(self.read_claim(claim.claim_data)) for claim in claims]

    def read_claim(self, claim: Mapping[str, str]) -> bytes:
        """The bytes a claim names, after checking it names a payload of this store.

        A claim arrives in a workflow or activity input, which any client of the namespace can
        write: it must be a SHA-256 in hex (no path), a regular file inside a folder store (no
        device, no link out), no larger than `MAX_PAYLOAD_ENV`, and its content must match it.

        Raises:
            ConfigError: the claim is refused (one sentence), or the payload is not in the store.
        """
        digest = str(claim.get("sha256", ""))
        return read(
            self.content,
            digest,
            missing=f"payload {digest} is not in {self.content.where}: every worker and client "
            f"must use the same {STORE_ENV}",
            refused="payload claim refused: ",
            limit=Limit(max_payload_size(), MAX_PAYLOAD_ENV),
        )


class LocalFileDriver(ContentStoreDriver):
    """Payloads as files of one folder, named by their SHA-256 (`LocalContentStore`).

    Args:
        folder: where the payloads go; created when missing.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()
        super().__init__(LocalContentStore(self.folder), LOCAL_DRIVER)


class EarlierS3Claims(StorageDriver):
    """Reads the claims temporalio's own S3 driver wrote when it was durapipe's S3 payload store
    (before the stores shared one driver), so histories recorded then still resolve.

    Those claims name a bucket and a key; only keys of this store's bucket that end in the digest
    they claim are read (a claim is client input: it may not point a worker at another object).
    """

    reads_store_context: ClassVar[bool] = False  # it never stores

    def __init__(self, store: S3ContentStore) -> None:
        self.content = store

    def name(self) -> str:
        """The name temporalio's S3 driver gave its claims."""
        return "aws.s3driver"

    async def store(
        self, context: StorageDriverStoreContext, payloads: Sequence[Payload]
    ) -> list[StorageDriverClaim]:
        """Never chosen for writing (new payloads go to `ContentStoreDriver`)."""
        raise ConfigError("the earlier S3 claim format is read, never written")

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        """Read the payloads the claims name, after checking each claim."""
        return await asyncio.to_thread(lambda: [self._read(c.claim_data) for c in claims])

    def _read(self, claim: Mapping[str, str]) -> Payload:
        bucket, key = str(claim.get("bucket", "")), str(claim.get("key", ""))
        digest = str(claim.get("hash_value", ""))
        found = _EARLIER_S3_KEY.fullmatch(key)
        if bucket != self.content.bucket or not found or found.group(1) != digest:
            raise ConfigError(
                f"payload claim refused: s3://{bucket[:80]}/{key[:200]} is not a payload of "
                f"{STORE_ENV}={self.content.where}"
            )
        try:
            data = self.content.get_key(
                key, digest, limit=Limit(max_payload_size(), MAX_PAYLOAD_ENV)
            )
        except ContentRefused as err:
            raise ConfigError(f"payload claim refused: {err}") from None
        return Payload.FromString(data)


def max_payload_size() -> int:
    """The largest payload a store read accepts: ``DURAPIPE_PAYLOAD_MAX`` (default 512MiB)."""
    env = settings().payload_max
    return parse_size(env, MAX_PAYLOAD_ENV) if env else DEFAULT_MAX_PAYLOAD


def parse_size(value: str, setting: str = THRESHOLD_ENV) -> int:
    """Bytes from ``262144``, ``256KiB`` or ``1MiB``.

    Raises:
        ConfigError: not a size.
    """
    return _settings.parse_size(value, setting)


def external_storage(store: str | None = None, threshold: int | None = None) -> ExternalStorage:
    """The external storage for a store setting (a folder or ``s3://BUCKET[/PREFIX]``) and a
    threshold. Both default to the settings (see the module docstring).
    """
    where = store or settings().payload_store or str(DEFAULT_STORE)
    if threshold is None:
        env = settings().payload_threshold
        threshold = parse_size(env) if env else DEFAULT_THRESHOLD
    content = open_content_store(where)
    if not isinstance(content, S3ContentStore):
        return ExternalStorage(drivers=[LocalFileDriver(where)], payload_size_threshold=threshold)
    driver = ContentStoreDriver(content, S3_DRIVER)
    return ExternalStorage(
        drivers=[driver, EarlierS3Claims(content)],
        driver_selector=_Always(driver),
        payload_size_threshold=threshold,
    )


@dataclasses.dataclass(frozen=True)
class _Always:
    """The driver selector of a store read by two drivers: every payload is written by one."""

    driver: StorageDriver
    reads_store_context: ClassVar[bool] = False

    def __call__(self, context: StorageDriverSelectContext, payload: Payload) -> StorageDriver:
        return self.driver


def reads_store_context(storage: ExternalStorage | None) -> bool:
    """Whether binding ``storage`` to a store context (`DataConverter._with_store_context`) can
    change what it does: whether a driver's ``store`` or the driver selector may read the context.

    The context is the only thing the binding changes, and only those two are given it. durapipe's
    drivers and selector say they never read it (``reads_store_context = False``, for the method of
    the class that says so); any other (a user's own driver, a subclass of durapipe's that overrides
    ``store``) is taken to read it, so it is bound as the SDK binds it.
    """
    if storage is None:
        return False
    selector = [storage.driver_selector] if storage.driver_selector else []
    return any(_reads(driver, "store") for driver in storage.drivers) or any(
        _reads(part, "__call__") for part in selector
    )


def _reads(part: object, method: str) -> bool:
    """Whether ``part``'s ``method`` may read the store context: unless the class that declares
    ``reads_store_context = False`` is the one whose ``method`` the part runs."""
    for cls in type(part).__mro__:
        if "reads_store_context" in vars(cls):
            said = bool(vars(cls)["reads_store_context"])
            return said or getattr(type(part), method) is not getattr(cls, method)
    return True


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

    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        """See `PydanticPayloadConverter`; a leaf result the checkpoint store just dumped (an
        activity's) is sent as those bytes, the same the pydantic converter would make."""
        if len(values) == 1:
            data = dumped_json(values[0])
            if data is not None:
                return [Payload(metadata=_JSON_PLAIN, data=data)]
        return super().to_payloads(values)


_JSON_PLAIN = {"encoding": b"json/plain"}
