"""Where each worker's Python CPU goes, durapipe beside hand-written, over the same runs.

    make bench-profile
    python -m bench.profile_ab [--part batch1000|seq50|concurrent200] [--rounds 3] [--rate 250]
                               [--py-spy PATH] [--keep DIR] [--top 15]

Each round runs the part once on each side (which goes first alternating, after one warm-up run
each), while py-spy records only the side whose run goes on: attached to its worker process before
the run, stopped once the worker is quiet after it. py-spy samples the thread holding the GIL
(``--gil``), and Python holds the GIL for all of its own work, so the samples are the Python CPU
of each worker; native work done without the GIL (the Temporal core's Rust threads, sqlite's file
I/O) is not sampled. Each side's worker CPU over the same runs is printed beside the samples, so a
reader sees how much of it they cover.

Each worker also reports its garbage collections' CPU (``bench/_gc_probe``): py-spy charges a
collection to whichever frame allocated when it began, so it is printed apart (``gc``), as
microseconds per leaf and the number of collections (and of full ones); those
microseconds are inside the areas' too.

Each sample goes to one area: inside a model call (litellm, the offline model) ``model_call``,
whatever durapipe code wraps the call; in the hand-written worker's own code ``baseline_code``;
else the durapipe module closest to the sample that is not a helper (message models, templates,
redaction: they work for their caller) names it: ``checkpoints`` (the checkpoint store and kept
answers), ``activity``, ``workflow``, ``converter``, ``durapipe_other``; ``messages`` for
durapipe's message models run by the SDK's converter. A sample in no side's code goes to the
library its innermost frame is in (``temporalio``, ``pydantic``, ``protobuf``, ``event_loop``,
``threads``, ``other``; ``native`` when py-spy saw no Python frame; ``gc_probe`` for the probe's
own callback, on both sides). The SDK calls a workflow or an activity makes count as its code's
on both sides alike, so durapipe's ``workflow`` plus ``activity`` does the job the baseline's
``baseline_code`` does. Figures are microseconds per leaf at the sampling rate, with the exact
sample counts beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

import durapipe as dp
from bench import handwritten
from bench.__main__ import Bench, Side, load_pipeline, measure, workers
from bench._common import dev_server, figure, load_average, note, side_order, wait_ready

DEFAULT_PY_SPY = Path(__file__).parent / ".venv-spy" / "bin" / "py-spy"
SIDES = ("durapipe", "handwritten")
# durapipe's modules by area (the first prefix that matches; paths relative to the package).
DURAPIPE_AREAS = (
    ("stores/_checkpoints.py", "checkpoints"),
    ("stores/_answers.py", "checkpoints"),  # kept provider answers: part of no duplicate pay
    ("activities/", "activity"),
    ("stores/_limits.py", "activity"),
    ("adapters/", "activity"),
    ("runtime/", "workflow"),
    ("workflows/", "workflow"),
    ("spec/", "workflow"),
    ("worker.py", "converter"),
    ("security/", "converter"),
    ("stores/_payloads.py", "converter"),
)
# Modules that do work for whoever calls them (message models and their serializers, templates,
# redaction, the store schema): the innermost caller of another module owns their work; with no
# such caller (the SDK's converter encoding a result), it is ``messages``.
HELPER_MODULES = (
    "runtime/_calls.py",
    "spec/_messages.py",
    "spec/_templates.py",
    "spec/_sandbox.py",
    "security/_secrets.py",
    "stores/_schema.py",
)
# Each worker process's entry, which every stack of its passes through: durapipe's CLI, and the
# hand-written worker's main (its module's top level and the bench workers' `bench/_serve.py`).
DURAPIPE_ENTRY = ("cli/", "__main__.py")
BASELINE_ENTRY = "<module>"
BASELINE_SERVE = "_serve.py"
OFFLINE_MODEL = "adapters/_offline.py"  # litellm calls it on both sides: a model call's work
_FRAME = re.compile(r"^(?P<function>.*) \((?P<path>.*):\d+\)$")


@dataclass(frozen=True)
class Libraries:
    """Where the libraries a sample can be in live (absolute folder paths, with a trailing /)."""

    durapipe: str
    bench: str
    model: tuple[str, ...]
    by_area: tuple[tuple[str, str], ...]

    @property
    def offline_model(self) -> str:
        """The offline model's module (litellm calls it on both sides)."""
        return self.durapipe + OFFLINE_MODEL

    @property
    def probe(self) -> str:
        """The collections probe's folder."""
        return self.bench + "_gc_probe/"

    @classmethod
    def here(cls) -> Libraries:
        """The folders of this interpreter's installs (the workers run the same interpreter)."""
        import asyncio as asyncio_module
        import concurrent.futures

        import google.protobuf
        import pydantic
        import pydantic_core
        import temporalio

        import bench
        from durapipe.adapters._litellm import litellm_module

        def folder(module_file: str | None) -> str:
            return os.path.dirname(os.path.abspath(module_file or "")) + "/"

        stdlib = folder(os.__file__)
        return cls(
            durapipe=folder(dp.__file__),
            bench=folder(bench.__file__),
            model=(folder(litellm_module().__file__),),
            by_area=(
                (folder(temporalio.__file__), "temporalio"),
                (folder(pydantic.__file__), "pydantic"),
                (folder(pydantic_core.__file__), "pydantic"),
                (folder(google.protobuf.__file__), "protobuf"),
                (folder(asyncio_module.__file__), "event_loop"),
                (stdlib + "selectors.py", "event_loop"),
                (folder(concurrent.futures.__file__), "threads"),
                (stdlib + "threading.py", "threads"),
                (stdlib + "queue.py", "threads"),
            ),
        )


