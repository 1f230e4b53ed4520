"""Instructions per leaf of a whole worker process, durapipe's beside the minimal hand-written one,
counted by valgrind (callgrind) on every thread, and the Python bytecodes each function runs:
measures that load does not move.

    python -m bench.worker_instructions [--leaves 200] [--concurrency 100] [--rounds 1]
                                        [--only callgrind|bytecodes] [--cache-sim] [--top 15]
                                        [--keep DIR] [--address HOST:PORT]
    python -m bench.worker_instructions --report DIR [--leaves N] [--rounds N] [--top N]
    python -m bench.worker_instructions --only callgrind --concurrency 20 --pad BYTES
    python -m bench.worker_instructions --shape concurrent|seq [--baseline minimal|features] ...
    python -m bench.worker_instructions --worker-heartbeat SECONDS|off ...

Both bench workers (``durapipe worker`` on a batch pipeline, `bench.handwritten`) run against one
dev server (a fresh one unless ``--address``), one after the other, each twice: under ``valgrind
--tool=callgrind --separate-threads=yes --instr-atstart=no``, then under a bytecode counter (a
``sys.settrace`` opcode tracer, `traced`). Each gets one uncounted warm-up batch, then ``--rounds``
counted batches of ``--leaves`` items, ``--concurrency`` at once (``make bench``'s batch1000
shape, smaller); with ``--shape concurrent``, ``--leaves`` one-step runs instead, started one
after another and then awaited at once (``concurrent200``'s shape: a run per leaf, so the tables
are per run; the primer is ``2 x --concurrency`` such runs); with ``--shape seq``, one run of
``--leaves`` llm steps in sequence (``seq50``'s shape: the tables are per step; the primer is a
run of 10 steps). ``--baseline features`` counts
`bench.handwritten_features` (the minimal worker plus durapipe's features: UI summaries,
heartbeats, the pipe at the start, totals upserted) in the ``handwritten`` columns instead of the
minimal `bench.handwritten`. Counting starts just before a counted batch starts (``callgrind_control -z``, the
worker instrumented since the end of its warm-up, ``-i on``, and primed with an uncounted batch,
`instrumented`; SIGUSR1 to the tracer) and ends once its
worker is quiet after it (no CPU tick for 0.5 s), so imports, start-up and the warm-up are not
counted, and what a batch leaves running (logging, collections) is; then the counts are dumped per
thread (``callgrind_control -d``; SIGUSR2). durapipe's worker sends its worker heartbeat every
``--worker-heartbeat`` seconds (60 unless told: temporalio's default, the baselines'; durapipe's
own 5 s beats would fall on a batch that lasts minutes under valgrind as a real run's never do).

It prints per leaf (counts over the counted leaves), durapipe minus hand-written, the ``--top``
places of each table by the size of the difference:

- instructions by thread group: ``event loop`` (the main thread: asyncio, the activities, the
  bridge's Python side), ``python threads`` (the others that run Python: temporalio's workflow
  threads, where the workflows run, and the loop's default pool, where litellm runs the
  synchronous ``completion`` half of every ``acompletion``), ``temporal core`` (threads running
  only the Rust core, ``temporal_sdk_bridge``: gRPC, its gzip), ``other``;
- by library (the shared object the work is in; ``python`` is the interpreter, so a Python
  function's work shows there as the interpreter's C functions, and in the bytecode tables below
  under its own name);
- by function (``library:function``), self cost; callgrind's inclusive costs are no use in an
  interpreter (every Python call nests the eval loop, so every frame includes every other), so
  the inclusive table is ``entered from Python``: what the interpreter's calls into another
  library cost, that library's callees included (``_ctypes:PyCFuncPtr_call``: a ctypes call with
  the C function it calls);
- Python bytecodes by thread group (``event loop``, ``python threads``), by package (``durapipe``,
  ``temporalio``, ``litellm``, ``stdlib:asyncio``, ...) and by function (its own bytecodes).

``--pad BYTES`` prices a payload byte: durapipe's llm pipe takes one more text input, ``pad``,
which its prompt reads without rendering any of it, and every item of the batch gets the same
``BYTES`` letters and digits in it (seeded random bytes in base64: they compress as such text
does), so each leaf's activity input is ``BYTES`` longer (through the workflow's encoding, the
core's gzip both ways, the activity's decoding) and nothing else changes: the rendered messages,
the checkpoint key and the model's work are the same. Compare durapipe's counts of a ``--pad 0``
run with a ``--pad N`` run's (the hand-written side is unchanged, so the printed difference to it
includes the padding).

``--cache-sim`` has callgrind simulate this host's caches and branch predictors too (`CACHES`: the
core's 32 KiB L1 instruction and data caches, its 1 MiB L2 as the last level; valgrind's
predictors) and prints, per leaf, every simulated event (data reads and writes, misses of each
cache, conditional and indirect branches and their mispredictions), the misses by kind and an
estimated cycle count (`MODEL`), then by library and by function where they differ: the host's
VM has no hardware counters, so this is the only reading of misses there is. A simulation, not the
machine: one cache for all threads (valgrind runs one at a time), no prefetchers, TLB or kernel,
and its caches start the counted batch empty (filling 1 MiB is some 16k misses over
a batch, under 100 a leaf). About twice as slow as counting
instructions: use ``--concurrency 20``, else a wave of 100 calls under valgrind outlasts durapipe's
20 s heartbeat timeout and its activities are retried (the note after the run says so).

The kernel's side (system calls, page faults, scheduling) and waits are not counted by either;
instructions are not time (a cache miss costs more than an add) and a bytecode is not an
instruction (from a few to thousands), but three runs of one worker on one batch shape gave the
same count within 0.1 % here, where CPU time on this shared host moves by 10 % or more. Across
shapes and loads a whole worker's count moves more: how the completions are batched into workflow
tasks depends on timing (each counted run's tasks are printed), and a collection of the oldest
generation may fall in a counted batch or not. Under valgrind a worker runs
~50 times slower and one thread at a time, so the harness starts the runs with a 120 s workflow
task timeout (the product's timeouts are untouched); a counted history with a timed-out or failed
task would carry a retry's work, and is reported. ``--keep DIR`` keeps the files (``--report
DIR`` prints the tables again; ``callgrind_annotate DIR/durapipe.1-01`` reads one thread's). It
needs valgrind (``apt-get install valgrind``); 2 x 100 leaves take about 5 minutes under
callgrind, 2 more under the bytecode counter.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

SIDES = ("durapipe", "handwritten")
# --baseline: the hand-written worker counted as the ``handwritten`` side.
BASELINES = {"minimal": "bench.handwritten", "features": "bench.handwritten_features"}
TOOLS = ("callgrind", "bytecodes")
THREAD_GROUPS = {"loop": "event loop", "threads": "python threads"}
# Workflow task timeout of the measured runs: a task of a 100-wide batch under valgrind takes
# seconds, over temporalio's 10 s default on a busy host (the server caps it at 120 s).
TASK_TIMEOUT = timedelta(seconds=120)
# Steps of `--shape seq`'s uncounted primer run (one step at a time: a short run primes it).
SEQ_PRIMER = 10
PYTHON_OBJECTS = re.compile(r"^(lib)?python3")
RECURSION = re.compile(r"'\d+$")  # callgrind's recursion level suffix (f'2)
# Name lines and the table each compresses into (cob, cfn, cfi share ob's, fn's, fl's).
NAMES = {"ob": "ob", "fn": "fn", "fl": "fl", "fi": "fl", "fe": "fl", "cob": "ob", "cfn": "fn",
         "cfi": "fl", "cfl": "fl"}  # fmt: skip


# --- callgrind's output -----------------------------------------------------------------------


@dataclass
class Costs:
    """One thread's counts from one callgrind file: instructions by function (``object:name``),
    its own (``own``) and with its callees' (``inclusive``)."""

    own: Counter[str] = field(default_factory=Counter)
    entries: Counter[str] = field(default_factory=Counter)
    summary: int = 0
    # The file's other events (``--cache-sim``: Dr, I1mr, D1mr, ..., Bcm), own costs by function.
    events: dict[str, Counter[str]] = field(default_factory=dict)
    caches: list[str] = field(default_factory=list)  # the simulated caches (``desc:`` lines)

    @property
    def by_object(self) -> Counter[str]:
        return by_object(self.own)


