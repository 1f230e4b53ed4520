"""Provider limits: concurrency, rate and tokens counted across processes, on SQLite and Redis."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from durapipe.adapters import load_yaml
from durapipe.adapters._answers import carries
from durapipe.adapters._held_reads import HeldReads
from durapipe.runtime import ToolCall, Usage
from durapipe.spec import LimitRule, ToolPipe, limits_for, request_limits, resolve
from durapipe.stores import LimitStore, RedisLimits, SqliteLimits, limited
from durapipe.stores import _limits as limits_module
from durapipe.stores._limits import GUARD, POLL_S


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> LimitStore:
    if request.param == "sqlite":
        return SqliteLimits(tmp_path / "limits.sqlite")
    url: str = request.getfixturevalue("redis_url")
    return RedisLimits(url, prefix=f"test:{tmp_path.name}:")


def rule(**fields: object) -> LimitRule:
    return LimitRule.model_validate({"model": "openai/*", **fields})


def test_concurrency_holds_until_a_lease_ends(store: LimitStore) -> None:
    two = [rule(concurrency=2)]
    assert store.try_acquire("a", two, 0, 60) == 0.0
    assert store.try_acquire("b", two, 0, 60) == 0.0
    assert store.try_acquire("c", two, 0, 60) > 0.0
    store.release("a", two, 0)
    assert store.try_acquire("c", two, 0, 60) == 0.0


def test_a_dead_workers_lease_expires_after_its_hold(store: LimitStore) -> None:
    one = [rule(concurrency=1)]
    assert store.try_acquire("crashed", one, 0, 0.3) == 0.0  # never released
    assert store.try_acquire("next", one, 0, 60) > 0.0
    time.sleep(0.4)
    assert store.try_acquire("next", one, 0, 60) == 0.0


def test_rate_counts_starts_in_a_window_and_says_how_long_to_wait(store: LimitStore) -> None:
    three = [rule(rate="3/s")]
    for lease in "abc":
        assert store.try_acquire(lease, three, 0, 60) == 0.0
        store.release(lease, three, 0)  # a finished call still counts towards the rate
    wait = store.try_acquire("d", three, 0, 60)
    assert 0.9 < wait <= 1.0 + GUARD  # the window is 1 s plus the guard, from the first start
    time.sleep(wait)
    assert store.try_acquire("d", three, 0, 60) == 0.0


def test_an_unsent_lease_counts_in_every_window_until_its_request_leaves(
    store: LimitStore,
) -> None:
    one = [rule(rate="1/s")]
    assert store.try_acquire("slow", one, 0, 60, unsent=True) == 0.0
    time.sleep(1.3)  # past the window and its guard: a lease started when taken would be out
    assert 0.0 < store.try_acquire("next", one, 0, 60) <= POLL_S  # unsent: look again soon
    sent = time.time()
    store.sent("slow", one)  # its first bytes left now
    _waits_for_a_lease_from(sent, store.try_acquire("next", one, 0, 60))


def test_a_lease_that_ends_unsent_starts_when_it_ends(store: LimitStore) -> None:
    one = [rule(rate="1/s")]
    assert store.try_acquire("kept", one, 0, 60, unsent=True) == 0.0
    time.sleep(1.3)
    released = time.time()
    store.release("kept", one, 0)  # whatever it may have sent left by now
    _waits_for_a_lease_from(released, store.try_acquire("next", one, 0, 60))
    store.sent("kept", one)  # a late report moves nothing back
    _waits_for_a_lease_from(released, store.try_acquire("next", one, 0, 60))


def _waits_for_a_lease_from(start: float, wait: float) -> None:
    """``wait`` is what a 1/s window leaves after a lease that started at ``start`` or just after
    (not when it was taken, 1.3 s before: that one is out of the window, and there is room now).
    The lower bound takes off the time since ``start``: on a busy host this thread may wait for a
    CPU between the lease and the look."""
    looked = time.time()
    assert 0.0 < wait <= 1.0 + GUARD
    assert wait >= start + 1.0 - looked - 0.01, (wait, looked - start)


async def test_a_held_connection_starts_the_lease_when_its_bytes_leave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "limits.sqlite"
    monkeypatch.setenv("DURAPIPE_LIMITS", str(path))
    call = ToolCall(
        run_id="r", path="t", pipe_name="t", pipe=ToolPipe(function="m:f", timeout=10),
        limits=[rule(kind="tool", model=None, rate="1/s")],
    )  # fmt: skip
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        async with limited(call, None, sent_by_transport=True):
            taken = time.time()
            stream = await HeldReads().connect_tcp("127.0.0.1", port)
            await asyncio.sleep(0.5)  # work between taking room and sending (litellm, a busy host)
            before_send = time.time()
            await stream.write(b"POST / HTTP/1.1\r\n")
            started = await _started(path)  # while the call is still in flight
            seen = time.time()
            await stream.aclose()
    assert taken + 0.5 <= before_send <= started <= seen


async def _started(path: Path) -> float:
    """The lease's start once it is in the past (it is in the future while unsent)."""
    with sqlite3.connect(path) as db:
        for _ in range(200):
            ((started,),) = db.execute("SELECT started FROM leases").fetchall()
            if started <= time.time():
                return float(started)
            await asyncio.sleep(0.025)
    raise AssertionError("the lease was never started")