def frames(stack: str) -> list[tuple[str, str]]:
    """A raw py-spy stack (``function (path:line);...``, outermost first) as (function, path)."""
    found = []
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        if match:
            found.append((match["function"], match["path"]))
    return found


def area(stack: Sequence[tuple[str, str]], libraries: Libraries) -> str:
    """The area of one sample (see the module's docstring)."""
    if not stack:
        return "native"
    paths = [path for _, path in stack]
    if any(p.startswith(libraries.model) or p == libraries.offline_model for p in paths):
        return "model_call"  # wherever durapipe's wrappers around the call are
    if any(p.startswith(libraries.probe) for p in paths):
        return "gc_probe"  # the probe itself (both sides), not either side's code
    serve = libraries.bench + BASELINE_SERVE
    if any(p.startswith(libraries.bench) and f != BASELINE_ENTRY and p != serve for f, p in stack):
        return "baseline_code"  # the baseline's own code, and the durapipe helpers it calls
    helped = False
    for _, path in reversed(stack):  # innermost first: the closest module that is not a helper
        if not path.startswith(libraries.durapipe):
            continue
        module = path[len(libraries.durapipe) :]
        if module.startswith(DURAPIPE_ENTRY):
            break
        if module.startswith(HELPER_MODULES):
            helped = True
            continue
        return next(
            (name for prefix, name in DURAPIPE_AREAS if module.startswith(prefix)),
            "durapipe_other",
        )
    if helped:
        return "messages"
    leaf = stack[-1][1]
    return next((name for prefix, name in libraries.by_area if leaf.startswith(prefix)), "other")


def function_name(frame: tuple[str, str], libraries: Libraries) -> str:
    """``function (module path)``, the path relative to its package's folder when known."""
    name, path = frame
    for root in (libraries.durapipe, libraries.bench):
        if path.startswith(root):
            return f"{name} ({Path(root).name}/{path[len(root) :]})"
    return f"{name} ({Path(path).name})"


@dataclass
class Profile:
    """One side's samples: counts per area and per durapipe (or baseline) function."""

    areas: collections.Counter[str] = field(default_factory=collections.Counter)
    functions: collections.Counter[str] = field(default_factory=collections.Counter)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    gc: Collections = field(default_factory=lambda: Collections(0.0, 0, 0))
    threads: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def samples(self) -> int:
        """Samples in all."""
        return sum(self.areas.values())

    def add(self, raw: Iterable[str], libraries: Libraries) -> None:
        """Count py-spy raw lines (``stack count``) into areas and functions."""
        for line in raw:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            parsed = frames(stack)
            name = area(parsed, libraries)
            self.areas[name] += int(count)
            if name in _CODE_AREAS:
                own = [f for f in parsed if f[1].startswith((libraries.durapipe, libraries.bench))]
                self.functions[function_name(own[-1], libraries)] += int(count)


_CODE_AREAS = {name for _, name in DURAPIPE_AREAS} | {
    "messages",
    "durapipe_other",
    "baseline_code",
}


