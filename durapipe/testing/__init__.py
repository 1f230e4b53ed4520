"""What users need to test their own pipes: the offline model and a fault-injecting provider.

- ``durapipe/offline``: a deterministic litellm provider that answers every prompt (schema-valid JSON
  for structured outputs) with real token counts and zero cost; the default model.
- `FakeProvider`: an OpenAI-compatible HTTP server on 127.0.0.1 that litellm talks to for real,
  scriptable to fail (429 with Retry-After, 5xx, 401, context window, hangs, dropped connections,
  malformed JSON), with a ledger of every call; over ``https://`` with `self_signed_certificate`.
- `text_pdf`, `text_image`, `scanned_pdf`: small documents made in memory, to test extract pipes.
- `run_histories`: every workflow of a run and the length of its history.

The offline names import litellm (seconds), so they load on first use.
"""

from __future__ import annotations

from typing import Any

from durapipe.testing._certificates import Certificate, self_signed_certificate
from durapipe.testing._documents import scanned_pdf, text_image, text_pdf
from durapipe.testing._fake_provider import (
    PAID_OUTCOMES,
    Action,
    Call,
    Drop,
    FakeProvider,
    Hang,
    Malformed,
    Reply,
    SchemaInvalid,
    Status,
    ToolCalls,
    read_ledger,
)
from durapipe.testing._histories import run_histories

_OFFLINE = {"OfflineModel", "read_offline_ledger", "register_offline_model", "sample_from_schema"}

__all__ = [
    "PAID_OUTCOMES",
    "Action",
    "Call",
    "Certificate",
    "Drop",
    "FakeProvider",
    "Hang",
    "Malformed",
    "OfflineModel",
    "Reply",
    "SchemaInvalid",
    "Status",
    "ToolCalls",
    "read_ledger",
    "read_offline_ledger",
    "register_offline_model",
    "run_histories",
    "sample_from_schema",
    "scanned_pdf",
    "self_signed_certificate",
    "text_image",
    "text_pdf",
]


def __getattr__(name: str) -> Any:
    if name in _OFFLINE:
        from durapipe.adapters import _offline

        return getattr(_offline, name)
    raise AttributeError(f"module 'durapipe.testing' has no attribute {name!r}")
