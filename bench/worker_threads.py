"""Where a worker's CPU time goes, thread by thread, read natively: durapipe's worker beside the
minimal hand-written one (`bench.handwritten`) and the one with durapipe's features
(`bench.handwritten_features`), the same runs, one dev server, the sides alternating.

    python -m bench.worker_threads [--shape batch1000|seq50] [--rounds 6] [--address HOST:PORT]
                                   [--variant NAME=VALUE ...] [--hash-seed N]

The three workers are ``make bench``'s (`bench.__main__.workers`, `features_worker`) and so are the
runs (`Bench.work`): a warm-up round, then ``--rounds`` rounds, each running every side once in the
balanced order (`bench._common.side_order`), each run measured from a quiet worker and dev server
until its worker is quiet again (`measure`'s windows). Every worker process starts with a
``sitecustomize`` that names each Python thread (``/proc/.../comm``) after its Python name, so
the kernel's per-thread counters can be told apart:

- ``main``: the interpreter's main thread (the event loop: activities, the bridge's Python side);
- ``py:workflow``: temporalio's workflow threads (``temporal_workflow_*``), where workflows run;
- ``py:executor``: the loop's default pool (``asyncio_*``), where litellm runs the synchronous
  ``completion`` half of every ``acompletion`` and stores go with ``to_thread``;
- ``py:<name>``: any other Python thread (``durapipe-wal``: the checkpoint store's WAL copier);
- the Rust core's threads by their own names (``tokio-runtime-w``, ``temporal-real-s``, ...);
- ``exited``: what threads that ended during a run used (the process's total, ``/proc/PID/stat``,
  less its live threads'; in clock ticks, counted as user time and CPU).

Per leaf, for every group and side: CPU from ``schedstat`` (ns-exact), user and system time (clock
ticks), timeslices (how often its threads were scheduled in: wake-ups), voluntary and involuntary
context switches, page faults, and its threads; then durapipe minus each baseline with the spread over rounds
(median, lowest, highest of the per-round differences).

``--variant NAME=VALUE`` (repeatable) races other sides instead of the features baseline: a second
pair of workers, durapipe's with the variables changed (``DURAPIPE_CHECKPOINTS=off``) and a twin
of the minimal baseline, and prints durapipe minus the variant (what the change saves) and the
minimal baseline minus its twin (how much two identical workers differ: the floor to judge by).
``--hash-seed N`` starts every worker with ``PYTHONHASHSEED=N`` (a random seed each, otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("cpu_us", "user_us", "system_us", "slices", "voluntary", "involuntary", "faults")
# Python thread names (prefixes) and the group each names (``/proc/.../comm`` keeps 15 bytes).
PYTHON_GROUPS = {"temporal_workflow_": "py:workflow", "asyncio_": "py:executor"}
SITECUSTOMIZE = """
import threading

_bootstrap = threading.Thread._bootstrap_inner


def _named(self):
    try:
        from bench.worker_threads import comm_name

        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(comm_name(self.name))
    except OSError:
        pass
    _bootstrap(self)


threading.Thread._bootstrap_inner = _named
"""
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def comm_name(python_name: str) -> str:
    """The kernel's name for a Python thread named ``python_name``: its group for the pools
    (``py:workflow``, ``py:executor``), else ``py:`` and its name, cut to 15 bytes."""
    for prefix, group in PYTHON_GROUPS.items():
        if python_name.startswith(prefix):
            return group
    return f"py:{python_name}"[:15]


@dataclass(frozen=True)
class Counts:
    """One thread's counters (or a group's sums): CPU (µs, from ``schedstat``), user and system
    time (µs, in clock ticks), timeslices, voluntary and involuntary context switches, page
    faults (minor and major)."""

    cpu_us: float = 0.0
    user_us: float = 0.0
    system_us: float = 0.0
    slices: int = 0
    voluntary: int = 0
    involuntary: int = 0
    faults: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f) + getattr(other, f) for f in FIELDS))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f) - getattr(other, f) for f in FIELDS))


def parse_thread(stat: str, schedstat: str, status: str) -> tuple[str, Counts]:
    """A thread's name and counters from its ``stat``, ``schedstat`` and ``status`` files."""
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    after = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces
    ran_ns, _, slices = schedstat.split()[:3]
    switches = {
        key: int(value)
        for key, _, value in (line.partition(":") for line in status.splitlines())
        if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
    }
    return name, Counts(
        int(ran_ns) / 1000,
        int(after[11]) * TICK_US,
        int(after[12]) * TICK_US,
        int(slices),
        switches.get("voluntary_ctxt_switches", 0),
        switches.get("nonvoluntary_ctxt_switches", 0),
        int(after[7]) + int(after[9]),
    )


def group_of(pid: int, tid: int, name: str) -> str:
    """The group a thread's counts go to: ``main`` for the interpreter's own, else its name."""
    return "main" if tid == pid else name


