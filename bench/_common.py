"""What the bench scripts share: a dev server, subprocesses stopped by pid, figures as lines, and
side-by-side pairs reduced to the median of their ratios with its spread."""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import math
import os
import pstats
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from temporalio.testing import WorkflowEnvironment

from durapipe.ops._dev import search_attribute_flags, temporal_cli


def figure(name: str, value: float | int | str, *, decimals: int | None = None) -> None:
    """Print one ``name = value`` line (what scripts parse): a float to 3 significant digits, or
    to ``decimals`` places."""
    if isinstance(value, float):
        if decimals is not None:
            value = f"{value:.{decimals}f}"
        else:
            value = f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    print(f"{name} = {value}", flush=True)


def load_average(when: str) -> None:
    """Print the host's load averages (1, 5, 15 minutes) as ``load_average.<when>``: the machine
    is shared, so a reader needs to know how busy it was while the figures were taken."""
    figure(f"load_average.{when}", " ".join(f"{load:.2f}" for load in os.getloadavg()))


def race_between_loads(name: str, race: Coroutine[Any, Any, object], stops: type[Exception]) -> int:
    """Run ``race`` between the host's load averages (`load_average`); a ``stops`` error ends it
    in one sentence on stderr, ``<name> stopped: ...``, and exit status 1 (0 otherwise)."""
    load_average("start")
    try:
        asyncio.run(race)
    except stops as err:
        load_average("end")
        print(f"{name} stopped: {err}", file=sys.stderr)
        return 1
    load_average("end")
    return 0


async def print_profile(work: Callable[[], Awaitable[object]], top: int) -> None:
    """cProfile one call of ``work`` and print its ``top`` functions by own and by total time."""
    profiler = cProfile.Profile()
    profiler.enable()
    await work()
    profiler.disable()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def note(text: str) -> None:
    """Print a comment line scripts skip."""
    print(f"# {text}", flush=True)


@contextlib.asynccontextmanager
async def dev_server(address: str | None) -> AsyncIterator[str]:
    """``address`` if given, else a fresh dev server (the real one) for this bench, stopped after."""
    if address:
        yield address
        return
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        dev_server_log_level="error",
        # Workers refuse a namespace without durapipe's search attributes.
        dev_server_extra_args=search_attribute_flags(),
    )
    try:
        yield env.client.service_client.config.target_host
    finally:
        await env.shutdown()