def test_tokens_count_what_finished_calls_really_used(store: LimitStore) -> None:
    budget = [rule(tokens="100/m")]
    assert store.try_acquire("a", budget, 10, 60) == 0.0  # estimated 10 while in flight
    store.release("a", budget, 95)  # the provider reported 95
    assert store.try_acquire("b", budget, 10, 60) > 0.0  # 95 + 10 > 100
    assert store.try_acquire("b", budget, 5, 60) == 0.0  # 95 + 5 fits


def test_a_call_waits_for_every_limit_it_matches(store: LimitStore) -> None:
    both = [rule(concurrency=5), rule(name="provider", rate="1/m")]
    assert store.try_acquire("a", both, 0, 60) == 0.0
    assert store.try_acquire("b", both, 0, 60) > 50  # the rate of the second limit


def _hold_slots(path: str, leases: int, seen: multiprocessing.Queue[int]) -> None:
    limits = SqliteLimits(path)
    one = [rule(concurrency=3)]
    # Lease ids are unique per call (uuid4 in `limited`): the same id from two racers would be
    # one lease replaced, counted as taken by both.
    taken = sum(
        1 for n in range(leases) if limits.try_acquire(f"{os.getpid()}-{n}", one, 0, 60) == 0.0
    )
    seen.put(taken)


