"""Chaos: runs of a 5-step pipeline while the provider fails 20% of calls and workers get SIGKILLed.

One command (``make chaos``, or ``python bench/chaos.py --runs 100``) starts its own Temporal dev
server, the fake provider as a process (20% transient failures: 500, 429 with Retry-After, dropped
connections), and two ``durapipe worker`` processes (``--workers``; ``make chaos`` runs three)
sharing a SQLite checkpoint file. It starts every run once every worker polls, then aims its first
kills: at the worker that sent a paid request, the instant the answer has left that worker's
socket (with checkpoints on, durapipe consumes an answer from the socket only once it is kept;
off, once its HTTP client has read it), four times (each while two poll). The worker runs in
0.2 ms slices until then and stays frozen; it is killed only if Temporal has not recorded the step
yet. Afterwards the harness counts how many of those steps Temporal did retry
(``aimed_kills_in_window``). Then it kills a random worker every 1-3 s, each kill while two
workers poll (so one always works), restarting it each time, until all runs have ended; with
``--min-kills N`` (``make chaos``: 3), a scenario with fewer kills by then starts 20 more runs and
goes on, up to 3 times ``--runs``, and one still short ends with a ``chaos FAILED`` line and exit
status 1. It prints one ``name = value`` per line, counts exact and ratios to 4 decimals.

By default the provider bills every request, as OpenAI-style providers do: a retried step whose
answer was lost is paid again. Each worker process sends its own API key and the provider's ledger
records each request's client port, so the ledger says which process sent what on which
connection. A kill freezes the process (SIGSTOP), notes which of its connections to the provider
hold bytes it has not read, then SIGKILLs it. A request is *in flight at a kill* when the killed
process sent it and had not consumed its answer from the socket at the freeze: the provider had
not finished answering it (``requests_unanswered_at_kills``; a busy provider may pick a request up
only after the freeze: ``unanswered_picked_up_after_freeze``), or some of the answer's bytes were
still in the process's socket (``answers_unread_at_kills``). No system can know that answer
without provider-side idempotency, so a duplicate paid call is acceptable only for such a request:
``duplicates_not_explained_by_in_flight`` counts the others (answers that had reached the worker
and were paid for again) and must be 0. Checkpoints are what keeps it there.
``DURAPIPE_CHECKPOINTS=off`` runs the scenario without them. After the figures come comment
lines (``# kill: ...`` and one per repeated request) saying what explains each repeat
(`bench.chaos_explain`).

``--tls`` serves the provider over ``https://`` with a self-signed certificate the workers trust
as a user trusts a private CA (``SSL_CERT_FILE``); the socket then holds ciphertext, and an answer
is unread while any of its TLS records is.

``--provider deduplicating`` runs the same scenario against a provider (or gateway) that
deduplicates by the ``X-Durapipe-Idempotency-Key`` durapipe sends: it answers a repeated key with
the first answer instead of billing it (``provider_replays``), so even the in-flight duplicates are
not paid. ``--provider both`` (``make chaos``) runs both, the second's figures prefixed ``dedup.``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-fake-chaos")  # the fake provider takes any key


import durapipe as dp  # noqa: E402
from bench.chaos_aim import LedgerTail, step_open, stopped  # noqa: E402
from bench.chaos_explain import Kept, KillNote, explain, last_failures, process_of  # noqa: E402
from durapipe.testing import Call, read_ledger  # noqa: E402
from tests.chain import expected_output, write_chain  # noqa: E402

STEPS = 5
AIM_TRIES = 4  # the first kills, each aimed at an answer the instant it left a socket
STEP_S = 0.0002  # how long an aimed-at worker runs between two looks at its socket
MORE_RUNS = 20  # runs added at a time while a scenario has fewer kills than `min_kills`
MAX_RUNS_FACTOR = 3  # ... up to this many times the runs asked for; then it fails (see `main`)


@dataclass
class Figures:
    """What a chaos scenario measured (see the module docstring for each count)."""

    runs_started: int
    runs_completed: int
    outputs_verified: int
    succeeded_steps: int
    paid_calls: int
    duplicate_paid_calls: int
    requests_in_flight_at_kills: int
    requests_unanswered_at_kills: int
    answers_unread_at_kills: int
    duplicates_not_explained_by_in_flight: int
    provider_replays: int
    worker_kills: int
    aimed_kills: int
    aimed_kills_in_window: int
    wall_s: float
    provider_idempotency: bool = False
    tls: bool = False
    # Of `requests_unanswered_at_kills`: those the provider's handler picked up only after the
    # freeze (sent before it; the process could never read their answer).
    unanswered_picked_up_after_freeze: int = 0
    # One line per kill and per repeated request (see `bench.chaos_explain`): why each happened.
    kills_seen: tuple[str, ...] = ()
    duplicates_seen: tuple[str, ...] = ()
    # When (after the dev server was up) every worker first polled, every run was started, and
    # each batch of runs added for `min_kills`: what a late first kill waited for.
    timeline: tuple[str, ...] = ()

    @property
    def paid_calls_per_succeeded_step(self) -> float:
        return self.paid_calls / self.succeeded_steps if self.succeeded_steps else float("nan")

    def lines(self, prefix: str = "") -> list[str]:
        """``name = value`` lines, each name after ``prefix``."""
        provider = "deduplicates by key" if self.provider_idempotency else "bills every request"
        values: list[tuple[str, object]] = [
            ("provider", provider),
            ("runs_started", self.runs_started),
            ("runs_completed", self.runs_completed),
            ("outputs_verified", self.outputs_verified),
            ("succeeded_steps", self.succeeded_steps),
            ("paid_calls", self.paid_calls),
            ("duplicate_paid_calls", self.duplicate_paid_calls),
            ("requests_in_flight_at_kills", self.requests_in_flight_at_kills),
            ("requests_unanswered_at_kills", self.requests_unanswered_at_kills),
            ("answers_unread_at_kills", self.answers_unread_at_kills),
            ("unanswered_picked_up_after_freeze", self.unanswered_picked_up_after_freeze),
            ("duplicates_not_explained_by_in_flight", self.duplicates_not_explained_by_in_flight),
            ("paid_calls_per_succeeded_step", f"{self.paid_calls_per_succeeded_step:.4f}"),
            ("provider_replays", self.provider_replays),
            ("worker_kills", self.worker_kills),
            ("aimed_kills", self.aimed_kills),
            ("aimed_kills_in_window", self.aimed_kills_in_window),
            ("wall_s", f"{self.wall_s:.1f}"),
            ("provider_tls", "https" if self.tls else "off"),
            ("in_flight_definition", IN_FLIGHT),
        ]
        return [f"{prefix}{name} = {value}" for name, value in values]

    def report(self) -> str:
        """The figures, then every kill and every repeated request with what explains it (or
        does not): what a failed test prints, so CI output alone says why."""
        return "\n".join(
            [
                *self.lines(),
                f"timeline: {'; '.join(self.timeline)}",
                *(f"kill: {line}" for line in self.kills_seen),
                *self.duplicates_seen,
            ]
        )


@dataclass(frozen=True)
class Kill:
    """One kill: the API key the killed process sent, when it was frozen (SIGSTOP, then SIGKILL),
    the local ports of its connections to the provider holding bytes it had not read, and the
    ledger ``seq`` of the answer an aimed kill was aimed at."""

    api_key: str
    at: float
    unread_ports: frozenset[int] = frozenset()
    aimed_at: int | None = None


def api_key_of(call: Call) -> str:
    """The API key a call was sent with (each chaos worker process has its own)."""
    headers = {name.lower(): value for name, value in call.headers.items()}
    return headers.get("authorization", "").removeprefix("Bearer ")


def billed(call: Call, provider_idempotency: bool) -> bool:
    """Whether the provider charged for ``call``.

    A provider that bills every request charges for an answer it produced even when the client
    was gone before the answer was written (``client_closed`` with completion tokens).
    """
    if call.paid:
        return True
    return (
        not provider_idempotency and call.outcome == "client_closed" and call.completion_tokens > 0
    )


def unread_ports(pid: int, remote_port: int) -> frozenset[int]:
    """Local ports of ``pid``'s TCP connections to ``remote_port`` whose receive queue holds bytes
    the process has not read (Linux: ``/proc/PID/fd`` and ``/proc/PID/net/tcp*``)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, queues, inode = fields[1], fields[2], fields[4], fields[9]
            unread = int(queues.split(":")[1], 16)
            if inode in inodes and int(remote.split(":")[1], 16) == remote_port and unread:
                ports.add(int(local.split(":")[1], 16))
    return frozenset(ports)