Threads = dict[int, tuple[str, Counts]]


def read_threads(pid: int) -> tuple[Threads, float]:
    """Each live thread of ``pid`` (its group and counters), and the process's CPU time (µs,
    ended threads' included)."""
    threads: Threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            texts = [(task / f).read_text() for f in ("stat", "schedstat", "status")]
        except OSError:  # the thread ended meanwhile
            continue
        name, counts = parse_thread(*texts)
        threads[int(task.name)] = (group_of(pid, int(task.name), name), counts)
    stat = Path(f"/proc/{pid}/stat").read_text()
    after = stat[stat.rindex(")") + 2 :].split()
    return threads, (int(after[11]) + int(after[12])) * TICK_US


@dataclass(frozen=True)
class Window:
    """What one run cost a worker, by group, and how many threads each group had at its end."""

    groups: dict[str, Counts]
    threads: Counter[str]


def spent(before: tuple[Threads, float], after: tuple[Threads, float]) -> Window:
    """The counts by group between two `read_threads`; a thread born meanwhile counts from zero,
    and what ended threads used (ticks only) goes to ``exited``."""
    (old, old_total), (new, new_total) = before, after
    groups: dict[str, Counts] = {}
    threads: Counter[str] = Counter()
    for tid, (group, counts) in new.items():
        start = old[tid][1] if tid in old and old[tid][0] == group else Counts()
        groups[group] = groups.get(group, Counts()) + (counts - start)
        threads[group] += 1
    live = sum(c.user_us + c.system_us for c in groups.values())
    gone = (new_total - old_total) - live
    if gone > TICK_US:  # ticks are counted per thread: sums may differ by rounding
        groups["exited"] = Counts(cpu_us=gone, user_us=gone)
    return Window(groups, threads)


def per_leaf(windows: Sequence[Window], leaves: int) -> dict[str, Counts]:
    """The windows' counts by group, summed and divided by their leaves."""
    total: dict[str, Counts] = {}
    for window in windows:
        for group, counts in window.groups.items():
            total[group] = total.get(group, Counts()) + counts
    n = leaves * len(windows) or 1
    return {g: Counts(*(getattr(c, f) / n for f in FIELDS)) for g, c in total.items()}


def differences(
    ours: Sequence[Window], theirs: Sequence[Window], group: str, leaves: int
) -> list[float]:
    """Per round, durapipe's minus the baseline's CPU µs per leaf in ``group`` (``*``: all)."""

    def cpu(window: Window) -> float:
        picked = window.groups.values() if group == "*" else [window.groups.get(group, Counts())]
        return sum(c.cpu_us for c in picked)

    return [(cpu(a) - cpu(b)) / leaves for a, b in zip(ours, theirs, strict=True)]


def table(
    windows: Mapping[str, Sequence[Window]], leaves: int, pairs: Sequence[tuple[str, str]]
) -> list[str]:
    """Per group, each side's counts per leaf, then each pair's difference (``a - b``) in CPU µs
    per leaf: the median, lowest and highest of the rounds' differences. The groups go by the
    size of the first pair's difference, ``total`` last."""
    figures = {side: per_leaf(runs, leaves) for side, runs in windows.items()}
    groups = sorted({g for f in figures.values() for g in f})
    zero = Counts()
    first, second = pairs[0]

    def gap(group: str) -> float:
        return figures[first].get(group, zero).cpu_us - figures[second].get(group, zero).cpu_us

    lines = [f"{'group':16s} {'side':12s} {'cpu_us':>8s} {'user_us':>8s} {'sys_us':>8s} "
             f"{'slices':>7s} {'vol_cs':>7s} {'invol_cs':>8s} {'faults':>7s} {'threads':>7s}   (per leaf)"]  # fmt: skip
    for group in [*sorted(groups, key=lambda g: -abs(gap(g))), "*"]:
        for side, runs in windows.items():
            if group == "*":
                counts = sum(figures[side].values(), zero)
                count = statistics.median(sum(w.threads.values()) for w in runs)
            else:
                counts = figures[side].get(group, zero)
                count = statistics.median(w.threads[group] for w in runs)
            label = "total" if group == "*" else group
            lines.append(
                f"{label:16s} {side:12s} {counts.cpu_us:8.1f} {counts.user_us:8.1f} "
                f"{counts.system_us:8.1f} {counts.slices:7.2f} {counts.voluntary:7.2f} "
                f"{counts.involuntary:8.2f} {counts.faults:7.2f} {count:7.0f}"
            )
        for a, b in pairs:
            diffs = differences(windows[a], windows[b], group, leaves)
            each = f"; by round {' '.join(f'{d:+.0f}' for d in diffs)}" if group == "*" else ""
            lines.append(
                f"{'':16s} {a} - {b}: {statistics.median(diffs):+.1f} µs CPU/leaf "
                f"(rounds {min(diffs):+.1f} to {max(diffs):+.1f}{each})"
            )
    return lines