@contextlib.contextmanager
def process(
    args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (output to ``log``) until the block ends, then SIGTERM it by its own pid."""
    with log.open("ab") as sink:
        child = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_ready(
    child: subprocess.Popen[bytes],
    log: Path,
    ready: str,
    timeout: float | None = None,
    what: str | None = None,
) -> None:
    """Wait until ``ready`` shows in ``log``, for as long as ``child`` runs (or ``timeout``).

    A loaded host can take minutes to start a worker (16-37 s each at load 10-15), so by default
    there is no deadline: the wait ends when the line shows or the process dies. One comment line
    says what it waits for; another each minute says it still does.

    Raises:
        SystemExit: one sentence (no traceback) when the process ended first, naming it, its exit
            code, its log and the log's last line; or when ``timeout`` passed.
    """
    name = what or f"{log.stem} (pid {child.pid})"
    note(f"waiting for {name} to print {ready!r} in {log}")
    began = time.monotonic()
    next_note = began + 60
    while ready not in log.read_text(errors="replace"):
        code = child.poll()
        if code is not None:
            raise SystemExit(
                f"{name} exited with code {code} before it printed {ready!r}; "
                f"its log {log} ends: {_last_line(log)}"
            )
        now = time.monotonic()
        if timeout is not None and now - began > timeout:
            raise SystemExit(
                f"{name} did not print {ready!r} within {timeout:.0f} s; "
                f"its log {log} ends: {_last_line(log)}"
            )
        if now >= next_note:
            note(f"still waiting for {name} after {now - began:.0f} s")
            next_note += 60
        time.sleep(0.05)
    note(f"{name} ready after {time.monotonic() - began:.1f} s")


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(nothing)"


def durapipe_cli(*args: str) -> list[str]:
    """The ``durapipe`` command line of this Python."""
    return [sys.executable, "-m", "durapipe", *args]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used so far, from ``/proc/PID/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def cpu_when_quiet(pid: int, *, quiet_s: float = 0.1, at_most_s: float = 3.0) -> float:
    """`cpu_seconds` of ``pid`` once it has stopped using CPU (no tick over ``quiet_s``), or after
    ``at_most_s``: what a run leaves running in its worker after it returned (logging tasks, cache
    evictions, collections) is that run's cost, not the next run's measured on the same worker,
    nor lost when the next run measured is another worker's."""
    deadline = time.monotonic() + at_most_s
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = cpu_seconds(pid)
        # A thread waiting for a CPU on a busy host spends no tick either: quiet is asleep too.
        if now == last and not runnable(pid):
            return now
        last = now
    return last


def runnable(pid: int) -> bool:
    """Whether a thread of process ``pid`` is running or waiting for a CPU (state ``R``)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            stat = (task / "stat").read_text()
            if stat[stat.rindex(")") + 2] == "R":
                return True
    return False


def dev_servers(tasks: Iterable[Path] | None = None) -> list[int]:
    """The dev servers this bench started (its child processes named ``temporal``), from its
    threads' ``/proc`` folders (``tasks``: these instead)."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir() if tasks is None else tasks:
        try:
            children = (task / "children").read_text().split()
        except OSError:  # a thread that ended meanwhile (the loop's pool lets idle ones go)
            continue
        for child in children:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/comm").read_text().strip() == "temporal":
                    found.append(int(child))
    return found


async def servers_quiet() -> None:
    """Wait until the dev servers this bench started are quiet (at most 1 s): the server's work
    after one side's run (history, visibility) must not fall on the next side's run."""
    for server in dev_servers():
        await cpu_when_quiet(server, at_most_s=1.0)


def balanced_cycle(sides: int) -> list[list[int]]:
    """One cycle of the bench's round orders for ``sides`` sides: a Williams design.

    Over a whole cycle every side runs in every position equally often, runs right after every
    other side equally often (so no side always follows a given other one and pays for what that
    one leaves behind, on its worker or the dev server), and runs before every other side as often
    as after it (so neither side of a ratio is always measured first, on a machine getting busier
    or quieter). ``sides`` rounds for an even number of sides, twice as many for an odd one (the
    rows of a cyclic Latin square, then the same rows reversed).

    Example:
        >>> balanced_cycle(2), balanced_cycle(4)[:2]
        ([[0, 1], [1, 0]], [[0, 1, 3, 2], [1, 2, 0, 3]])
    """
    if sides < 1:
        raise ValueError(f"a round needs at least one side, not {sides}")
    # 0, 1, n-1, 2, n-2, ...: its successive differences are all different mod n.
    first = [0]
    for step in range(1, sides):
        first.append((first[-1] + (step if step % 2 else -step)) % sides)
    rows = [[(side + shift) % sides for side in first] for shift in range(sides)]
    return rows if sides % 2 == 0 else rows + [row[::-1] for row in rows]


def side_order(round_no: int, sides: int) -> list[int]:
    """The order in which round ``round_no`` (from 0) runs ``sides`` sides: row ``round_no`` of
    `balanced_cycle`, over and over (two sides alternate: A B, B A, ...)."""
    cycle = balanced_cycle(sides)
    return cycle[round_no % len(cycle)]


def print_order(name: str, labels: Sequence[str], rounds: int, first: int = 0) -> None:
    """Print ``<name>.order``, the orders of rounds ``first`` to ``first + rounds - 1`` (the
    counted ones; ``labels[i]`` for side ``i``), and a note when ``rounds`` are not whole cycles
    of `balanced_cycle` (the balance holds over whole cycles only)."""
    orders = [side_order(n, len(labels)) for n in range(first, first + rounds)]
    figure(f"{name}.order", " ".join("".join(labels[side] for side in order) for order in orders))
    cycle = len(balanced_cycle(len(labels)))
    if rounds % cycle:
        note(
            f"{name}: {rounds} rounds are not whole cycles of the balanced order ({cycle} rounds "
            f"for {len(labels)} sides): the order is balanced over the first "
            f"{rounds - rounds % cycle} only"
        )


def pair_ratios(ours: Sequence[float], theirs: Sequence[float]) -> list[float]:
    """``ours[i] / theirs[i]`` for each pair (two runs taken side by side in one round).

    Raises:
        ValueError: when the sequences differ in length or a baseline reading is not positive.
    """
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} readings cannot pair with {len(theirs)}")
    if any(value <= 0 for value in theirs):
        raise ValueError(f"a baseline reading is not positive: {list(theirs)}")
    return [mine / base for mine, base in zip(ours, theirs, strict=True)]


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """A distribution-free confidence interval for the median of what ``values`` sample: the
    ``k``-th lowest and ``k``-th highest value, ``k`` the largest whose coverage,
    ``1 - 2 P(Binomial(n, 1/2) < k)``, is at least ``level``; with too few values for ``level``
    (fewer than 6 for 95%), their range. Returns its low and high ends and its coverage.

    Example:
        >>> median_interval([1.0, 2.0, 3.0, 4.0]), median_interval(range(10))[2] > 0.95
        ((1.0, 4.0, 0.875), True)
    """
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        raise ValueError("no values for an interval")

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k < (n + 1) // 2 and coverage(k + 1) >= level:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)