IN_FLIGHT = (
    "a request the killed process sent (its API key: each worker start has its own, so every "
    "request with it was sent before the freeze) whose answer it had not consumed from its socket "
    "at the freeze: unanswered (the provider finished answering at or after the freeze, including "
    "a request its handler only picked up after it) or unread (answer bytes still in the socket)"
)


def in_flight_at(calls: list[Call], kill: Kill) -> tuple[set[int], set[int]]:
    """The ``seq`` of the requests whose answer the process ``kill`` killed never read:
    ``(unanswered, unread)`` (see `IN_FLIGHT`).

    Every request carrying the process's API key was sent before the freeze (a frozen process
    sends nothing), whatever time the provider's ledger gives it: ``received_at`` is when the
    provider's handler started, which on a busy host can be long after the bytes arrived (a
    handler that starts after the freeze answers a process that can no longer read).
    """
    unanswered, unread = set(), set()
    mine = [c for c in calls if api_key_of(c) == kill.api_key]
    for call in mine:
        if call.finished_at is None or call.finished_at >= kill.at:
            unanswered.add(call.seq)
    for port in kill.unread_ports:
        answered = [c for c in mine if c.peer_port == port and c.seq not in unanswered]
        if answered:
            unread.add(max(answered, key=lambda c: c.finished_at or 0.0).seq)
    return unanswered, unread