def by_object(costs: Mapping[str, int]) -> Counter[str]:
    """Costs by function (``object:name``) summed by object."""
    objects: Counter[str] = Counter()
    for name, cost in costs.items():
        objects[name.split(":", 1)[0]] += cost
    return objects


def short_object(path: str) -> str:
    """A shared object's name as the tables print it: ``python`` for the interpreter, an
    extension module or library without its version and platform tags."""
    name = Path(path).name
    if PYTHON_OBJECTS.match(name) or name == "python":
        return "python"
    name = re.sub(r"\.cpython-\d+.*|\.abi3\.so$|\.so(\.[\d.]+)?$", "", name)
    return name or "???"


def parse(text: str) -> Costs:
    """The counts in one callgrind output file (positions as lines): ``Ir`` in ``own``, any other
    event the file has (``--cache-sim``) in ``events``, both as self costs.

    Names may be compressed (``fn=(12) name`` defines 12, ``fn=(12)`` uses it); a cost line after
    ``calls=`` is the call's inclusive cost, charged to the caller's inclusive cost only, and not
    when a function calls itself (callgrind's ``'2`` recursion levels are one function here).
    """
    names: dict[tuple[str, str], str] = {}

    def name(kind: str, value: str) -> str:
        match = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if match is None:
            return value
        if match.group(2) is not None:
            names[(kind, match.group(1))] = match.group(2)
        return names.get((kind, match.group(1)), "???")

    costs = Costs()
    others: list[Counter[str]] = []  # the events after Ir, in the file's order
    obj = callee_obj = "???"
    function = callee = "???:???"
    after_call = False
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        head, _, rest = line.partition("=")
        if head in NAMES:
            value = name(NAMES[head], rest)
            if head == "ob":
                obj = callee_obj = short_object(value)
            elif head == "fn":
                function = f"{obj}:{RECURSION.sub('', value)}"
                callee_obj = obj
            elif head == "cob":
                callee_obj = short_object(value)
            elif head == "cfn":
                callee = f"{callee_obj}:{RECURSION.sub('', value)}"
            continue
        if head == "calls":
            after_call = True
            continue
        if line.startswith("summary:"):
            costs.summary = int(line.split()[1])
            continue
        if line.startswith("events:"):
            listed = line.split()[1:]
            if listed[:1] != ["Ir"]:
                raise ValueError(f"callgrind file without Ir first: {line}")
            costs.events = {event: Counter() for event in listed[1:]}
            others = list(costs.events.values())
            continue
        if line.startswith("desc: ") and "cache:" in line:
            costs.caches.append(line.removeprefix("desc: ").strip())
            continue
        if not (line[0].isdigit() or line[0] in "+-*"):
            continue  # a header line (version, creator, events, totals, ...)
        fields = line.split()
        cost = int(fields[1]) if len(fields) > 1 else 0
        if after_call:
            if obj == "python" and callee_obj not in ("python", "???", "_asyncio"):
                costs.entries[callee] += cost
            after_call = False
            callee_obj = obj
        else:
            costs.own[function] += cost
            for counter, value in zip(others, fields[2:], strict=False):
                if value != "0":
                    counter[function] += int(value)
    return costs


