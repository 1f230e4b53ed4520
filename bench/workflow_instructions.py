"""The workflow side's instructions per run and per step, counted by valgrind, by function.

``python -m bench.workflow_instructions [--histories DIR] [--shape S ...] [--old CHECKOUT]
[--times N] [--top 15]``
replays recorded histories (`bench.workflow_ab record`'s; recorded into a temporary folder first
when ``--histories`` is not given) in one process under callgrind: each shape's durapipe history,
the minimal hand-written one and the hand-written one with durapipe's features
(`bench.handwritten_features`), each through its own worker setup, ``--rounds`` times in turn. It
prints, per shape:

- each side's instructions per replayed run and per step (every thread of the process; a
  replay runs nearly all of it on the main thread, whose part is printed when it differs), and
  durapipe's difference from each baseline;
- the C functions where durapipe's run differs most from the minimal hand-written one (``--top``),
  self and inclusive instructions per run and per step (a recursive function's inclusive figure,
  such as the interpreter's eval loop, counts its recursion more than once: read its self figure);
- with ``--old CHECKOUT``, that checkout's package replaying the same durapipe history in the
  same process (``durapipe_minus_old``): counts of two processes differ by up to ~0.5 %, so a
  change smaller than that is resolved only this way;
- with pieces (one-step and seq50 by default; ``--no-pieces``), named Python pieces of each run
  (the SDK's upsert of search attributes, the decoding of the start's search attributes, the run
  input's decoding, the payload converter, each activation; ``--detail`` adds every function of
  durapipe's workflow-side modules), each counted between two markers (``os.getppid``, before
  which callgrind dumps its counts), inclusive and self (minus the pieces
  inside it), per run. What a marker costs (~5k instructions a call) is calibrated and taken out.

Instructions are not time (a cache miss costs more than an add), but they repeat within a fraction
of a percent from run to run where CPU time on a shared host varies by tens of percent, and their
per-function split names where a difference lies. It needs valgrind (``apt-get install valgrind``);
imports and three warm-up replays per side run uninstrumented (a first replay quickens code), and
the pieces' wrappers are installed only after the runs are counted. About 2-4 minutes per shape.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import gc
import importlib
import inspect
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before anything imports litellm

SIDES = ("durapipe", "handwritten", "features")
# With --old CHECKOUT: that checkout's package replays durapipe's history too, in the same process.
OLD = "old"
SHAPES = ("single", "seq50", "batch1000")
STEPS = {"single": 1, "seq50": 50, "batch1000": 1000}
# Python pieces counted with --pieces: label -> "module:Class.function" (sync functions only).
PIECES = {
    "sdk upsert_search_attributes": (
        "temporalio.worker._workflow_instance:_WorkflowInstanceImpl.workflow_upsert_search_attributes"
    ),
    "durapipe publish_totals": "durapipe.workflows._workflow:_TemporalRuntime.publish_totals",
    "features Totals.add": "bench.handwritten_features:Totals.add",
    "features Totals.end": "bench.handwritten_features:Totals.end",
    "start search attributes (untyped)": "temporalio.converter:decode_search_attributes",
    "start search attributes (typed)": "temporalio.converter:decode_typed_search_attributes",
    "durapipe run input (_pipe_run)": "durapipe.workflows._workflow:_pipe_run",
    "payloads decoded (from_payloads)": "temporalio.converter:CompositePayloadConverter.from_payloads",
    "payloads encoded (to_payloads)": "temporalio.converter:CompositePayloadConverter.to_payloads",
    "workflow instance created": "temporalio.worker._workflow:_WorkflowWorker._create_workflow_instance",
    "activation (SDK + workflow code)": "temporalio.worker._workflow_instance:_WorkflowInstanceImpl.activate",
    "sdk workflow coroutines (_run_once)": "temporalio.worker._workflow_instance:_WorkflowInstanceImpl._run_once",
    "sdk start_activity": "temporalio.worker._workflow_instance:_WorkflowInstanceImpl.workflow_start_activity",
    "sdk schedule activity command": "temporalio.worker._workflow_instance:_ActivityHandle._apply_schedule_command",
    "sdk resolve activity": "temporalio.worker._workflow_instance:_WorkflowInstanceImpl._apply_resolve_activity",
    "sdk set_current_details": "temporalio.worker._workflow_instance:_WorkflowInstanceImpl.workflow_set_current_details",
    "sdk initialize workflow": "temporalio.worker._workflow_instance:_WorkflowInstanceImpl._apply_initialize_workflow",
}  # fmt: skip
# With --detail: every sync function and method of these modules is a piece too (durapipe's
# workflow side), named module.qualname.
DETAIL = (
    "durapipe.workflows._workflow", "durapipe.workflows._search", "durapipe.runtime._interpret",
    "durapipe.runtime._budget", "durapipe.adapters._plan", "durapipe.spec._messages",
    "durapipe._words", "durapipe.worker", "durapipe.runtime._memory", "durapipe.spec._kinds",
    "durapipe.runtime._calls",
)  # fmt: skip


# --- the run under valgrind -------------------------------------------------------------------


class Markers:
    """The label of each counted segment, in order: callgrind dumps its counts before every
    ``os.getppid`` call, so dump ``k`` holds the segment ending at the ``k``-th marker."""

    def __init__(self) -> None:
        self.context: tuple[str, ...] | None = None  # None: not counted
        self.labels: list[list[str] | None] = []

    def mark(self) -> None:
        self.labels.append(list(self.context) if self.context is not None else None)
        os.getppid()

    def wrap(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` with a marker on entry and exit, its calls labelled ``label``."""

        @functools.wraps(function)
        def marked(*args: Any, **kwargs: Any) -> Any:
            if self.context is None or self.context[0] != "pieces":
                return function(*args, **kwargs)
            self.mark()
            outer = self.context
            self.context = (*outer, label)
            try:
                return function(*args, **kwargs)
            finally:
                self.mark()
                self.context = outer

        return marked

    def wrap_async(self, label: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """``function`` (a coroutine function) whose coroutines mark every resumption: a piece
        counted while it runs, as many times as it is resumed (its awaits' waits excluded)."""

        @functools.wraps(function)
        def marked(*args: Any, **kwargs: Any) -> Any:
            coroutine = function(*args, **kwargs)
            if self.context is None or self.context[0] != "pieces":
                return coroutine
            return _Resumed(self, label, coroutine)

        return marked


class _Resumed(Coroutine[Any, Any, Any]):
    """A coroutine that marks each step of the coroutine it drives (see `Markers.wrap_async`)."""

    def __init__(self, markers: Markers, label: str, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.markers, self.label, self.coroutine = markers, label, coroutine

    def send(self, value: Any) -> Any:
        return self._step(self.coroutine.send, value)

    def throw(self, *error: Any) -> Any:
        return self._step(lambda _: self.coroutine.throw(*error), None)

    def close(self) -> None:
        self.coroutine.close()

    def __await__(self) -> Any:
        return self

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def _step(self, step: Callable[[Any], Any], value: Any) -> Any:
        markers = self.markers
        outer = markers.context
        if outer is None or outer[0] != "pieces":
            return step(value)
        markers.mark()
        markers.context = (*outer, self.label)
        try:
            return step(value)
        finally:
            markers.mark()
            markers.context = outer


def detailed(modules: Iterable[str]) -> dict[str, str]:
    """A piece for every function and method (a coroutine function counted per resumption; not
    generators) that ``modules`` define, outside exceptions and workflow classes (the SDK keeps
    their methods)."""
    pieces = {}
    for module_name in modules:
        module = importlib.import_module(module_name)
        short = module_name.rsplit(".", 1)[-1]
        for name, value in vars(module).items():
            if getattr(value, "__module__", None) != module_name:
                continue
            if inspect.isfunction(value) and _plain(value):
                pieces[f"{short}.{name}"] = f"{module_name}:{name}"
            elif inspect.isclass(value) and not _kept_by_others(value):
                for attribute, member in vars(value).items():
                    if inspect.isfunction(member) and _plain(member):
                        pieces[f"{short}.{name}.{attribute}"] = f"{module_name}:{name}.{attribute}"
    return pieces


def _plain(function: Any) -> bool:
    # Coroutine functions too (`Markers.wrap_async`); generators would need their own driver.
    return not (inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function))


def _kept_by_others(cls: type) -> bool:
    return issubclass(cls, BaseException) or hasattr(cls, "__temporal_workflow_definition")


def install(markers: Markers, pieces: dict[str, str]) -> None:
    """Replace each piece's function by its marked version (where it is looked up at call time)."""
    for label, where in pieces.items():
        module_name, _, qualname = where.partition(":")
        owner: Any = importlib.import_module(module_name)
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = getattr(owner, name)
        wrap = markers.wrap_async if inspect.iscoroutinefunction(original) else markers.wrap
        marked = wrap(label, original)
        setattr(owner, name, marked)
        if not path:  # a module's function: also where other modules imported it by name
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith(("durapipe", "bench")):
                    for attribute, value in list(vars(module).items()):
                        if value is original:
                            setattr(module, attribute, marked)


async def measured(args: argparse.Namespace) -> None:
    """Replay each shape's histories in turn between markers (see the module docstring): the
    runs first, then (with pieces) the pieces, whose wrappers are installed only then, so that
    their cost when idle does not reach the runs' counts."""
    from bench.workflow_ab import _load, replay_many, replayers

    markers = Markers()
    replaying = replayers()
    histories = {
        (shape, side): _load(args.histories / f"{shape}.{side}.json")
        for shape in args.shape
        for side in SIDES
    }
    sides = list(SIDES)
    if args.old:
        replaying[OLD] = old_replayer(args.old)
        histories.update({(shape, OLD): histories[shape, "durapipe"] for shape in args.shape})
        sides.insert(0, OLD)

    async def warm() -> None:
        # Imports, caches and the interpreter's specialization of each code path (a first
        # replay quickens code objects: ~1 % more instructions), uncounted.
        for (_, side), history in histories.items():
            await replay_many(replaying[side], history, WARM_REPLAYS)

    async def replay_in_turn(
        phase: str, shape: str, times: int, rounds: int, sides: list[str]
    ) -> None:
        for index in range(rounds):
            for side in sides if index % 2 == 0 else sides[::-1]:
                gc.collect()
                markers.mark()  # ends the uncounted gap
                markers.context = (phase, shape, side, str(times))
                await replay_many(replaying[side], histories[shape, side], times)
                markers.mark()
                markers.context = None

    await warm()
    gc.disable()  # a collection would land in whichever run happens to allocate past its threshold
    switch = ["callgrind_control", "-i", "on", str(os.getpid())]
    await asyncio.to_thread(subprocess.run, switch, capture_output=True)
    markers.mark()  # ends the segment of the switch itself
    for shape in args.shape:
        await replay_in_turn("run", shape, args.times, args.rounds, sides)
    pieces = [shape for shape in args.shape if shape in (args.pieces or ())]
    if pieces:
        install(markers, {**PIECES, **(detailed(DETAIL) if args.detail else {})})
        await warm()
        for shape in pieces:
            await replay_in_turn("pieces", shape, 1, 1, list(SIDES))
            calibrate(markers, shape)
    Path(args.measured).write_text(json.dumps(markers.labels))


def old_replayer(checkout: Path) -> Any:
    """A replayer of ``checkout``'s durapipe package (copied as ``durapipe_old``, see
    `bench.workflow_ab.old_package`), set up as this one's."""
    from temporalio.worker import Replayer

    from bench.workflow_ab import old_package, workflow_interceptors

    into = tempfile.mkdtemp(prefix="durapipe-old-")
    atexit.register(shutil.rmtree, into, ignore_errors=True)
    name = old_package(checkout, Path(into))
    worker = importlib.import_module(f"{name}.worker")
    workflows = importlib.import_module(f"{name}.workflows")
    return Replayer(
        workflows=[workflows.PipeWorkflow],
        data_converter=worker.durapipe_converter(),
        interceptors=workflow_interceptors(name),
        debug_mode=True,
    )


# Replays of each history before counting (see `measured`).
WARM_REPLAYS = 3
CALIBRATION = "(calibration)"
_CALLS_MEASURED = 20


def calibrate(markers: Markers, shape: str) -> None:
    """What a marked call costs beyond its function: a piece making 20 marked calls of a function
    that does nothing, and one making 20 plain calls of it (see `marker_costs`)."""
    nothing = markers.wrap("nothing", _nothing)

    def marked_calls() -> None:
        for _ in range(_CALLS_MEASURED):
            nothing()

    def plain_calls() -> None:
        for _ in range(_CALLS_MEASURED):
            _nothing()

    markers.mark()
    markers.context = ("pieces", shape, CALIBRATION, "1")
    markers.wrap("marked calls", marked_calls)()
    markers.wrap("plain calls", plain_calls)()
    markers.mark()
    markers.context = None


def _nothing() -> None:
    return None


# --- callgrind's output -------------------------------------------------------------------------


@dataclass
class Costs:
    """Instructions of one dump (all threads): its total, and each function's self and inclusive."""

    total: int = 0
    main: int = 0  # the main thread's part (the workflow code and the SDK's Python run there)
    self: dict[str, int] = field(default_factory=dict)
    inclusive: dict[str, int] = field(default_factory=dict)

    def add(self, other: Costs) -> None:
        self.total += other.total
        self.main += other.main
        for mine, theirs in ((self.self, other.self), (self.inclusive, other.inclusive)):
            for name, count in theirs.items():
                mine[name] = mine.get(name, 0) + count


_NAMED = re.compile(r"^(c?(?:fn|ob))=\((\d+)\)(?: (.*))?$")


def parse_dump(lines: Iterable[str], functions: bool = True) -> Costs:
    """One callgrind output file (positions ``line``, events ``Ir``) read into `Costs`.

    A cost line after ``calls=`` is the call's inclusive cost: it goes to the caller's inclusive
    figure (unless it calls itself), not its self figure.
    """
    costs = Costs()
    names: dict[str, dict[str, str]] = {"fn": {}, "ob": {}}
    current = current_name = object_name = callee = ""
    after_call = False
    for line in lines:
        if not line:
            continue
        first = line[0]
        if first.isdigit() or first in "+-*":
            if not functions:
                continue
            parts = line.split()
            count = int(parts[1]) if len(parts) > 1 else 0
            if after_call:
                after_call = False
                if callee != current_name:
                    costs.inclusive[current] = costs.inclusive.get(current, 0) + count
            else:
                costs.self[current] = costs.self.get(current, 0) + count
                costs.inclusive[current] = costs.inclusive.get(current, 0) + count
            continue
        if line.startswith(("summary:", "totals:")):
            if line.startswith("summary:") or not costs.total:
                costs.total = int(line.split()[1])
            continue
        if line.startswith("calls="):
            after_call = True
            continue
        named = _NAMED.match(line)
        if named is None:
            continue
        kind, number, name = named.groups()
        table = names["fn" if kind.endswith("fn") else "ob"]
        if name is not None:
            table[number] = name
        resolved = table.get(number, f"({number})")
        if kind == "ob":
            object_name = Path(resolved).name
        elif kind == "fn":
            current_name, current = resolved, f"{resolved} [{object_name}]"
        elif kind == "cfn":
            callee = resolved
    return costs


def dumps(out: Path) -> Iterator[tuple[int, list[Path]]]:
    """Each dump's number and its files (one per thread: ``callgrind.<n>-<thread>``)."""
    by_number: dict[int, list[Path]] = {}
    for path in out.glob("callgrind.*-*"):
        number = path.name.split(".")[1].split("-")[0]
        if number.isdigit():
            by_number.setdefault(int(number), []).append(path)
    yield from sorted(by_number.items())


Runs = dict[tuple[str, str], list[Costs]]
Pieces = dict[tuple[str, ...], Costs]
# (shape, side, piece) -> [its calls, calls of pieces inside it, calls of pieces directly in it]
Calls = dict[tuple[str, str, str], list[int]]


def collect(out: Path) -> tuple[Runs, Pieces, Calls]:
    """The measured run's dumps grouped: each (shape, side)'s runs (`Costs` per run, functions
    included), the pieces' segments by their label stack (totals only), and how many times each
    (shape, side, piece) ran."""
    labels = json.loads((out / "labels.json").read_text())
    runs: dict[tuple[str, str], list[Costs]] = {}
    pieces: dict[tuple[str, ...], Costs] = {}
    for number, files in dumps(out):
        label = labels[number - 1] if number - 1 < len(labels) else None
        if label is None:
            continue
        phase, shape, side, times, *stack = label
        costs = Costs()
        for path in files:
            with path.open() as text:
                thread = parse_dump((line.rstrip("\n") for line in text), phase == "run")
            thread.main = thread.total if path.name.endswith("-01") else 0
            costs.add(thread)
        if phase == "run":
            per_run = Costs(costs.total // int(times), costs.main // int(times))
            per_run.self = {n: c // int(times) for n, c in costs.self.items()}
            per_run.inclusive = {n: c // int(times) for n, c in costs.inclusive.items()}
            runs.setdefault((shape, side), []).append(per_run)
        else:
            pieces.setdefault((shape, side, *stack), Costs()).add(costs)
    return runs, pieces, count_calls(labels)


def count_calls(labels: list[list[str] | None]) -> Calls:
    """How many times each piece ran, by (shape, side, piece): a piece is entered where the next
    segment's stack of pieces is one deeper (each entry and exit is a marker)."""
    calls: Calls = {}
    for this, after in itertools.pairwise(labels):
        if after is None or after[0] != "pieces":
            continue
        depth = len(this) - 4 if this is not None and this[0] == "pieces" else 0
        if len(after) - 4 > depth:
            shape, side, stack = after[1], after[2], after[4:]
            calls.setdefault((shape, side, stack[-1]), [0, 0, 0])[0] += 1
            for outer in stack[:-1]:
                calls.setdefault((shape, side, outer), [0, 0, 0])[1] += 1
            if len(stack) > 1:
                calls.setdefault((shape, side, stack[-2]), [0, 0, 0])[2] += 1
    return calls


# --- the report ---------------------------------------------------------------------------------


def _k(count: float) -> str:
    return f"{count / 1000:,.1f}k"


RUN_SIDES = (OLD, *SIDES)


def report(runs: Runs, pieces: Pieces, calls: Calls, top: int) -> list[str]:
    """The printed lines (see the module docstring)."""
    lines: list[str] = []
    shapes = [s for s in SHAPES if any(shape == s for shape, _ in runs)]
    for shape in shapes:
        steps = STEPS[shape]
        parts = [("total", "all threads")]
        if any(c.main != c.total for side in RUN_SIDES for c in runs.get((shape, side), [])):
            parts.append(("main", "main thread"))  # when other threads did some of it
        for part, scope in parts:
            medians = {
                side: statistics.median(getattr(c, part) for c in runs[shape, side])
                for side in RUN_SIDES
                if (shape, side) in runs
            }
            lines.append(f"{shape}: instructions per run ({scope}), median of rounds; per step")
            for side, median in medians.items():
                every = " ".join(_k(getattr(c, part)) for c in runs[shape, side])
                lines.append(
                    f"  {shape}.{side:12s} {_k(median):>12s} /run {_k(median / steps):>10s} /step"
                    f"   rounds: {every}"
                )
            for base in ("handwritten", "features", OLD):
                if "durapipe" in medians and base in medians:
                    over = medians["durapipe"] - medians[base]
                    name = f"{shape}.durapipe_minus_{base}{'' if part == 'total' else '.main'}"
                    lines.append(
                        f"  {name} = {over:+,.0f} /run {over / steps:+,.0f} /step"
                        f" (ratio {medians['durapipe'] / medians[base]:.3f})"
                    )
        if "durapipe" in medians and "handwritten" in medians:
            lines.extend(function_diff(shape, runs, top))
        lines.extend(piece_lines(shape, pieces, calls))
    return lines


def function_diff(shape: str, runs: Runs, top: int) -> list[str]:
    """The ``top`` functions by durapipe's self instructions minus hand-written's, per run."""
    steps = STEPS[shape]
    ours, theirs = runs[shape, "durapipe"][-1], runs[shape, "handwritten"][-1]
    names = set(ours.self) | set(theirs.self)
    diff = {n: ours.self.get(n, 0) - theirs.self.get(n, 0) for n in names}
    ranked = sorted(names, key=lambda n: -abs(diff[n]))[:top]
    lines = [
        f"  {shape}: durapipe minus hand-written by function (last round), top {top} by |self|",
        f"    {'self/run':>12s} {'self/step':>10s} {'incl/run':>12s} {'incl/step':>10s}  function",
    ]
    for name in ranked:
        inclusive = ours.inclusive.get(name, 0) - theirs.inclusive.get(name, 0)
        lines.append(
            f"    {diff[name]:+12,d} {diff[name] / steps:+10,.0f} {inclusive:+12,d}"
            f" {inclusive / steps:+10,.0f}  {name[:110]}"
        )
    rest = sum(diff.values()) - sum(diff[n] for n in ranked)
    lines.append(
        f"    {rest:+12,d} {rest / steps:+10,.0f} {'':12s} {'':10s}  (all other functions)"
    )
    return lines


def piece_lines(shape: str, pieces: Pieces, calls: Calls) -> list[str]:
    """Each piece's inclusive and self instructions per run (one replay per side), by side, less
    what its markers cost (`marker_costs`), and how many times it ran."""
    rows: dict[tuple[str, str], list[int]] = {}  # (piece, side) -> [inclusive, self]
    for (piece_shape, side, *stack), costs in pieces.items():
        if piece_shape != shape or not stack:
            continue
        for label in set(stack):
            rows.setdefault((label, side), [0, 0])[0] += costs.total
        rows.setdefault((stack[-1], side), [0, 0])[1] += costs.total
    if not any(side in SIDES for _, side in rows):
        return []
    whole, inside = marker_costs(rows)
    corrected: dict[tuple[str, str], tuple[float, float, int]] = {}
    for (label, side), (inclusive, own) in rows.items():
        ran, nested, direct = calls.get((shape, side, label), [0, 0, 0])
        corrected[label, side] = (
            inclusive - ran * inside - nested * whole,
            own - ran * inside - direct * (whole - inside),
            ran,
        )
    lines = [
        f"  {shape}: pieces per run, inclusive / self instructions x calls (one replay each; a marked",
        f"  call's {whole:,.0f} instructions taken out, {inside:,.0f} of them inside the piece)",
        f"    {'piece':44s}" + "".join(f" {side:>26s}" for side in SIDES),
    ]
    labels = {label for label, side in rows if side in SIDES}
    largest = {label: max(corrected.get((label, side), (0, 0, 0))[0] for side in SIDES)
               for label in labels}  # fmt: skip
    for label in sorted(labels, key=lambda name: -largest[name]):
        cells = []
        for side in SIDES:
            inclusive, own, ran = corrected.get((label, side), (0, 0, 0))
            cells.append(f"{_k(inclusive)} / {_k(own)} x{ran}" if ran else "-")
        lines.append(f"    {label[:44]:44s}" + "".join(f" {cell:>26s}" for cell in cells))
    return lines


def marker_costs(rows: dict[tuple[str, str], list[int]]) -> tuple[float, float]:
    """Instructions a marked call adds to its caller's inclusive figure (``whole``), and the part
    of them counted inside the call (``inside``), from `calibrate`'s pieces."""
    marked = rows.get(("marked calls", CALIBRATION), [0, 0])[0]
    plain = rows.get(("plain calls", CALIBRATION), [0, 0])[0]
    nothing = rows.get(("nothing", CALIBRATION), [0, 0])[0]
    return (marked - plain) / _CALLS_MEASURED, nothing / _CALLS_MEASURED


# --- the command --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Record (if needed), count under valgrind, print (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.workflow_instructions", description=__doc__
    )
    parser.add_argument("--histories", type=Path, help="bench.workflow_ab record's folder")
    parser.add_argument("--shape", action="append", choices=SHAPES)
    parser.add_argument(
        "--times", type=int, help="replays per side and round [single 20, seq50 2, batch1000 1]"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--pieces",
        action="append",
        choices=SHAPES,
        help="count the Python pieces of this shape [single, seq50]",
    )
    parser.add_argument("--no-pieces", action="store_true")
    parser.add_argument(
        "--detail",
        action="store_true",
        help="every function of durapipe's workflow-side modules is a piece too",
    )
    parser.add_argument(
        "--old", type=Path, help="a checkout whose package replays durapipe's history beside"
    )
    parser.add_argument("--measured", help=argparse.SUPPRESS)  # the run under valgrind
    args = parser.parse_args(argv)  # fmt: skip
    args.shape = args.shape or list(SHAPES)
    if args.measured:
        args.pieces = [] if args.no_pieces else (args.pieces or ["single", "seq50"])
        asyncio.run(measured(args))
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="durapipe-workflow-ir-") as tmp:
        out = Path(tmp)
        if args.histories is None:
            from bench.workflow_ab import record

            args.histories = out / "histories"
            asyncio.run(record(args.histories))
        for shape in args.shape:
            missing = [s for s in SIDES if not (args.histories / f"{shape}.{s}.json").exists()]
            if missing:
                sys.exit(f"{args.histories} has no {shape} history of {', '.join(missing)}: "
                         "record them with python -m bench.workflow_ab record --out DIR")  # fmt: skip
        lines = []
        for shape in args.shape:  # one valgrind run per shape keeps its dumps few
            times = args.times or {"single": 20, "seq50": 2, "batch1000": 1}[shape]
            for old in out.glob("callgrind.*"):
                old.unlink()
            command = [
                "valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-before=getppid",
                "--separate-threads=yes", "--dump-instr=no",
                f"--callgrind-out-file={out / 'callgrind'}",
                sys.executable, "-m", "bench.workflow_instructions", "--histories",
                str(args.histories), "--shape", shape, "--times", str(times), "--rounds",
                str(args.rounds), *(f"--pieces={p}" for p in args.pieces or ()),
                *(["--no-pieces"] if args.no_pieces else []),
                *(["--detail"] if args.detail else []),
                *(["--old", str(args.old)] if args.old else []), "--measured", str(out / "labels.json"),
            ]  # fmt: skip
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"the run under valgrind failed:\n{done.stderr[-3000:]}")
            shape_lines = report(*collect(out), args.top)
            print("\n".join(shape_lines), flush=True)
            lines.extend(shape_lines)


if __name__ == "__main__":
    main()