def in_flight(calls: list[Call], kills: list[Kill]) -> tuple[set[int], set[int]]:
    """`in_flight_at` over every kill: ``(unanswered, unread)``."""
    unanswered: set[int] = set()
    unread: set[int] = set()
    for kill in kills:
        more_unanswered, more_unread = in_flight_at(calls, kill)
        unanswered |= more_unanswered
        unread |= more_unread
    return unanswered, unread


def duplicate_counts(
    calls: list[Call], kills: list[Kill], provider_idempotency: bool
) -> tuple[int, int, int, int, int]:
    """``(paid_calls, duplicate_paid_calls, requests_unanswered_at_kills, answers_unread_at_kills,
    duplicates_not_explained_by_in_flight)``.

    A key answered ``n`` times (paid, or replayed by a deduplicating provider) was asked ``n - 1``
    times too often; each repeat needs one of that key's answered requests to have been in flight
    at a kill (its answer never read by the process that asked), else it is unexplained: an answer
    that had reached a worker was asked for again.
    """
    unanswered, unread = in_flight(calls, kills)
    answered: dict[str | None, list[Call]] = {}
    for call in calls:
        if billed(call, provider_idempotency) or call.outcome == "replayed":
            answered.setdefault(call.idempotency_key, []).append(call)
    paid = [call for call in calls if billed(call, provider_idempotency)]
    duplicates = len(paid) - len({call.idempotency_key for call in paid})
    lost = unanswered | unread
    unexplained = sum(
        max(0, len(group) - 1 - sum(1 for call in group if call.seq in lost))
        for group in answered.values()
    )
    return len(paid), duplicates, len(unanswered), len(unread), unexplained


class Worker:
    """A ``durapipe worker`` process, killed with SIGKILL and restarted by its own pid."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env, self.logs = name, args, env, logs
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.logs / f"{self.name}-{self.starts}.log"

    def ready(self) -> bool:
        """Whether the worker polls its task queue (a worker killed while starting proves nothing)."""
        return self.process is not None and "worker ready" in self.log.read_text(errors="replace")

    @property
    def api_key(self) -> str:
        """This process's API key: the provider's ledger tells the processes apart by it."""
        return f"sk-fake-chaos-{self.name}-{self.starts}"

    def start(self) -> None:
        self.starts += 1
        log = self.log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "durapipe", "worker", *self.args],
            stdout=subprocess.DEVNULL, stderr=log, env={**self.env, "OPENAI_API_KEY": self.api_key},
        )  # fmt: skip

    def kill(self, provider_port: int, aimed_at: int | None = None) -> Kill | None:
        """Freeze the process (SIGSTOP), note what it had not read from the provider, SIGKILL it."""
        if self.process is None or self.process.poll() is not None:
            return None
        self.process.send_signal(signal.SIGSTOP)
        at = time.time()
        try:
            unread = unread_ports(self.process.pid, provider_port)
        finally:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        return Kill(self.api_key, at, unread, aimed_at)

    def resume(self) -> None:
        """Let a frozen (SIGSTOP) process go on."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def next_answer(
    ledger: LedgerTail, after: int, workers: list[Worker], runs: asyncio.Future[Any]
) -> tuple[Call, Worker] | None:
    """The provider's next paid answer after request ``after`` sent by a worker process that
    polls, and that worker, as soon as the ledger shows one (polled every 2 ms); None once
    ``runs`` have all ended."""
    live = {w.api_key: w for w in workers if w.ready()}
    while not runs.done():
        for call in ledger.new():
            if call.paid and call.seq > after and api_key_of(call) in live:
                return call, live[api_key_of(call)]
        await asyncio.sleep(0.002)
    return None