def thread_group(thread: int, costs: Costs) -> str:
    """Which kind of thread ran ``costs``: the main thread (``event loop``), another one running
    Python (``python threads``), one running only the Temporal core (``temporal core``)."""
    if thread == 1:
        return "event loop"
    objects = costs.by_object
    total = sum(objects.values()) or 1
    if objects["python"] / total > 0.05:
        return "python threads"
    if objects["temporal_sdk_bridge"] / total > 0.05:
        return "temporal core"
    return "other"


@dataclass
class Side:
    """One side's counts summed over its threads and measured dumps."""

    threads: Counter[str] = field(default_factory=Counter)
    objects: Counter[str] = field(default_factory=Counter)
    own: Counter[str] = field(default_factory=Counter)
    entries: Counter[str] = field(default_factory=Counter)
    events: dict[str, Counter[str]] = field(default_factory=dict)  # by function, as `Costs`
    caches: list[str] = field(default_factory=list)

    def add(self, thread: int, costs: Costs) -> None:
        self.threads[thread_group(thread, costs)] += sum(costs.own.values())
        self.objects.update(costs.by_object)
        self.own.update(costs.own)
        self.entries.update(costs.entries)
        for event, counts in costs.events.items():
            self.events.setdefault(event, Counter()).update(counts)
        self.caches = self.caches or costs.caches

    @property
    def total(self) -> int:
        return sum(self.threads.values())


def dump_files(folder: Path, side: str) -> Iterator[tuple[int, Path]]:
    """``side``'s measured dumps in ``folder`` (``<side>.<dump>-<thread>``), with their thread."""
    for path in sorted(folder.glob(f"{side}.*-*")):
        match = re.fullmatch(rf"{side}\.(\d+)-(\d+)", path.name)
        if match is not None:
            yield int(match.group(2)), path


def read_side(folder: Path, side: str) -> Side:
    counted = Side()
    for thread, path in dump_files(folder, side):
        counted.add(thread, parse(path.read_text(errors="replace")))
    return counted


def table(
    title: str,
    ours: Mapping[str, int],
    theirs: Mapping[str, int],
    leaves: int,
    top: int,
    *,
    unit: int = 1000,
) -> list[str]:
    """The ``top`` places where the two differ most per leaf (in thousands of instructions, or
    ``unit``s)."""
    places = set(ours) | set(theirs)
    rows = sorted(places, key=lambda p: (-abs(ours.get(p, 0) - theirs.get(p, 0)), p))[:top]
    width = max([len(title), *(min(len(p), 70) for p in rows)])
    what = "k instr/leaf" if unit == 1000 else "per leaf"
    lines = [f"{title:{width}s} {'durapipe':>10s} {'handwritten':>11s} {'diff':>9s}   ({what})"]
    for place in rows:
        a, b = ours.get(place, 0) / leaves / unit, theirs.get(place, 0) / leaves / unit
        shown = place if len(place) <= 70 else place[:67] + "..."
        lines.append(f"{shown:{width}s} {a:10.1f} {b:11.1f} {a - b:+9.1f}")
    return lines


def report(folder: Path, leaves: int, top: int) -> list[str]:
    """The tables for the dumps in ``folder`` (``leaves`` measured leaves per side)."""
    ours, theirs = read_side(folder, "durapipe"), read_side(folder, "handwritten")
    if not ours.total or not theirs.total:
        raise SystemExit(f"no callgrind counts for both sides in {folder}")
    a, b = ours.total / leaves / 1000, theirs.total / leaves / 1000
    lines = [
        f"instructions per leaf (k): durapipe {a:.1f}, handwritten {b:.1f}, "
        f"durapipe minus handwritten {a - b:+.1f} ({a / b:.3f}x); {leaves} leaves per side",
        "",
    ]
    for title, mine, others in (
        ("thread group", ours.threads, theirs.threads),
        ("library", ours.objects, theirs.objects),
        ("function (self)", ours.own, theirs.own),
        ("entered from Python (inclusive)", ours.entries, theirs.entries),
    ):
        lines += [*table(title, mine, others, leaves, top), ""]
    return lines


