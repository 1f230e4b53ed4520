"""The fake provider's ledger: one `Call` per request, read back from JSONL by `read_ledger`."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from durapipe.testing._fake_provider._actions import Action, Drop, Status

# ---------------------------------------------------------------------------
# Ledger
# ---------------------------------------------------------------------------

PAID_OUTCOMES = frozenset({"ok", "hang", "malformed", "schema_invalid", "tool_calls"})
"""Outcomes a real provider would bill: it produced a completion (``hang``
means the answer was sent after the delay, the client still being there)."""


@dataclass(frozen=True)
class Call:
    """One request received by the fake provider.

    Attributes:
        seq: 1-based sequence number, in order of arrival.
        model: The ``model`` of the request body (litellm strips ``openai/``).
        received_at: ``time.time()`` when the provider's event loop began handling the request
            (late by however long the loop was busy: on a loaded host, tenths of a second).
        finished_at: ``time.time()`` when handling finished; ``None`` while the
            call is still in flight.
        outcome: ``ok``, ``status:<code>``, ``hang``, ``client_closed``,
            ``dropped``, ``malformed``, ``schema_invalid``, ``tool_calls`` or
            ``replayed`` (a repeated idempotency key answered from the stored
            answer, not billed; see ``honour_idempotency``).
        idempotency_key: From the ``X-Durapipe-Idempotency-Key`` header, else
            ``metadata.idempotency_key`` of the body, else ``None``.
        attempt: From the ``X-Durapipe-Attempt`` header (if an integer).
        prompt_tokens: Reported (or, for errors, counted) prompt tokens.
        completion_tokens: Reported completion tokens (0 when nothing was sent).
        messages: The request's ``messages``.
        headers: The request's HTTP headers.
        http_status: The status sent, or ``None`` if no response was sent.
        peer_port: The client's TCP port (one connection's requests share it).
        body_sha256: SHA-256 of the request body as received (hex): two requests of one step
            that differ in any byte (a field, a parameter) differ here.
        kernel_received_at: When the kernel had received the whole request (``SO_TIMESTAMPNS``
            on the provider's sockets, same clock as ``time.time()``), however busy the
            provider's loop was; ``None`` where the kernel does not stamp (not Linux).
        options: An image or OCR request's body besides its ``model`` (``size``, ``n``,
            ``background``, ...); empty for chat requests, whose body is ``messages``.
        max_tokens: The output tokens the request asked for at most (its ``max_tokens``, else
            its ``max_completion_tokens``); ``None`` when it set neither.
    """

    seq: int
    model: str
    received_at: float
    finished_at: float | None
    outcome: str
    idempotency_key: str | None
    attempt: int | None
    prompt_tokens: int
    completion_tokens: int
    messages: list[dict[str, Any]]
    headers: dict[str, str]
    http_status: int | None
    peer_port: int | None = None
    body_sha256: str | None = None
    kernel_received_at: float | None = None
    max_tokens: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def arrived_at(self) -> float:
        """When the request arrived: the kernel's stamp where there is one, else ``received_at``.

        Rates are counted on this clock (see `FakeProvider.max_rate`).
        """
        return self.kernel_received_at if self.kernel_received_at is not None else self.received_at

    @property
    def paid(self) -> bool:
        """Whether a real provider would bill this call (see `PAID_OUTCOMES`)."""
        return self.outcome in PAID_OUTCOMES

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (the JSONL ledger line format)."""
        return {
            "seq": self.seq,
            "model": self.model,
            "received_at": self.received_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "idempotency_key": self.idempotency_key,
            "attempt": self.attempt,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "messages": self.messages,
            "headers": self.headers,
            "http_status": self.http_status,
            "peer_port": self.peer_port,
            "body_sha256": self.body_sha256,
            "kernel_received_at": self.kernel_received_at,
            "max_tokens": self.max_tokens,
            "options": self.options,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Call:
        """Build a `Call` from `to_dict` output (e.g. a JSONL ledger line)."""
        return cls(
            seq=int(data["seq"]),
            model=str(data["model"]),
            received_at=float(data["received_at"]),
            finished_at=None if data.get("finished_at") is None else float(data["finished_at"]),
            outcome=str(data["outcome"]),
            idempotency_key=data.get("idempotency_key"),
            attempt=data.get("attempt"),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            messages=list(data.get("messages", [])),
            headers=dict(data.get("headers", {})),
            http_status=data.get("http_status"),
            peer_port=data.get("peer_port"),
            body_sha256=data.get("body_sha256"),
            kernel_received_at=data.get("kernel_received_at"),
            max_tokens=data.get("max_tokens"),
            options=dict(data.get("options", {})),
        )


def read_ledger(path: str | os.PathLike[str]) -> list[Call]:
    """Read a JSONL ledger written by a provider started with a ledger path.

    Args:
        path: The ``--ledger`` / ``ledger_path`` file.

    Returns:
        The finished calls in the order they finished (a partially written
        last line is ignored).
    """
    calls: list[Call] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                calls.append(Call.from_dict(json.loads(line)))
            except (ValueError, KeyError):
                continue
    return calls


ResponseHook: TypeAlias = Callable[[Call], None]
"""A hook called with a snapshot of the `Call` whose response is being sent."""


@dataclass(frozen=True)
class _Answer:
    """A completion as sent, kept to answer a repeated idempotency key the same way."""

    completion_id: str
    created: int
    message: Mapping[str, Any]
    finish_reason: str
    usage: Mapping[str, Any]


@dataclass(frozen=True)
class _Replay:
    """Send a stored answer again (outcome ``replayed``)."""

    answer: _Answer


@dataclass
class _Record:
    seq: int
    model: str
    received_at: float
    idempotency_key: str | None
    attempt: int | None
    prompt_tokens: int
    messages: list[dict[str, Any]]
    headers: dict[str, str]
    outcome: str = "ok"
    completion_tokens: int = 0
    finished_at: float | None = None
    http_status: int | None = None
    peer_port: int | None = None
    body_sha256: str | None = None
    kernel_received_at: float | None = None
    max_tokens: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    answer: _Answer | None = None

    def snapshot(self) -> Call:
        return Call(
            seq=self.seq,
            model=self.model,
            received_at=self.received_at,
            finished_at=self.finished_at,
            outcome=self.outcome,
            idempotency_key=self.idempotency_key,
            attempt=self.attempt,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            messages=self.messages,
            headers=self.headers,
            http_status=self.http_status,
            peer_port=self.peer_port,
            body_sha256=self.body_sha256,
            kernel_received_at=self.kernel_received_at,
            max_tokens=self.max_tokens,
            options=self.options,
        )


@dataclass
class _FailureRate:
    rate: float
    rng: random.Random
    actions: tuple[Action, ...]
    models: frozenset[str] | None


_DEFAULT_FAILURES: tuple[Action, ...] = (Status(500), Status(429, retry_after=1), Drop())