@dataclass(frozen=True)
class Spread:
    """The median of some values, their quartiles (inclusive method), their range and count, and
    the median's confidence interval (`median_interval`: its ends and its coverage)."""

    median: float
    q1: float
    q3: float
    low: float
    high: float
    count: int
    ci_low: float
    ci_high: float
    ci_level: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """The spread of ``values`` (at least one).

        Example:
            >>> Spread.of([1.0, 2.0, 3.0, 4.0, 10.0]).median
            3.0
        """
        if not values:
            raise ValueError("no values to spread")
        if len(values) == 1:
            q1 = q3 = values[0]
        else:
            q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        interval = median_interval(values)
        return cls(
            statistics.median(values), q1, q3, min(values), max(values), len(values), *interval
        )

    def against(self, bar: float, *, least: float = 0.9) -> str:
        """Whether the median's interval resolves the median against ``bar``: all of it at or
        under the bar, all of it over, or the bar inside it (one more run could land either
        side); never resolved with too few pairs for an interval covering ``least``."""
        interval = f"its {self.ci_level:.1%} interval {self.ci_low:.3f}-{self.ci_high:.3f}"
        if self.ci_level < least:
            return f"not resolved: {self.count} pairs are too few ({interval}, under {least:.0%})"
        if self.ci_high <= bar:
            return f"resolved: {interval} is at or under {bar}"
        if self.ci_low > bar:
            return f"resolved: {interval} is over {bar}"
        return f"not resolved: {bar} is inside {interval}"


def paired_ratio(
    name: str,
    ours: Sequence[float],
    theirs: Sequence[float],
    *,
    unit: str,
    leaves: int | None = None,
    sides: tuple[str, str] = ("durapipe", "hand-written"),
) -> Spread:
    """Print ``name`` (the median of the per-pair ratios, 3 decimals), ``name.iqr`` (``q1-q3``),
    ``name.range`` (``low-high``) and ``name.ci`` (the median's confidence interval,
    `median_interval`, with its coverage: ``low-high (96.9%)``), then a note with the exact inputs: each side's total in
    ``unit`` (and the leaves it covers, ``leaves`` per run), the pooled ratio and every pair's
    ratio, so no rounding hides anything."""
    ratios = pair_ratios(ours, theirs)
    spread = Spread.of(ratios)
    figure(name, spread.median, decimals=3)
    figure(f"{name}.iqr", f"{spread.q1:.3f}-{spread.q3:.3f}")
    figure(f"{name}.range", f"{spread.low:.3f}-{spread.high:.3f}")
    figure(f"{name}.ci", f"{spread.ci_low:.3f}-{spread.ci_high:.3f} ({spread.ci_level:.1%})")
    covers = f" over {leaves * spread.count} leaves each" if leaves else ""
    note(
        f"{name}: {sides[0]} {sum(ours):.3f} {unit}, {sides[1]} {sum(theirs):.3f} {unit}{covers}, "
        f"{spread.count} pairs, pooled ratio {sum(ours) / sum(theirs):.4f}; "
        f"per pair: {' '.join(f'{ratio:.4f}' for ratio in ratios)}"
    )
    return spread


def batch_pipe(name: str, concurrency: int) -> str:
    """The YAML of the benches' batch pipe ``name``: the ``ask`` step over a list of questions,
    ``concurrency`` at once (a fragment of a ``pipes:`` mapping)."""
    return f"""
  {name}:
    kind: batch
    inputs:
      questions: list[text]
    over: questions
    item: question
    pipe: ask
    max_concurrency: {concurrency}
"""


def sequence_pipe(name: str, steps: int) -> str:
    """The YAML of the benches' sequence pipe ``name``: ``steps`` ``ask`` steps one after another,
    each asking the run's question (a fragment of a ``pipes:`` mapping)."""
    listed = "".join(f"      - {{pipe: ask, name: s{i}}}\n" for i in range(steps))
    return f"""
  {name}:
    kind: sequence
    inputs: {{question: text}}
    steps:
{listed}"""