# --- simulated caches and branches (--cache-sim) --------------------------------------------------

# The simulated machine (--cache-sim): this host's AMD EPYC (Zen 4) per core, 32 KiB 8-way L1
# instruction and data caches and a 1 MiB 8-way L2, simulated as valgrind's last level (LL): its
# 32 MiB L3 is shared with every other process and virtual machine on the host, so what a worker
# keeps in its own core's L2 is what it can count on.
CACHES = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=1048576,8,64")
# Misses by kind, from valgrind's events (reads and writes; conditional and indirect branches).
MISSES = {
    "L1m": ("I1mr", "D1mr", "D1mw"),
    "LLm": ("ILmr", "DLmr", "DLmw"),
    "Bm": ("Bcm", "Bim"),
}
# The cycle model: an instruction a cycle, 10 more for an L1 miss, 100 more for a last-level
# miss (it is also an L1 miss), 15 for a mispredicted branch.
PENALTIES = {"L1m": 10, "LLm": 100, "Bm": 15}
MODEL = "Ir + 10 L1m + 100 LLm + 15 Bm"
EVENT_ROWS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw", "Bc", "Bcm", "Bi",
              "Bim", "L1m", "LLm", "Bm", "cycles")  # fmt: skip


def measures(side: Side) -> dict[str, Counter[str]]:
    """``side``'s counts by function for every event, the misses summed by kind (``L1m``,
    ``LLm``, ``Bm``) and the estimated ``cycles`` (`MODEL`)."""
    found: dict[str, Counter[str]] = {"Ir": side.own, **side.events}
    cycles = Counter(side.own)
    for kind, events in MISSES.items():
        total: Counter[str] = Counter()
        for event in events:
            total.update(found.get(event, {}))
        found[kind] = total
        for place, count in total.items():
            cycles[place] += PENALTIES[kind] * count
    found["cycles"] = cycles
    return found


def cache_report(folder: Path, leaves: int, top: int) -> list[str]:
    """Per leaf, durapipe beside hand-written: every simulated event, the misses by kind, the
    estimated cycles, and where (library, function) the misses and estimated cycles differ; empty
    when the files have no cache simulation."""
    ours, theirs = read_side(folder, "durapipe"), read_side(folder, "handwritten")
    if "I1mr" not in ours.events or "I1mr" not in theirs.events:
        return []
    mine, others = measures(ours), measures(theirs)
    lines = [
        f"simulated caches and branches (valgrind --cache-sim=yes --branch-sim=yes): "
        f"{'; '.join(ours.caches)}",
        f"estimated cycles = {MODEL}",
        "",
        f"{'per leaf':8s} {'durapipe':>12s} {'handwritten':>12s} {'diff':>11s} {'ratio':>7s}",
    ]
    for event in EVENT_ROWS:
        a = sum(mine.get(event, {}).values()) / leaves
        b = sum(others.get(event, {}).values()) / leaves
        ratio = f"{a / b:7.3f}" if b else f"{'-':>7s}"
        lines.append(f"{event:8s} {a:12.1f} {b:12.1f} {a - b:+11.1f} {ratio}")
    a = sum(mine["cycles"].values()) / leaves
    b = sum(others["cycles"].values()) / leaves
    ir = sum(ours.own.values()) / sum(theirs.own.values())
    lines += [
        f"estimated cycles per leaf (k): durapipe {a / 1000:.1f}, handwritten {b / 1000:.1f} "
        f"({a / b:.3f}x; instructions {ir:.3f}x)",
        "",
    ]
    for kind in ("cycles", "L1m", "LLm", "Bm"):
        unit = 1000 if kind == "cycles" else 1
        lines += [
            *table(f"library, {kind}", by_object(mine[kind]), by_object(others[kind]),
                   leaves, top, unit=unit),
            "",
        ]  # fmt: skip
    penalty = {
        side: Counter({p: n - counts["Ir"].get(p, 0) for p, n in counts["cycles"].items()})
        for side, counts in (("ours", mine), ("theirs", others))
    }
    lines += [
        *table("function (self), miss cycles", penalty["ours"], penalty["theirs"], leaves, top),
        "",
    ]
    return lines


# --- Python's side: bytecodes per function -------------------------------------------------------


