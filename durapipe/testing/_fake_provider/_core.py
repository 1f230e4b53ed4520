"""The fake provider's state: scripts, hooks, the ledger's figures and prices (no HTTP here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from durapipe.testing._certificates import Certificate
from durapipe.testing._fake_provider._actions import Action, Reply, action_from_dict
from durapipe.testing._fake_provider._ledger import (
    _DEFAULT_FAILURES,
    Call,
    ResponseHook,
    _Answer,
    _FailureRate,
    _Record,
)
from durapipe.testing._fake_provider._wire import _check_action, _max_in_window


class _ProviderCore:
    """State and scripting of `FakeProvider`; the HTTP serving lives in the subclass."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prices: Mapping[str, tuple[float, float]] | None = None,
        ledger_path: str | os.PathLike[str] | None = None,
        honour_idempotency: bool = False,
        tls: Certificate | None = None,
    ) -> None:
        self._host = host
        self._tls = tls
        self._honour_idempotency = honour_idempotency
        self._answers: dict[str, _Answer] = {}
        self._keys_in_flight: dict[str, int] = {}
        self._requested_port = port
        self._port: int | None = None
        self._prices: dict[str, tuple[float, float]] = dict(prices or {})
        self._ledger_path = Path(ledger_path) if ledger_path is not None else None
        self._ledger_file: IO[str] | None = None

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._scripts: dict[str, list[Action]] = {}
        self._default: Action = Reply()
        self._failure: _FailureRate | None = None
        self._records: list[_Record] = []
        self._seq = 0
        self._tool_call_seq = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._in_flight_by_model: dict[str, int] = {}
        self._max_in_flight_by_model: dict[str, int] = {}
        self._before_hooks: list[ResponseHook] = []
        self._after_hooks: list[ResponseHook] = []

        self._runner: web.AppRunner | None = None
        self._listener: socket.socket | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the server listens on (valid once started)."""
        if self._port is None:
            raise RuntimeError("FakeProvider is not running")
        return self._port

    @property
    def url(self) -> str:
        """The server root, ``http://HOST:PORT`` (``https://`` when it serves TLS)."""
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``api_base``, ``http://HOST:PORT/v1`` (``https://`` when it serves TLS)."""
        return f"{self.url}/v1"

    # -- scripting ---------------------------------------------------------

    def script(self, model: str, responses: Iterable[Action]) -> None:
        """Queue actions for the next calls to ``model``, consumed in order.

        Appends to anything already queued for that model. Once the queue is
        empty the model falls back to the random failures / default action.

        Args:
            model: The model name as the server sees it (``"gpt-x"`` for
                litellm's ``"openai/gpt-x"``).
            responses: The actions, one per call.
        """
        actions = list(responses)
        for action in actions:
            _check_action(action)
        with self._lock:
            self._scripts.setdefault(model, []).extend(actions)

    def set_default(self, action: Action) -> None:
        """Set what calls get when nothing is scripted (initially ``Reply()``).

        Args:
            action: The action used for every such call.
        """
        _check_action(action)
        with self._lock:
            self._default = action

    def set_failure_rate(
        self,
        rate: float,
        *,
        seed: int | None = None,
        actions: Sequence[Action] | None = None,
        models: Iterable[str] | None = None,
    ) -> None:
        """Make a random fraction of unscripted calls fail.

        For every call not served from a `script` queue, a ``random.Random(seed)``
        draw decides whether it fails and, if so, which of ``actions`` it gets;
        the same seed and call order give the same failing calls.

        Args:
            rate: Probability in ``[0, 1]``; 0 turns random failures off.
            seed: RNG seed (``None``: unseeded).
            actions: Failure actions to pick from; default
                ``[Status(500), Status(429, retry_after=1), Drop()]``.
            models: Only calls to these models can fail (default: all).
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        chosen = tuple(actions) if actions else _DEFAULT_FAILURES
        for action in chosen:
            _check_action(action)
        with self._lock:
            if rate == 0.0:
                self._failure = None
            else:
                self._failure = _FailureRate(
                    rate=rate,
                    rng=random.Random(seed),
                    actions=chosen,
                    models=frozenset(models) if models is not None else None,
                )

    def load_script(self, document: Mapping[str, Any]) -> None:
        """Apply a JSON script document (the ``--script`` / ``POST /_fake/script`` format).

        ``models`` replaces all queued scripts; ``default`` and
        ``failure_rate`` are only changed when present (``"failure_rate":
        null`` turns random failures off)::

            {
              "models": {"gpt-x": [{"type": "status", "code": 429, "retry_after": 1},
                                   {"type": "reply", "content": "hi"}]},
              "default": {"type": "reply"},
              "failure_rate": {"rate": 0.2, "seed": 1,
                               "actions": [{"type": "status", "code": 500}],
                               "models": ["gpt-x"]}
            }

        Args:
            document: The parsed JSON document.

        Raises:
            ValueError: If an action is malformed.
        """
        models = {
            str(model): [action_from_dict(a) for a in actions]
            for model, actions in dict(document.get("models", {})).items()
        }
        default = (
            action_from_dict(document["default"]) if document.get("default") is not None else None
        )
        with self._lock:
            self._scripts = models
            if default is not None:
                self._default = default
        if "failure_rate" in document:
            fr = document["failure_rate"]
            if fr is None:
                self.set_failure_rate(0.0)
            else:
                acts = fr.get("actions")
                self.set_failure_rate(
                    float(fr["rate"]),
                    seed=fr.get("seed"),
                    actions=[action_from_dict(a) for a in acts] if acts else None,
                    models=fr.get("models"),
                )

    def reset(self) -> None:
        """Forget calls, stored answers, scripts, random failures, hooks and concurrency figures.

        The default action goes back to ``Reply()``; the JSONL ledger file (if
        any) is left as is; prices are kept.
        """
        with self._lock:
            self._scripts.clear()
            self._default = Reply()
            self._failure = None
            self._records.clear()
            self._answers.clear()
            self._seq = 0
            self._max_in_flight = self._in_flight
            self._max_in_flight_by_model = {
                m: n for m, n in self._in_flight_by_model.items() if n > 0
            }
            self._before_hooks.clear()
            self._after_hooks.clear()
            self._changed.notify_all()

    # -- hooks ---------------------------------------------------------------

    def on_response(
        self, callback: ResponseHook, *, after_send: bool = False
    ) -> Callable[[], None]:
        """Register a hook called for each call that gets a response.

        With ``after_send=False`` the hook runs right after the response has
        been decided and *before* any byte of it is sent; with
        ``after_send=True`` it runs after the whole body was written and
        flushed (for `Drop`: after the connection was closed). It is not called
        for calls whose client went away first (``client_closed``).

        Hooks run synchronously in the server's thread and block the server
        while they run (so e.g. a hook can SIGKILL a worker process between
        "provider answered" and "the worker recorded it"). Exceptions are
        logged and ignored.

        Args:
            callback: Receives a `Call` snapshot (``finished_at`` is ``None``;
                ``outcome`` and token counts are final).
            after_send: Run after sending instead of before.

        Returns:
            A function that unregisters the hook.
        """
        hooks = self._after_hooks if after_send else self._before_hooks
        with self._lock:
            hooks.append(callback)

        def remove() -> None:
            with self._lock, contextlib.suppress(ValueError):
                hooks.remove(callback)

        return remove

    # -- ledger ----------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """A copy of the ledger, in order of arrival (in-flight calls included)."""
        with self._lock:
            return [r.snapshot() for r in self._records]

    def calls_for(self, model: str) -> list[Call]:
        """The calls to ``model``, in order of arrival."""
        return [c for c in self.calls if c.model == model]

    def paid_calls(self) -> list[Call]:
        """The calls a real provider would bill (outcome in `PAID_OUTCOMES`)."""
        return [c for c in self.calls if c.paid]

    @property
    def max_concurrency(self) -> int:
        """The largest number of chat requests in flight at the same time."""
        with self._lock:
            return self._max_in_flight

    def max_concurrency_for(self, model: str) -> int:
        """The largest number of requests for ``model`` in flight at once."""
        with self._lock:
            return self._max_in_flight_by_model.get(model, 0)

    def max_rate(self, window_s: float = 1.0, *, kernel: bool = True) -> int:
        """The largest number of calls that arrived within any ``window_s`` window.

        Args:
            window_s: Window length in seconds (half-open ``[t, t + window_s)``).
            kernel: Count by the kernel's arrival stamps (`Call.arrived_at`); False counts by
                when the provider's loop got to each request (``received_at``), which bunches
                requests together when the loop was busy.
        """
        return _max_in_window([_arrival(c, kernel) for c in self.calls], window_s)

    def max_rate_for(self, model: str, window_s: float = 1.0, *, kernel: bool = True) -> int:
        """The largest number of calls for ``model`` that arrived within any ``window_s`` window.

        ``kernel`` as in `max_rate`.
        """
        return _max_in_window([_arrival(c, kernel) for c in self.calls_for(model)], window_s)

    @property
    def kernel_stamps(self) -> bool:
        """Whether every call so far has the kernel's arrival stamp (rates count on its clock)."""
        return all(c.kernel_received_at is not None for c in self.calls)

    def wait_until(
        self, predicate: Callable[[list[Call]], bool], timeout: float = 5.0
    ) -> list[Call]:
        """Block until ``predicate(calls)`` holds, re-checking on every ledger change.

        Args:
            predicate: Called with a `calls` snapshot.
            timeout: Seconds to wait at most.

        Returns:
            The snapshot that satisfied the predicate.

        Raises:
            TimeoutError: If it did not hold within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                snapshot = [r.snapshot() for r in self._records]
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("FakeProvider.wait_until: condition not met in time")
                self._changed.wait(remaining)

    async def wait_until_async(
        self,
        predicate: Callable[[list[Call]], bool],
        timeout: float = 5.0,
    ) -> list[Call]:
        """`wait_until` for async code (waits in a worker thread)."""
        return await asyncio.to_thread(self.wait_until, predicate, timeout)

    # -- prices ----------------------------------------------------------------

    @property
    def prices(self) -> dict[str, tuple[float, float]]:
        """``{model: (input_cost_per_token, output_cost_per_token)}`` as given."""
        return dict(self._prices)

    def register_prices_with_litellm(self) -> None:
        """Register `prices` with litellm so its cost accounting knows these models.

        Registers ``openai/<model>`` (and ``<model>`` with provider ``openai``)
        via ``litellm.register_model``, after which ``litellm.completion_cost``
        on a response from this provider is ``input * prompt_tokens + output *
        completion_tokens``. Imports litellm lazily, with
        ``LITELLM_LOCAL_MODEL_COST_MAP=True`` so the import stays offline.
        """
        if "litellm" not in sys.modules:
            os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        import litellm

        entries: dict[str, Any] = {}
        for model, (input_cost, output_cost) in self._prices.items():
            info = {
                "input_cost_per_token": input_cost,
                "output_cost_per_token": output_cost,
                "litellm_provider": "openai",
                "mode": "chat",
                "max_tokens": 1_000_000,
                "max_input_tokens": 1_000_000,
                "max_output_tokens": 1_000_000,
                "supports_function_calling": True,
                "supports_response_schema": True,
            }
            entries[f"openai/{model}"] = dict(info)
            entries[model] = dict(info)
        if entries:
            litellm.register_model(entries)


def _arrival(call: Call, kernel: bool) -> float:
    return call.arrived_at if kernel else call.received_at