def freeze_once_read(worker: Worker, call: Call, provider_port: int, timeout: float = 5.0) -> bool:
    """Let ``worker`` run in slices of a fraction of a millisecond (SIGCONT, a pause, SIGSTOP)
    until it has consumed ``call``'s answer from its socket, and leave it frozen there: with
    checkpoints on, that is once the answer is kept (durapipe's reads leave the bytes in the socket
    until then); with them off, once the process's HTTP client has read it. False if it did not
    within ``timeout`` s (still frozen). Polling a process that runs freely, the harness saw the
    bytes go only after the worker had often reported the step to Temporal too (about half of
    `make chaos`'s aimed kills missed); a frozen process cannot race ahead of the look."""
    process = worker.process
    deadline = time.monotonic() + timeout
    while process is not None and process.poll() is None:
        process.send_signal(signal.SIGSTOP)
        stopped(process.pid)
        try:
            if call.peer_port not in unread_ports(process.pid, provider_port):
                return True
        except OSError:
            return False
        if time.monotonic() > deadline:
            return False
        process.send_signal(signal.SIGCONT)
        time.sleep(STEP_S)
    return False


def topic_of(call: Call) -> str | None:
    """The run a chain call belongs to: the topic its prompt carries (every step's prompt embeds
    the answers before it, and so the run's topic)."""
    found = re.search(r"topic \d+", json.dumps(call.messages))
    return found.group(0) if found else None


def in_window(call: Call, result: object) -> bool:
    """Whether a kill aimed at ``call``'s answer landed before Temporal recorded its step: the step
    ended on a later attempt than the one that sent ``call``."""
    if not isinstance(result, dp.RunResult):
        return False
    step = call.model.removeprefix("gpt-")
    return any(
        record.pipe == step and record.attempts > (call.attempt or 1) for record in result.steps
    )


