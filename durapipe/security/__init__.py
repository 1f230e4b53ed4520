"""Keeping secrets out of Temporal: payload encryption (the codec) and secrets files whose values are
redacted from every error message."""

from durapipe.security._codec import (
    EncryptionCodec,
    EncryptionError,
    encryption_from_env,
    new_encryption_key,
)
from durapipe.security._secrets import load_secrets_file, redact

__all__ = [
    "EncryptionCodec",
    "EncryptionError",
    "encryption_from_env",
    "load_secrets_file",
    "new_encryption_key",
    "redact",
]
