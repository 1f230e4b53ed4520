"""Payload encryption: an AES-GCM payload codec with named keys and rotation.

Every payload Temporal stores (workflow and activity inputs, results, query answers, failures'
details) is encrypted by the client or worker before it leaves the process, so the server, its
database and the history JSON never hold a prompt, a document or a model's answer in plain text.

Keys have ids. The first key is the current one: it encrypts. Every known key decrypts, chosen by
the key id stored in the payload's metadata, so rotating is "put the new key first, keep the old
ones until no history needs them".

Configuration (read by `encryption_from_env`):

- ``DURAPIPE_ENCRYPTION_KEYS``: ``id:base64key[,id:base64key...]``, current key first.
- ``DURAPIPE_ENCRYPTION_KEYS_FILE``: a file with one ``id:base64key`` per line (``#`` comments),
  current key first; for mounted secrets.

Keys are 32 random bytes (AES-256), base64-encoded: ``durapipe codec-key`` makes one.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from durapipe._errors import ConfigError
from durapipe._settings import settings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEYS_ENV = "DURAPIPE_ENCRYPTION_KEYS"
KEYS_FILE_ENV = "DURAPIPE_ENCRYPTION_KEYS_FILE"
_NONCE_BYTES = 12
_TAG_BYTES = 16  # AES-GCM's authentication tag
SEALED_PREFIX = "durapipe-sealed:"


class EncryptionError(ConfigError):
    """A payload cannot be decrypted with the keys this process knows."""


def new_encryption_key() -> str:
    """A fresh AES-256 key, base64-encoded, for ``DURAPIPE_ENCRYPTION_KEYS``."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