async def until(condition: Callable[[], bool], *, what: str, timeout: float = 120.0) -> None:
    """Poll ``condition`` every 20 ms; fail after ``timeout`` seconds waiting for ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


def all_started(pool: list[Worker]) -> bool:
    """Whether every worker of ``pool`` polls; a worker that exited while starting (nothing has
    killed it yet) fails the run at once, with the sentence it said, not a wait for the timeout."""
    for worker in pool:
        if worker.process is not None and worker.process.poll() is not None and not worker.ready():
            said = worker.log.read_text(errors="replace").strip().splitlines()[-1:] or ["nothing"]
            raise RuntimeError(f"{worker.name} exited while starting; it said: {said[0]}")
    return all(worker.ready() for worker in pool)


def start_provider(
    ledger: Path, failure_rate: float, seed: int, *, idempotent: bool, tls: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    provider = subprocess.Popen(
        [sys.executable, "-m", "durapipe.testing.fake_provider", "--port", "0",
         "--ledger", str(ledger), "--failure-rate", str(failure_rate), "--seed", str(seed),
         *(["--honour-idempotency"] if idempotent else []),
         *(["--tls", str(tls)] if tls is not None else [])],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert provider.stdout is not None
    line = provider.stdout.readline()
    if not line.startswith("listening on "):
        provider.kill()
        raise RuntimeError(f"the fake provider did not start: {line!r}")
    return provider, line.removeprefix("listening on ").strip()


async def chaos(
    runs: int, *, max_kills: int | None, failure_rate: float = 0.2, seed: int = 1,
    kill_every: tuple[float, float] = (1.0, 3.0), workdir: Path, provider_idempotency: bool = False,
    tls: bool = False,
    workers: int = 2,
    min_kills: int | None = None,
) -> Figures:  # fmt: skip
    """Run the scenario and return its figures (see the module docstring)."""
    rng = random.Random(seed)
    ledger = workdir / "ledger.jsonl"
    certificates = workdir / "tls" if tls else None
    provider, base_url = start_provider(
        ledger, failure_rate, seed, idempotent=provider_idempotency, tls=certificates
    )
    provider_port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    server = dp.ops.DevServer(headless=True, log_file=str(workdir / "temporal.log"))
    await asyncio.to_thread(server.start)
    pipeline_file = write_chain(
        workdir / "chain.yaml", base_url, STEPS, timeout="20s",
        retry={"initial_interval": "200ms", "max_interval": "2s", "max_attempts": 30},
    )  # fmt: skip
    # DURAPIPE_CHECKPOINTS=off runs the scenario without checkpoints (to see what they are worth).
    store = "off" if os.environ.get("DURAPIPE_CHECKPOINTS") == "off" else workdir / "cp.sqlite"
    env = {**os.environ, "DURAPIPE_CHECKPOINTS": str(store)}
    if certificates is not None:  # the workers trust the provider as a user trusts a private CA
        env["SSL_CERT_FILE"] = str(certificates / "cert.pem")
    # A bounded worker keeps its event loop responsive: a starved loop misses heartbeats (a second
    # attempt starts while the first still runs) and leaves answers unread when it is killed.
    args = [str(pipeline_file), "--address", server.address, "--task-queue", "chaos"]
    args += ["--max-concurrent", "8"]
    pool = [Worker(f"worker{n}", args, env, workdir) for n in range(1, workers + 1)]

    def polling() -> int:
        return sum(1 for w in pool if w.ready())

    kills: list[Kill] = []
    began, began_at = time.monotonic(), time.time()
    try:
        for worker in pool:
            worker.start()
        await until(lambda: all_started(pool), what="every worker to poll")
        timeline = [f"every worker polls {time.monotonic() - began:+.1f}s"]
        pipeline = dp.load(pipeline_file)
        client = await dp.connect(server.address)
        topics = [f"topic {n}" for n in range(runs)]
        handles = [
            await dp.start(client, pipeline, "chain", {"topic": t}, task_queue="chaos")
            for t in topics
        ]
        waiting = asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
        runs_by_topic = {t: h.run_id for t, h in zip(topics, handles, strict=True)}
        timeline.append(f"{runs} runs started {time.monotonic() - began:+.1f}s")
        # The first kills are aimed at the moment checkpoints are for: at the worker that sent a
        # paid request, the instant its answer has left the socket (with checkpoints on, durapipe
        # consumes it only once it is kept; off, its HTTP client has read it). Temporal has not
        # recorded the step then, unless the worker was quicker than this poll: the run tells
        # afterwards (the step ended on a later attempt: `aimed_kills_in_window`).
        targets: list[Call] = []
        seen, tail = 0, LedgerTail(ledger)
        budget = AIM_TRIES if max_kills is None else min(AIM_TRIES, max_kills)
        while len(targets) < budget and not waiting.done():
            if targets:  # as for random kills: one worker always works while another restarts
                await until(lambda: polling() >= 2, what="two workers to poll")
                tail.new()  # answers that came meanwhile are handled: aim at a fresh one
            aim = await next_answer(tail, seen, pool, waiting)
            if aim is None:
                break
            target, victim = aim
            seen = target.seq
            # Frozen the moment it has consumed the answer; killed only if Temporal has not
            # recorded the step yet (else it goes on and the aim waits for another answer).
            consumed = freeze_once_read(victim, target, provider_port)
            run_id = runs_by_topic.get(topic_of(target) or "")
            step = target.model.removeprefix("gpt-")
            if not consumed or run_id is None or not await step_open(client, run_id, step):
                victim.resume()
                continue
            kill = victim.kill(provider_port, aimed_at=target.seq)
            if kill is None:
                continue
            kills.append(kill)
            targets.append(target)
            victim.start()
        results: list[Any] = []
        while True:
            while not waiting.done() and (max_kills is None or len(kills) < max_kills):
                if kills:
                    await asyncio.wait({waiting}, timeout=rng.uniform(*kill_every))
                if waiting.done():
                    break
                # Kill only while two workers poll, so one always works while another restarts.
                up = [w for w in pool if w.ready()]
                if len(up) < 2:
                    await asyncio.sleep(0.05)
                    continue
                victim = rng.choice(up)
                kill = victim.kill(provider_port)
                if kill is not None:
                    kills.append(kill)
                victim.start()
            results += await asyncio.wait_for(waiting, timeout=600)
            # On a busy host the runs can all end before `min_kills` kills (a replacement worker
            # takes ~25 s to poll, and kills wait for two pollers): the same runs go on, another
            # batch at a time, until the kills have happened (`runs_started` counts them all).
            if (
                min_kills is None
                or len(kills) >= min_kills
                or (max_kills is not None and len(kills) >= max_kills)
                or len(topics) >= MAX_RUNS_FACTOR * runs
            ):
                break
            more = [f"topic {n}" for n in range(len(topics), len(topics) + MORE_RUNS)]
            started = [
                await dp.start(client, pipeline, "chain", {"topic": t}, task_queue="chaos")
                for t in more
            ]
            topics += more
            runs_by_topic.update((t, h.run_id) for t, h in zip(more, started, strict=True))
            waiting = asyncio.gather(*(h.result() for h in started), return_exceptions=True)
            timeline.append(
                f"{MORE_RUNS} runs added with {len(kills)} kills {time.monotonic() - began:+.1f}s"
            )
        wall_s = time.monotonic() - began
        # While the server is up: what Temporal recorded for the runs that paid a step twice.
        failures = await last_failures(
            client, {t: runs_by_topic[t] for t in repeated_topics(read_ledger(ledger)) if t}
        )
    finally:
        for worker in pool:
            worker.stop()
        await asyncio.to_thread(server.stop)
        provider.terminate()
        provider.wait(timeout=20)
    completed = [r for r in results if isinstance(r, dp.RunResult)]
    verified = sum(
        1 for t, r in zip(topics, results, strict=True)
        if isinstance(r, dp.RunResult) and r.output == expected_output(t, STEPS)
    )  # fmt: skip
    succeeded = sum(1 for r in completed for s in r.steps if s.status == "succeeded")
    by_topic = dict(zip(topics, results, strict=True))
    hits = sum(in_window(t, by_topic.get(topic_of(t) or "")) for t in targets)
    calls = read_ledger(ledger)
    paid, duplicates, unanswered, unread, unexplained = duplicate_counts(
        calls, kills, provider_idempotency
    )
    replays = sum(1 for call in calls if call.outcome == "replayed")
    runs = len(topics)  # more than asked when runs were added to reach `min_kills`
    kills_seen, duplicates_seen = explanations(
        calls, kills, store if isinstance(store, Path) else None, provider_idempotency, failures,
        began_at,
    )  # fmt: skip
    figures = Figures(
        runs, len(completed), verified, succeeded, paid, duplicates, unanswered + unread,
        unanswered, unread, unexplained, replays, len(kills), len(targets), hits, wall_s,
        provider_idempotency, tls, picked_up_after_freeze(calls, kills), kills_seen, duplicates_seen,
    )  # fmt: skip
    figures.timeline = tuple(timeline)
    return figures


def picked_up_after_freeze(calls: list[Call], kills: list[Kill]) -> int:
    """How many requests in flight at a kill the provider's handler started only after the
    freeze (the ledger's ``received_at`` is later than the freeze; see `in_flight_at`)."""
    by_seq = {call.seq: call for call in calls}
    late = set()
    for kill in kills:
        unanswered, _ = in_flight_at(calls, kill)
        late |= {seq for seq in unanswered if by_seq[seq].received_at > kill.at}
    return len(late)


def repeated_topics(calls: list[Call]) -> set[str | None]:
    """The runs (by topic) of which a step was answered more than once (paid or replayed)."""
    keys: dict[str | None, int] = {}
    for call in calls:
        if call.paid or call.completion_tokens or call.outcome == "replayed":
            keys[call.idempotency_key] = keys.get(call.idempotency_key, 0) + 1
    return {topic_of(c) for c in calls if keys.get(c.idempotency_key, 0) > 1}


def explanations(
    calls: list[Call], kills: list[Kill], store: Path | None, provider_idempotency: bool,
    failures: dict[tuple[str, str], str], t0: float,
) -> tuple[tuple[str, ...], tuple[str, ...]]:  # fmt: skip
    """One line per kill and one per repeated request, saying what explains it (see
    `bench.chaos_explain`)."""
    notes = []
    for kill in kills:
        unanswered, unread = in_flight_at(calls, kill)
        notes.append(
            KillNote(
                process_of(kill.api_key), kill.at, frozenset(unanswered | unread), kill.aimed_at
            )
        )
    lost: set[int] = set().union(*(note.in_flight for note in notes))
    lines = explain(
        calls, notes, Kept.read(store), billed=lambda c: billed(c, provider_idempotency),
        key_of_process=api_key_of, last_failures=failures, lost=lost, t0=t0,
    )  # fmt: skip
    kills_seen = tuple(
        f"{n.process} frozen {n.at - t0:+.3f}s"
        + (f", aimed at #{n.aimed_at}" if n.aimed_at is not None else "")
        + f", in flight: {' '.join(f'#{s}' for s in sorted(n.in_flight)) or 'none'}"
        for n in notes
    )
    return kills_seen, tuple(lines)


def too_few_kills(figures: Figures, min_kills: int | None) -> str | None:
    """The one line `make chaos` prints (then exits 1) when a scenario had fewer kills than
    ``min_kills``, so its figures are never shown as if they met the bar; None if they do."""
    if min_kills is None or figures.worker_kills >= min_kills:
        return None
    run = "deduplicating" if figures.provider_idempotency else "billing"
    return (
        f"chaos FAILED: the {run} run had {figures.worker_kills} worker kills over "
        f"{figures.runs_started} runs, fewer than --min-kills {min_kills}: its figures above do "
        "not meet the bar"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--max-kills", type=int, default=None, help="stop killing after this many")
    parser.add_argument(
        "--min-kills", type=int, default=None,
        help="add runs (20 at a time, up to 3 times --runs) until this many kills have happened; "
        "exit 1 if a scenario still has fewer",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--workers", type=int, default=2,
        help="worker processes (at least 2; kills wait until two poll, so a third lets kills "
        "come faster than a killed worker restarts)",
    )  # fmt: skip
    parser.add_argument(
        "--provider", choices=["billing", "deduplicating", "both"], default="billing",
        help="billing: bills every request (default); deduplicating: answers a repeated "
        "idempotency key with its first answer; both: one run of each, the second prefixed dedup.",
    )  # fmt: skip
    parser.add_argument(
        "--tls", action="store_true",
        help="serve the provider over https (a self-signed certificate the workers trust)",
    )  # fmt: skip
    options = parser.parse_args()
    modes = {"billing": [False], "deduplicating": [True], "both": [False, True]}[options.provider]
    short: list[str] = []
    for provider_idempotency in modes:
        with tempfile.TemporaryDirectory(prefix="durapipe-chaos-") as tmp:
            figures = asyncio.run(
                chaos(
                    options.runs,
                    max_kills=options.max_kills,
                    seed=options.seed,
                    workdir=Path(tmp),
                    provider_idempotency=provider_idempotency,
                    tls=options.tls,
                    workers=max(2, options.workers),
                    min_kills=options.min_kills,
                )
            )
        prefix = "dedup." if provider_idempotency and options.provider == "both" else ""
        print("\n".join(figures.lines(prefix)), flush=True)
        # Then what explains each kill and each repeated request, as comment lines (scripts that
        # read the figures skip them).
        notes = [f"timeline: {'; '.join(figures.timeline)}"]
        notes += [f"kill: {line}" for line in figures.kills_seen] + list(figures.duplicates_seen)
        print("".join(f"# {prefix}{line}\n" for line in notes), end="", flush=True)
        missed = too_few_kills(figures, options.min_kills)
        if missed:
            short.append(missed)
            print(missed, flush=True)
    if short:
        sys.exit(1)


if __name__ == "__main__":
    main()