def test_processes_racing_for_slots_take_exactly_the_limit(tmp_path: Path) -> None:
    path = str(tmp_path / "limits.sqlite")
    SqliteLimits(path)  # create the file once, before the race
    seen: multiprocessing.Queue[int] = multiprocessing.Queue()
    racers = [
        multiprocessing.Process(target=_hold_slots, args=(path + "", 4, seen)) for _ in range(3)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert sum(seen.get(timeout=5) for _ in racers) == 3


async def test_limited_calls_never_exceed_the_concurrency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPIPE_LIMITS", str(tmp_path / "limits.sqlite"))
    call = ToolCall(
        run_id="r", path="t", pipe_name="t", pipe=ToolPipe(function="m:f", timeout=10),
        limits=[rule(kind="tool", model=None, concurrency=2)],
    )  # fmt: skip
    flying, most = 0, 0

    async def work() -> None:
        nonlocal flying, most
        async with limited(call, None) as lease:
            flying += 1
            most = max(most, flying)
            await asyncio.sleep(0.05)
            flying -= 1
            lease.used(Usage(input_tokens=3))

    await asyncio.gather(*(work() for _ in range(8)))
    assert most == 2


async def test_a_call_cancelled_while_it_takes_room_gives_the_room_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store is written on a thread (a busy SQLite file, a Redis round trip): a call cancelled
    # meanwhile (a timeout, a cancelled run, the next model of a waterfall never asked) must not
    # leave the room the thread then takes held until the lease's hold runs out.
    real = SqliteLimits(tmp_path / "limits.sqlite")
    entered, go, taken = threading.Event(), threading.Event(), threading.Event()

    class Busy:
        def try_acquire(self, *args: object, **kwargs: object) -> float:
            entered.set()
            go.wait(10)
            try:
                return real.try_acquire(*args, **kwargs)  # type: ignore[arg-type]
            finally:
                taken.set()

        sent = real.sent
        release = real.release

    monkeypatch.setattr(limits_module, "configured_limits", Busy)
    one = [rule(kind="tool", model=None, concurrency=1)]
    call = ToolCall(
        run_id="r", path="t", pipe_name="t", pipe=ToolPipe(function="m:f", timeout=30),
        limits=one,
    )  # fmt: skip

    async def hold() -> None:
        async with limited(call, None):
            await asyncio.Event().wait()

    task = asyncio.create_task(hold())
    assert await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    go.set()
    assert await asyncio.to_thread(taken.wait, 10)
    # The lease's hold is 35 s: room within a few seconds means it was given back.
    deadline = time.monotonic() + 5
    while real.try_acquire("next", one, 0, 60) > 0.0:
        assert time.monotonic() < deadline, "the cancelled call kept its room"
        await asyncio.sleep(POLL_S)


def test_resolve_keeps_the_limits_a_run_needs_and_calls_get_theirs() -> None:
    pipeline = load_yaml("""
limits:
  - {model: "openai/gpt-*", concurrency: 2}
  - {provider: anthropic, rate: 5/s}
  - {kind: tool, rate: 10/m, name: search-api}
models: {fast: openai/gpt-4o-mini}
pipes:
  ask: {kind: llm, model: fast, prompt: hi}
""")
    spec = resolve(pipeline, "ask")
    assert [r.bucket for r in spec.limits] == ["model=openai/gpt-*"]
    assert limits_for(spec.pipes["ask"], spec.limits) == spec.limits


def test_a_limit_on_a_fallback_or_an_ocr_or_image_model_holds_for_those_requests() -> None:
    pipeline = load_yaml("""
limits:
  - {model: "openai/gpt-*", concurrency: 2}
  - {provider: anthropic, rate: 5/s}
  - {provider: mistral, rate: 1/s, name: mistral}
  - {provider: mistral, concurrency: 9, name: mistral}
  - {model: "openai/dall-e-*", concurrency: 1}
  - {kind: tool, rate: 10/m, name: search-api}
  - {provider: cohere, rate: 1/s}
pipes:
  run: {kind: sequence, steps: [{pipe: ask}, {pipe: read, result: pages}, {pipe: draw}, {pipe: look}]}
  ask: {kind: llm, model: openai/gpt-4o, fallbacks: [anthropic/claude-3-5-haiku-latest], prompt: hi}
  read: {kind: extract, inputs: {doc: document}, model: mistral/mistral-ocr-latest}
  draw: {kind: image, prompt: a cat, model: openai/dall-e-3}
  look: {kind: tool, function: "m:f"}
""")
    spec = resolve(pipeline, "run")
    # A rule that matches only a fallback, an OCR or an image model is kept for the run; one
    # that matches no request of it (cohere) is not.
    assert "provider=cohere" not in [r.bucket for r in spec.limits]
    assert len(spec.limits) == 6
    ask = limits_for(spec.pipes["ask"], spec.limits)
    assert [r.bucket for r in ask] == ["model=openai/gpt-*", "provider=anthropic"]
    # Each request takes the limits of its own model only.
    assert request_limits(ask, "llm", "openai/gpt-4o") == ask[:1]
    assert request_limits(ask, "llm", "anthropic/claude-3-5-haiku-latest") == ask[1:]
    # One limit per name per request: the first rule of that name.
    read = request_limits(spec.limits, "extract", "mistral/mistral-ocr-latest")
    assert [(r.bucket, r.rate) for r in read] == [("mistral", spec.limits[2].rate)]
    draw = limits_for(spec.pipes["draw"], spec.limits)
    assert [r.bucket for r in draw] == ["model=openai/dall-e-*"]
    # A tool call names no model: only rules without provider or model criteria hold for it.
    assert [r.bucket for r in limits_for(spec.pipes["look"], spec.limits)] == ["search-api"]
    assert request_limits(spec.limits, "tool", None) == limits_for(spec.pipes["look"], spec.limits)


def test_llm_requests_through_durapipes_transport_are_the_ones_it_starts_when_sent() -> None:
    # OpenAI-compatible requests go through `KeepAnswers` (which reports the bytes leaving);
    # litellm reaches other providers through its own clients, so their leases start when taken.
    assert carries("openai/gpt-4o-mini", {"api_base": "http://127.0.0.1:9/v1"})
    assert carries("openai/gpt-4o-mini", {})
    assert not carries("anthropic/claude-3-5-haiku-latest", {})
    assert not carries("durapipe/offline", {})