class EncryptionCodec(PayloadCodec):
    """AES-GCM encryption of every payload, with the current key; decryption with any known key.

    A codec without keys encrypts nothing, but still recognises encrypted payloads, so a client
    that lacks the key fails with a sentence that says so instead of an unknown-encoding error.

    Args:
        keys: key id -> 16, 24 or 32 key bytes, the current (encrypting) key first.

    Example:
        >>> codec = EncryptionCodec({"2025-06": os.urandom(32)})  # doctest: +SKIP
    """

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = next(iter(keys), None)

    @property
    def key_ids(self) -> list[str]:
        """The ids of the known keys, current first."""
        return list(self._ciphers)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload with the current key (unchanged when there is no key)."""
        if self.current is None:
            return list(payloads)
        cipher = self._ciphers[self.current]
        key_id = self.current.encode()
        encoded = []
        for payload in payloads:
            nonce = os.urandom(_NONCE_BYTES)
            # The key id is bound as associated data: a payload relabelled with another id fails.
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), key_id)
            encoded.append(
                Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id}, data=data)
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt each encrypted payload with the key its metadata names; others pass through.

        Raises:
            EncryptionError: the key is unknown here, or the key is wrong for the payload.
        """
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            decoded.append(self._decrypt(payload))
        return decoded

    def seal_text(self, text: str) -> str:
        """``text`` encrypted with the current key, as text a store can keep (unchanged: no key).

        For what durapipe keeps outside Temporal (checkpoints): with encryption on, nothing it
        writes at rest is plain text.
        """
        if self.current is None:
            return text
        sealed = self._seal(text.encode())
        return f"{SEALED_PREFIX}{self.current}:{base64.b64encode(sealed).decode()}"

    def open_text(self, text: str, *, what: str = "a payload") -> str:
        """The plain text of `seal_text`'s output (text that was never sealed passes through);
        ``what`` names it in messages (e.g. "the stored result of step ...").

        Raises:
            EncryptionError: the key is unknown here, or wrong for the text.
        """
        if not text.startswith(SEALED_PREFIX):
            return text
        key_id, _, encoded = text.removeprefix(SEALED_PREFIX).partition(":")
        try:
            data = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise EncryptionError(f"a value sealed with key '{key_id}' is not base64") from None
        return self._open(key_id, data, what=what).decode()

    def seal_bytes(self, data: bytes) -> bytes:
        """``data`` encrypted with the current key (unchanged: no key), as `seal_text` does, without
        base64: for files and objects (the blob store), where a third more bytes would cost.

        The result starts with ``durapipe-sealed:<key id>:``, then the nonce and the ciphertext.
        """
        if self.current is None:
            return data
        return f"{SEALED_PREFIX}{self.current}:".encode() + self._seal(data)

    def open_bytes(self, data: bytes, *, what: str = "a payload") -> bytes:
        """The plain bytes of `seal_bytes`'s output.

        Args:
            data: the sealed bytes (see `is_sealed`).
            what: what they are, for messages (e.g. "blob sha256:...").

        Raises:
            EncryptionError: the key is unknown here, or wrong for the bytes.
        """
        key_id, _, sealed = data.removeprefix(SEALED_PREFIX.encode()).partition(b":")
        return self._open(key_id.decode(errors="replace"), sealed, what=what)

    def _seal(self, plain: bytes) -> bytes:
        # The one cipher of durapipe's data at rest: AES-GCM under the current key, a fresh nonce,
        # the key id bound as associated data (relabelled with another id, it fails to open).
        assert self.current is not None
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._ciphers[self.current].encrypt(nonce, plain, self.current.encode())

    def _decrypt(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        return Payload.FromString(self._open(key_id, payload.data))

    def _open(self, key_id: str, data: bytes, *, what: str = "a payload") -> bytes:
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(self._ciphers) or f"none: {KEYS_ENV} is not set"
            raise EncryptionError(
                f"{what} is encrypted with key '{key_id}', which this process does not have "
                f"(known keys: {known}); add it to {KEYS_ENV} or {KEYS_FILE_ENV}"
            )
        if len(data) < _NONCE_BYTES + _TAG_BYTES:
            raise EncryptionError(
                f"{what} encrypted with key '{key_id}' is {len(data)} bytes, shorter than "
                "a nonce and a tag: it was cut or altered"
            )
        nonce, sealed = data[:_NONCE_BYTES], data[_NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise EncryptionError(
                f"{what} encrypted with key '{key_id}' does not decrypt with the key of that "
                f"id here: the key in {KEYS_ENV} is wrong (or it was altered)"
            ) from None


def is_sealed(data: bytes) -> bool:
    """Whether ``data`` starts as `EncryptionCodec.seal_bytes`'s output does."""
    return data.startswith(SEALED_PREFIX.encode())


def parse_keys(text: str, *, source: str) -> dict[str, bytes]:
    """Keys from ``id:base64key`` entries separated by commas or lines (``#`` starts a comment).

    Raises:
        ConfigError: an entry is malformed, a key is not base64 of 16/24/32 bytes, or an id repeats.
    """
    keys: dict[str, bytes] = {}
    entries = [e.split("#", 1)[0].strip() for line in text.splitlines() for e in line.split(",")]
    for entry in filter(None, entries):
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not key_id:
            raise ConfigError(f"{source}: entry '{key_id}...' must look like id:base64key")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except binascii.Error:
            raise ConfigError(f"{source}: key '{key_id}' is not valid base64") from None
        if len(key) not in (16, 24, 32):
            raise ConfigError(
                f"{source}: key '{key_id}' is {len(key)} bytes; AES needs 16, 24 or 32 "
                "(make one with `durapipe codec-key`)"
            )
        if key_id in keys:
            raise ConfigError(f"{source}: key id '{key_id}' appears twice")
        keys[key_id] = key
    return keys


def encryption_from_env(environ: Mapping[str, str] | None = None) -> EncryptionCodec:
    """The codec configured by ``DURAPIPE_ENCRYPTION_KEYS`` or ``DURAPIPE_ENCRYPTION_KEYS_FILE``.

    Raises:
        ConfigError: both are set, the file cannot be read, or a key is malformed.
    """
    if environ is None:
        configured = settings()
        keys = configured.encryption_keys
        inline = keys.get_secret_value() if keys else None
        file = str(configured.encryption_keys_file) if configured.encryption_keys_file else None
    else:
        inline, file = environ.get(KEYS_ENV), environ.get(KEYS_FILE_ENV)
    if inline and file:
        raise ConfigError(f"set {KEYS_ENV} or {KEYS_FILE_ENV}, not both")
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{KEYS_FILE_ENV}: cannot read '{file}': {err.strerror}") from None
        return EncryptionCodec(parse_keys(text, source=KEYS_FILE_ENV))
    return EncryptionCodec(parse_keys(inline or "", source=KEYS_ENV))