def report(profiles: Mapping[str, Profile], *, leaves: int, rate: int, top: int, part: str) -> None:
    """Print per-area figures: µs per leaf on each side (samples / rate / leaves) and the
    difference, the exact samples beside; then the CPU each side's worker used over the runs."""
    ours, theirs = profiles[SIDES[0]], profiles[SIDES[1]]

    def us(samples: int) -> float:
        return samples / rate / leaves * 1e6

    figure(f"profile.{part}.leaves_per_side", leaves)
    figure(f"profile.{part}.rate_hz", rate)
    for name, profile in profiles.items():
        sampled = profile.samples / rate
        figure(f"profile.{part}.{name}.samples", profile.samples)
        figure(f"profile.{part}.{name}.python_us_per_leaf", round(us(profile.samples), 1))
        figure(f"profile.{part}.{name}.worker_cpu_us_per_leaf", round(profile.cpu_s / leaves * 1e6))
        figure(f"profile.{part}.{name}.gc_us_per_leaf", round(profile.gc.seconds / leaves * 1e6, 1))
        figure(f"profile.{part}.{name}.gc_collections", profile.gc.count)
        figure(f"profile.{part}.{name}.gc_full_collections", profile.gc.full)
        if not profile.gc.count:
            note(f"{name}: no collection reported: was bench/_gc_probe loaded by its worker?")
        note(
            f"{name}: {sampled:.2f} s of GIL samples of {profile.cpu_s:.2f} s worker CPU "
            f"({sampled / profile.cpu_s:.0%} covered), {profile.wall_s:.2f} s wall"
        )
    figure(
        f"profile.{part}.cpu_ratio", f"{ours.cpu_s / theirs.cpu_s:.3f}" if theirs.cpu_s else "n/a"
    )
    figure(
        f"profile.{part}.samples_ratio",
        f"{ours.samples / theirs.samples:.3f}" if theirs.samples else "n/a",
    )
    names = sorted(
        set(ours.areas) | set(theirs.areas),
        key=lambda n: -(ours.areas[n] - theirs.areas[n]),
    )
    note("area: durapipe us/leaf (samples) | hand-written us/leaf (samples) | difference us/leaf")
    for name in names:
        a, b = ours.areas[name], theirs.areas[name]
        figure(
            f"profile.{part}.area.{name}",
            f"{us(a):.1f} ({a}) | {us(b):.1f} ({b}) | {us(a) - us(b):+.1f}",
        )
    note("worker threads' CPU: durapipe us/leaf | hand-written us/leaf | difference us/leaf")
    for thread in sorted(
        set(ours.threads) | set(theirs.threads),
        key=lambda t: -(ours.threads[t] - theirs.threads[t]),
    ):
        a, b = ours.threads[thread] / leaves * 1e6, theirs.threads[thread] / leaves * 1e6
        figure(
            f"profile.{part}.thread.{thread.replace(' ', '.')}", f"{a:.1f} | {b:.1f} | {a - b:+.1f}"
        )
    for name, profile in profiles.items():
        note(f"{name}'s own functions with the most samples (outside model calls):")
        for function, count in profile.functions.most_common(top):
            note(f"  {us(count):7.1f} us/leaf ({count:5d})  {function}")