def sitecustomize(folder: Path) -> dict[str, str]:
    """Write the thread-naming ``sitecustomize`` into ``folder``; the environment that loads it
    (and this package) in every Python process started with it."""
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    root = str(Path(__file__).resolve().parent.parent)
    paths = [str(folder), root, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


async def run(args: argparse.Namespace, work: Path) -> None:
    """Start the workers, run the rounds, print the table."""
    import uuid

    import durapipe as dp
    from bench import handwritten
    from bench.__main__ import Bench, Side, Work, features_worker, load_pipeline, workers
    from bench._common import (
        cpu_when_quiet,
        dev_server,
        load_average,
        note,
        print_order,
        servers_quiet,
        side_order,
        wait_ready,
    )

    os.environ.update(sitecustomize(work))
    if args.hash_seed is not None:  # every worker's: str hashes (dict and set layouts) alike
        os.environ["PYTHONHASHSEED"] = str(args.hash_seed)
    pipeline, file = load_pipeline(work)
    variant = dict(args.variant)
    async with dev_server(args.address) as address:
        queue = f"threads-{uuid.uuid4().hex[:8]}"

        async def pair(ours: int, theirs: int, queue: str) -> Bench:
            return Bench(
                pipeline,
                Side(await dp.connect(address, pipeline=pipeline), ours, queue),
                Side(await handwritten.connect(address), theirs, queue + "-hw"),
            )

        with contextlib.ExitStack() as stack:
            ours, theirs = stack.enter_context(workers(address, file, work, queue))
            bench = await pair(ours.pid, theirs.pid, queue)
            if variant:  # a second pair: durapipe with the variables changed, a twin baseline
                twin = work / "twin"
                twin.mkdir()
                ours2, theirs2 = stack.enter_context(
                    workers(address, file, twin, queue + "-v", env=variant)
                )
                other = await pair(ours2.pid, theirs2.pid, queue + "-v")
                sides = {"durapipe": ours.pid, "handwritten": theirs.pid, "variant": ours2.pid,
                         "handwritten2": theirs2.pid}  # fmt: skip
                parts: tuple[Work, ...] = bench.work(args.shape), other.work(args.shape)
                runs = [parts[0].ours, parts[0].theirs, parts[1].ours, parts[1].theirs]
                pairs = [("durapipe", "handwritten"), ("variant", "handwritten2"),
                         ("durapipe", "variant"), ("handwritten", "handwritten2")]  # fmt: skip
            else:
                featured = stack.enter_context(features_worker(address, work, queue, race=True))
                assert featured is not None
                wait_ready(featured, work / "handwritten-features-worker.log", "worker ready")
                bench.features = Side(await handwritten.connect(address), featured.pid,
                                      queue + "-hwf")  # fmt: skip
                sides = {"durapipe": ours.pid, "handwritten": theirs.pid, "features": featured.pid}
                parts = (bench.work(args.shape),)
                runs = [parts[0].ours, parts[0].theirs, parts[0].features]  # type: ignore[list-item]
                pairs = [("durapipe", "handwritten"), ("durapipe", "features")]
            names = list(sides)
            windows: dict[str, list[Window]] = {side: [] for side in names}
            labels = list("ABCD")[: len(names)]
            print_order(f"threads.{args.shape}", labels, args.rounds, first=1)
            for round_no in range(args.rounds + 1):
                for index in side_order(round_no, len(names)):
                    pid = sides[names[index]]
                    await servers_quiet()
                    await cpu_when_quiet(pid)
                    before = read_threads(pid)
                    await runs[index]()
                    await cpu_when_quiet(pid)
                    if round_no:
                        windows[names[index]].append(spent(before, read_threads(pid)))
                load_average(f"round{round_no}")
            note(
                "sides: "
                + ", ".join(f"{label} {n}" for label, n in zip(labels, names, strict=True))
            )
            note(f"{args.shape}: {args.rounds} rounds of {parts[0].leaves} leaves per side; "
                 f"variant: durapipe's worker with {variant or 'nothing'} changed")  # fmt: skip
            print("\n".join(table(windows, parts[0].leaves, pairs)), flush=True)


def variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant takes NAME=VALUE, not {text!r}")
    return name, value


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the table (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.worker_threads", description=__doc__)
    parser.add_argument("--shape", default="batch1000", choices=("batch1000", "seq50"))
    parser.add_argument("--rounds", type=int, default=6, help="counted rounds [6: one cycle]")
    parser.add_argument("--address", help="an existing Temporal server [default: start one]")
    parser.add_argument(
        "--variant",
        type=variable,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="race a second durapipe worker with this variable set, and a twin baseline",
    )
    parser.add_argument(
        "--hash-seed", type=int, help="PYTHONHASHSEED of every worker [random, as make bench]"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="durapipe-threads-") as folder:
        asyncio.run(run(args, Path(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