def traced(out: Path, argv: list[str]) -> None:
    """Run ``python -m ARGV`` in this process, counting the bytecodes each Python function runs
    (on every thread Python starts after this) between SIGUSR1 and SIGUSR2; the Nth SIGUSR2
    writes the counts to ``<out>.<N>.json`` (``loop|file:line:function`` -> bytecodes, ``loop``
    for the main thread's, ``threads`` for the others') and clears them."""
    import json
    import runpy
    import signal
    import threading
    from types import FrameType

    counts: Counter[Any] = Counter()
    on = False
    dumps = 0

    main = threading.get_ident()

    def on_loop(frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            counts[("loop", frame.f_code)] += 1
        return on_loop

    def on_thread(frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode":
            counts[("threads", frame.f_code)] += 1
        return on_thread

    def start(frame: FrameType, event: str, arg: object) -> Any:
        if not on:
            return None
        frame.f_trace_opcodes = True
        return on_loop if threading.get_ident() == main else on_thread

    def switch(signum: int, frame: object) -> None:
        nonlocal on, dumps
        on = signum == signal.SIGUSR1
        if not on:
            named = {
                f"{where}|{c.co_filename}:{c.co_firstlineno}:{c.co_name}": n
                for (where, c), n in counts.items()
            }
            counts.clear()
            dumps += 1
            partial = out.with_name(f"{out.name}.partial")
            partial.write_text(json.dumps(named))
            partial.rename(out.with_name(f"{out.name}.{dumps}.json"))

    signal.signal(signal.SIGUSR1, switch)
    signal.signal(signal.SIGUSR2, switch)
    sys.settrace(start)
    threading.settrace(start)
    sys.argv = list(argv)
    runpy.run_module(argv[0], run_name="__main__", alter_sys=True)


def python_place(key: str) -> tuple[str, str]:
    """A traced function's package (``durapipe``, ``temporalio``, ``litellm``, ``stdlib:asyncio``,
    ...) and its name as the tables print it (``package/module.py:function``)."""
    file, _, rest = key.partition("|")[2].partition(":")
    function = rest.partition(":")[2]
    parts = Path(file).parts
    if "site-packages" in parts:
        tail = parts[parts.index("site-packages") + 1 :]
    elif "durapipe" in parts or "bench" in parts:
        index = max(i for i, p in enumerate(parts) if p in ("durapipe", "bench"))
        tail = parts[index:]
    elif any(p.startswith("python3") for p in parts):
        index = max(i for i, p in enumerate(parts) if p.startswith("python3"))
        tail = ("stdlib", *parts[index + 1 :])
    else:
        tail = parts[-2:] if len(parts) > 1 else parts
    if not tail:
        return "???", f"{file}:{function}"
    package = tail[0].removesuffix(".py")
    if package == "stdlib" and len(tail) > 1:
        package = f"stdlib:{tail[1].removesuffix('.py')}"
    return package, f"{'/'.join(tail)}:{function}"


def python_report(folder: Path, leaves: int, top: int) -> list[str]:
    """Bytecodes per leaf by package and by function, durapipe beside hand-written, from the
    ``<side>.opcodes.<round>.json`` files in ``folder``."""
    import json

    sides = []
    for side in SIDES:
        threads: Counter[str] = Counter()
        packages: Counter[str] = Counter()
        functions: Counter[str] = Counter()
        for path in sorted(folder.glob(f"{side}.opcodes.*.json")):
            for key, count in json.loads(path.read_text()).items():
                package, function = python_place(key)
                threads[THREAD_GROUPS[key.partition("|")[0]]] += count
                packages[package] += count
                functions[function] += count
        sides.append((threads, packages, functions))
    if not sides[0][0] or not sides[1][0]:
        return []
    a, b = sum(sides[0][0].values()) / leaves, sum(sides[1][0].values()) / leaves
    lines = [
        f"Python bytecodes per leaf: durapipe {a:.0f}, handwritten {b:.0f}, durapipe minus "
        f"handwritten {a - b:+.0f} ({a / b:.3f}x)",
        "",
    ]
    for index, title in enumerate(("python thread group", "python package", "python function")):
        lines += [*table(title, sides[0][index], sides[1][index], leaves, top, unit=1), ""]
    return lines


# --- the run ------------------------------------------------------------------------------------


def valgrind(out: Path, *, cache_sim: bool = False) -> list[str]:
    simulated = ["--cache-sim=yes", "--branch-sim=yes", *CACHES] if cache_sim else []
    return [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
        # Threads take valgrind's lock in turn: without it the event loop's thread can wait
        # seconds for it, and durapipe's activities miss their heartbeats.
        "--fair-sched=yes",
        "--dump-instr=no", "--collect-jumps=no", *simulated, f"--callgrind-out-file={out}",
    ]  # fmt: skip


def control(pid: int, *args: str) -> None:
    """``callgrind_control ARGS PID`` (through valgrind's gdbserver)."""
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"callgrind_control {' '.join(args)} {pid} failed: {done.stderr.strip()}")


def pipeline_yaml(concurrency: int, pad: int | None = None, steps: int = SEQ_PRIMER) -> str:
    """The counted pipelines: the batch, and `--shape seq`'s sequence of ``steps`` steps (``seq``,
    and its shorter primer, ``seq_primer``); with ``pad`` (`--pad`), the batch's llm pipe also
    takes a ``pad`` text input, which every item gets from the batch's own (`padding`) and its
    prompt reads without rendering any of it: each leaf's activity input carries ``pad`` bytes
    more, and nothing else changes (the rendered messages, the checkpoint key, the model's work)."""
    from bench._common import batch_pipe, sequence_pipe

    if pad is None:
        ask = """  ask:
    kind: llm
    inputs: {question: text}
    prompt: "{{ question }}"
"""
        sequences = sequence_pipe("seq", steps) + sequence_pipe("seq_primer", SEQ_PRIMER)
        return "\npipes:" + batch_pipe("batch", concurrency) + sequences + ask
    batch = batch_pipe("batch", concurrency).replace(
        "questions: list[text]\n", "questions: list[text]\n      pad: text\n"
    )
    ask = """  ask:
    kind: llm
    inputs: {question: text, pad: text}
    prompt: "{{ question }}{% if not pad %}{% endif %}"
"""
    return "\npipes:" + batch + ask


def padding(size: int) -> str:
    """``size`` letters and digits that compress about as well as base64 does (random bytes,
    seeded: every run sends the same): `--pad`'s input."""
    return base64.b64encode(random.Random(0).randbytes(size))[:size].decode()


async def measure(args: argparse.Namespace, folder: Path) -> list[str]:
    """Run both workers under each of ``args.tools`` in turn, count their measured batches; a
    note per counted run: its history's events and workflow tasks (how the leaves' completions
    were batched into workflow tasks depends on timing, and each task costs both sides work), and
    any timed-out or failed event (a retry's work is in the counts)."""
    from temporalio.client import WorkflowHandle

    import durapipe as dp
    from bench import handwritten, handwritten_features
    from bench._common import cpu_when_quiet, dev_server, note, process, wait_ready
    from durapipe.adapters import WORKFLOW_NAME, pipe_run
    from durapipe.workflows._search import start_totals

    pipeline_file = folder / "bench.yaml"
    pipeline_file.write_text(pipeline_yaml(args.concurrency, args.pad, args.leaves))
    pipeline = dp.load(pipeline_file)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    notes: list[str] = []
    if args.worker_heartbeat != "5":
        notes.append(
            f"# durapipe's worker heartbeat: every {args.worker_heartbeat} s (--worker-heartbeat; "
            "durapipe's own is 5 s, the baselines' temporalio's 60 s)"
        )
    baseline_module = BASELINES[args.baseline]
    if args.baseline == "features":
        notes.append(
            f"# baseline: {baseline_module} (the minimal one plus durapipe's features); the "
            "tables' handwritten columns are its counts"
        )
    if args.pad is not None:
        notes.append(
            f"# --pad {args.pad}: every durapipe leaf's activity input carries a {args.pad}-byte "
            "input its prompt does not render (the hand-written side is unchanged): compare "
            "durapipe's counts with another --pad run's"
        )
    async with dev_server(args.address) as address:
        ours_client = await dp.connect(address, pipeline=pipeline)
        theirs_client = await handwritten.connect(address)

        async def batch(side: str, queue: str, *, primer: bool = False) -> list[str]:
            size = min(args.leaves, 2 * args.concurrency) if primer else args.leaves
            questions = [f"q{i}" for i in range(size)]
            if args.shape == "concurrent":
                return await one_step_runs(side, queue, questions)
            if args.shape == "seq":
                return [await sequence_run(side, queue, min(args.leaves, SEQ_PRIMER) if primer
                                           else args.leaves)]  # fmt: skip
            if side == "durapipe":
                inputs: dict[str, object] = {"questions": questions}
                if args.pad is not None:
                    inputs["pad"] = padding(args.pad)
                handle = await ours_start("batch", inputs, queue, summary=False)
            else:
                handle = await theirs_start("batch", questions, args.concurrency, queue=queue)
            await handle.result()
            return [handle.id]

        async def ours_start(
            pipe: str, inputs: dict[str, object], queue: str, *, summary: bool = True
        ) -> WorkflowHandle[Any, Any]:
            """A durapipe run of ``pipe``, started as `durapipe.start` starts one (the pipe as its
            start search attribute; its UI summary unless not ``summary``)."""
            run = pipe_run(pipeline, pipe, inputs)
            return await ours_client.start_workflow(
                WORKFLOW_NAME,
                run,
                id=run.run_id,
                task_queue=queue,
                task_timeout=TASK_TIMEOUT,
                static_summary=f"pipe {pipe}" if summary else None,
                search_attributes=start_totals(pipe, run.workflow_version),
            )

        async def theirs_start(shape: str, *inputs: object, queue: str) -> WorkflowHandle[Any, Any]:
            """A baseline run of ``shape`` (``single``, ``sequence`` or ``batch``): the minimal
            one's, or with ``--baseline features`` the one with durapipe's features (its pipe at
            the start)."""
            if args.baseline == "features":
                return await handwritten_features.start(
                    theirs_client,
                    f"bench.features.{shape}",
                    *inputs,
                    id=f"hwf-{uuid.uuid4().hex}",
                    task_queue=queue,
                    task_timeout=TASK_TIMEOUT,
                )
            return await theirs_client.start_workflow(
                f"bench.{shape}",
                args=list(inputs),
                id=f"hw-{uuid.uuid4().hex}",
                task_queue=queue,
                task_timeout=TASK_TIMEOUT,
            )

        async def sequence_run(side: str, queue: str, steps: int) -> str:
            """``seq50``'s shape: one run of ``steps`` llm steps one after another (durapipe's
            ``seq`` pipe, or ``seq_primer`` for the primer; the baseline's sequence workflow)."""
            if side == "durapipe":
                pipe = "seq" if steps == args.leaves else "seq_primer"
                handle = await ours_start(pipe, {"question": "q"}, queue)
            else:
                handle = await theirs_start("sequence", "q", steps, queue=queue)
            await handle.result()
            return handle.id

        async def one_step_runs(side: str, queue: str, questions: list[str]) -> list[str]:
            """``concurrent200``'s shape: a one-step run per question (durapipe's ``ask`` pipe,
            the baseline's single-call workflow), started one after another, awaited at once."""
            handles: list[WorkflowHandle[Any, Any]] = []
            for text in questions:
                if side == "durapipe":
                    handles.append(await ours_start("ask", {"question": text}, queue))
                else:
                    handles.append(await theirs_start("single", text, queue=queue))
            await asyncio.gather(*(handle.result() for handle in handles))
            return [handle.id for handle in handles]

        async def check(side: str, tool: str, workflow_ids: list[str]) -> None:
            client = ours_client if side == "durapipe" else theirs_client
            events = [
                event
                for workflow_id in workflow_ids
                for event in (await client.get_workflow_handle(workflow_id).fetch_history()).events
            ]
            kinds = Counter(event.WhichOneof("attributes") or "" for event in events)
            tasks = kinds["workflow_task_completed_event_attributes"]
            bad = {k: n for k, n in kinds.items() if re.search(r"(timed_out|failed)_event", k)}
            # An activity retried after a timeout (a heartbeat missed under valgrind's slowness)
            # shows only as its last attempt's number: its earlier attempts' work is counted.
            retried = [
                event.activity_task_started_event_attributes.last_failure.message
                for event in events
                if event.HasField("activity_task_started_event_attributes")
                and event.activity_task_started_event_attributes.attempt > 1
            ]
            if retried:
                bad["activities_retried"] = len(retried)
                bad["first_retry_after"] = retried[0]
            notes.append(
                f"# {side} under {tool}: {len(events)} history events, {tasks} workflow "
                f"tasks ({tasks / args.leaves:.3f} per leaf)"
                + (f"; not clean, its counts include a retry's work: {bad}" if bad else "")
            )

        for tool in args.tools:
            for side in SIDES:
                queue = f"ir-{side}-{uuid.uuid4().hex[:8]}"
                command = (
                    durapipe_worker(args.worker_heartbeat, str(pipeline_file))
                    if side == "durapipe"
                    else [sys.executable, "-m", baseline_module]
                )
                command = counted(tool, side, folder, [*command, "--address", address,
                                                       "--task-queue", queue],
                                  cache_sim=args.cache_sim)  # fmt: skip
                log = folder / f"{side}-{tool}-worker.log"
                with process(command, log, env=env) as child:
                    wait_ready(child, log, "worker ready")
                    note(f"{side} under {tool}: warm-up batch of {args.leaves}")
                    await batch(side, queue)
                    await cpu_when_quiet(child.pid, quiet_s=0.5, at_most_s=60)
                    if tool == "callgrind":
                        await instrumented(child.pid, batch(side, queue, primer=True))
                    for index in range(args.rounds):
                        note(f"{side} under {tool}: measured batch {index + 1} of {args.rounds}")
                        await switch(tool, child.pid, on=True)
                        workflow_ids = await batch(side, queue)
                        await cpu_when_quiet(child.pid, quiet_s=0.5, at_most_s=60)
                        await switch(tool, child.pid, on=False)
                        if tool == "bytecodes":
                            await written(child, folder / f"{side}.opcodes.{index + 1}.json")
                        await check(side, tool, workflow_ids)
    return notes


def durapipe_worker(heartbeat: str, pipeline_file: str) -> list[str]:
    """``durapipe worker FILE`` whose worker heartbeat is every ``heartbeat`` seconds
    (`bench.durapipe_worker`; ``5`` is durapipe's own, the plain command)."""
    from bench._common import durapipe_cli

    if heartbeat == "5":
        return durapipe_cli("worker", pipeline_file)
    return [sys.executable, "-m", "bench.durapipe_worker", heartbeat, "worker", pipeline_file]


def counted(
    tool: str, side: str, folder: Path, command: list[str], *, cache_sim: bool = False
) -> list[str]:
    """``command`` (``python -m MODULE ...``) run under ``tool``: callgrind (simulating caches
    and branches with ``cache_sim``), or the bytecode counter (`traced`)."""
    if tool == "callgrind":
        return [*valgrind(folder / side, cache_sim=cache_sim), *command]
    return [sys.executable, "-m", "bench.worker_instructions",
            "--trace-bytecodes", str(folder / f"{side}.opcodes"), "--", *command[2:]]  # fmt: skip


async def instrumented(pid: int, primer: Awaitable[object]) -> None:
    """Switch callgrind's instrumentation on in worker ``pid`` and run ``primer`` (a batch of
    twice the concurrency), uncounted: switching on makes valgrind translate every function again,
    seconds of stall in which a counted batch's first calls missed their heartbeats and were
    retried (and a warm-up run so from the start failed its steps). The primer may fail."""
    from bench._common import cpu_when_quiet, note

    await asyncio.to_thread(control, pid, "-i", "on")
    note("instrumented: a primer batch, not counted")
    try:
        await primer
    except Exception as err:  # its steps' retries may run out under the stall: not counted
        note(f"the primer batch failed ({type(err).__name__}); its work is not counted")
    await cpu_when_quiet(pid, quiet_s=0.5, at_most_s=60)


async def switch(tool: str, pid: int, *, on: bool) -> None:
    """Start (``on``) or stop counting in worker ``pid``; stopping dumps its counts. Callgrind
    instruments from the warm-up on: starting zeroes its counts, stopping dumps them (and zeroes
    them again)."""
    if tool == "bytecodes":
        os.kill(pid, signal.SIGUSR1 if on else signal.SIGUSR2)
        return
    await asyncio.to_thread(control, pid, *(("-z",) if on else ("-d", "measured")))


async def written(child: subprocess.Popen[bytes], path: Path) -> None:
    """Wait until the traced worker ``child`` has written its counts to ``path``."""
    while not path.exists():
        if child.poll() is not None:
            raise SystemExit(f"the traced worker (pid {child.pid}) exited before writing {path}")
        await asyncio.sleep(0.2)


def main(argv: Iterable[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--trace-bytecodes"]:  # a worker counted by `traced`
        traced(Path(arguments[1]), arguments[3:])
        return
    parser = argparse.ArgumentParser(prog="python -m bench.worker_instructions")
    parser.add_argument("--leaves", type=int, default=200, help="items per batch [200]")
    parser.add_argument("--concurrency", type=int, default=100, help="items at once [100]")
    parser.add_argument("--rounds", type=int, default=1, help="measured batches per side [1]")
    parser.add_argument(
        "--shape",
        choices=("batch", "concurrent", "seq"),
        default="batch",
        help="batch: one batch run of --leaves items, --concurrency at once (batch1000's shape); "
        "concurrent: --leaves one-step runs started at once (concurrent200's shape); seq: one run "
        "of --leaves steps in sequence (seq50's shape) [batch]",
    )
    parser.add_argument(
        "--worker-heartbeat",
        metavar="SECONDS|off",
        default="60",
        help="durapipe's worker heartbeat in the counted worker: under valgrind a batch lasts "
        "minutes, and durapipe's own 5 s beats fall on it as a real run's never do; 60 is "
        "temporalio's default, which the baselines keep [60]",
    )
    parser.add_argument(
        "--baseline",
        choices=tuple(BASELINES),
        default="minimal",
        help="the hand-written worker counted beside durapipe's: minimal (bench.handwritten) or "
        "features (bench.handwritten_features: summaries, heartbeats, the pipe at the start, "
        "totals upserted) [minimal]",
    )
    parser.add_argument(
        "--only",
        dest="tools",
        action="append",
        choices=TOOLS,
        help="one way of counting (repeatable) [both: callgrind, then bytecodes]",
    )
    parser.add_argument(
        "--cache-sim",
        action="store_true",
        help="callgrind also simulates this host's caches and branch predictors: misses per leaf "
        "and estimated cycles (about twice as slow)",
    )
    parser.add_argument(
        "--pad",
        type=int,
        metavar="BYTES",
        help="durapipe's leaves carry BYTES more in their activity input (an input its prompt "
        "reads without rendering); two runs, --pad 0 and --pad N, price a payload byte",
    )
    parser.add_argument("--top", type=int, default=15, help="rows per table [15]")
    parser.add_argument("--keep", type=Path, help="keep the counts in this folder")
    parser.add_argument("--address", help="an existing Temporal server [default: start one]")
    parser.add_argument("--report", type=Path, help="only print the tables of a kept folder")
    args = parser.parse_args(arguments)
    if args.pad is not None and args.pad < 0:
        parser.error(f"--pad must be 0 or more bytes, not {args.pad}")
    if args.worker_heartbeat != "off" and not re.fullmatch(r"\d+(\.\d+)?", args.worker_heartbeat):
        parser.error(f"--worker-heartbeat takes seconds or off, not {args.worker_heartbeat}")
    if args.pad is not None and args.shape != "batch":
        parser.error("--pad prices a batch leaf's byte: use it with --shape batch")
    args.tools = args.tools or list(TOOLS)
    leaves = args.leaves * args.rounds
    if args.report is not None:
        print("\n".join(tables(args.report, leaves, args.top)))
        return
    if "callgrind" in args.tools and shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="durapipe-worker-ir-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        print("\n".join(asyncio.run(measure(args, folder))))
        print("\n".join(tables(folder, leaves, args.top)))


def tables(folder: Path, leaves: int, top: int) -> list[str]:
    """Every table the counts in ``folder`` give (callgrind's, the bytecodes', or both)."""
    lines = report(folder, leaves, top) if any(dump_files(folder, "durapipe")) else []
    lines += cache_report(folder, leaves, top) if lines else []
    lines += python_report(folder, leaves, top)
    if not lines:
        raise SystemExit(f"no counts for both sides in {folder}")
    return lines


if __name__ == "__main__":
    main()