@dataclass
class Recorder:
    """Starts and stops py-spy on one worker process around one run."""

    py_spy: Path
    rate: int
    folder: Path
    libraries: Libraries
    runs: int = 0

    @contextlib.contextmanager
    def record(self, pid: int, name: str) -> Iterator[Path]:
        """py-spy on ``pid`` for the block (which starts once py-spy samples); its raw file."""
        self.runs += 1
        out = self.folder / f"{name}-{self.runs}.raw"
        log = self.folder / f"{name}-{self.runs}.py-spy.log"
        with log.open("wb") as sink:
            spy = subprocess.Popen(
                [str(self.py_spy), "record", "--pid", str(pid), "--rate", str(self.rate),
                 "--gil", "--nonblocking", "--full-filenames", "--format", "raw",
                 "--output", str(out)],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_ready(spy, log, "Sampling process", what=f"py-spy on {name}'s worker")
            yield out
        finally:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                spy.wait()
            if not out.exists():
                raise SystemExit(f"py-spy wrote no samples for {name}; its log {log} says why")


GC_PROBE = Path(__file__).parent / "_gc_probe"


@dataclass(frozen=True)
class Collections:
    """A worker's garbage collections so far (`bench._gc_probe`): CPU seconds, how many, how many
    of them full."""

    seconds: float
    count: int
    full: int

    def __sub__(self, before: Collections) -> Collections:
        return Collections(
            self.seconds - before.seconds, self.count - before.count, self.full - before.full
        )

    def __add__(self, more: Collections) -> Collections:
        return Collections(
            self.seconds + more.seconds, self.count + more.count, self.full + more.full
        )


def thread_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """Each of worker ``pid``'s threads so far: its name (``main`` for the interpreter's own
    thread) and the user and system CPU seconds it has used. What the GIL samples do not see (the
    SDK core's Rust threads, sqlite's and the kernel's work with the GIL released) shows here."""
    tick = os.sysconf("SC_CLK_TCK")
    threads = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        name = "main" if task.name == str(pid) else stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        threads[int(task.name)] = (name, int(fields[11]) / tick, int(fields[12]) / tick)
    return threads


def thread_cpu_since(
    before: Mapping[int, tuple[str, float, float]], after: Mapping[int, tuple[str, float, float]]
) -> collections.Counter[str]:
    """CPU seconds by thread name, user and system apart, between two `thread_cpu` readings: each
    thread's own difference (a thread that started since counts from zero; one that ended is
    gone from /proc with what it used, so it counts nothing rather than minus everything)."""
    used: collections.Counter[str] = collections.Counter()
    for tid, (name, user, system) in after.items():
        _, user_before, system_before = before.get(tid, (name, 0.0, 0.0))
        used[f"{name} user"] += user - user_before
        used[f"{name} system"] += system - system_before
    return used


def gc_spent(folder: Path, pid: int) -> Collections:
    """Worker ``pid``'s collections so far (none before its first collection)."""
    try:
        seconds, count, full = (folder / f"gc-{pid}").read_text().split()
    except (FileNotFoundError, ValueError):
        return Collections(0.0, 0, 0)
    return Collections(float(seconds), int(count), int(full))


async def profile(args: argparse.Namespace, folder: Path) -> tuple[dict[str, Profile], int]:
    """Run the part ``args.rounds`` times per side with py-spy on the side's worker; the
    profiles, and the leaves each side ran."""
    libraries = Libraries.here()
    recorder = Recorder(args.py_spy, args.rate, folder, libraries)
    profiles = {name: Profile() for name in SIDES}
    os.environ.setdefault("DURAPIPE_CHECKPOINTS", str(folder / "checkpoints-local.sqlite"))
    pipeline, file = load_pipeline(folder)
    # Both workers (started below, with this environment) report their collections.
    os.environ["BENCH_GC_PROBE"] = str(folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, (str(GC_PROBE), os.environ.get("PYTHONPATH")))
    )
    async with dev_server(args.address) as address:
        queue = f"profile-{uuid.uuid4().hex[:8]}"
        with workers(address, file, folder, queue) as (ours_worker, theirs_worker):
            bench = Bench(
                pipeline,
                Side(await dp.connect(address, pipeline=pipeline), ours_worker.pid, queue),
                Side(await handwritten.connect(address), theirs_worker.pid, queue + "-hw"),
            )
            work = bench.work(args.part)
            runs = (work.ours, work.theirs)
            for run in runs:  # warm-up, not recorded
                await run()
            for round_no in range(args.rounds):
                for side in side_order(round_no, 2):
                    name, pid = SIDES[side], bench.pids[side]
                    gc_before, threads_before = gc_spent(folder, pid), thread_cpu(pid)
                    with recorder.record(pid, name) as out:
                        wall, cpu = await measure(runs[side], pid)
                    profiles[name].threads.update(thread_cpu_since(threads_before, thread_cpu(pid)))
                    profiles[name].cpu_s += cpu
                    profiles[name].wall_s += wall
                    profiles[name].gc += gc_spent(folder, pid) - gc_before
                    with out.open() as raw:
                        profiles[name].add(raw, libraries)
    return profiles, work.leaves * args.rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ab")
    parser.add_argument(
        "--part", choices=("batch1000", "seq50", "concurrent200"), default="batch1000"
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs per side [3]")
    parser.add_argument("--rate", type=int, default=250, help="samples per second [250]")
    parser.add_argument("--py-spy", type=Path, default=DEFAULT_PY_SPY, help="the py-spy binary")
    parser.add_argument("--keep", type=Path, help="keep py-spy's raw files in this folder")
    parser.add_argument("--top", type=int, default=15, help="functions listed per side [15]")
    parser.add_argument("--address", help="an existing Temporal server [default: start one]")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    if not args.py_spy.exists():
        parser.error(f"no py-spy at {args.py_spy}: run `make bench-profile`, or pass --py-spy")
    load_average("start")
    with tempfile.TemporaryDirectory(prefix="durapipe-profile-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        profiles, leaves = asyncio.run(profile(args, folder))
    report(profiles, leaves=leaves, rate=args.rate, top=args.top, part=args.part)
    load_average("end")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
