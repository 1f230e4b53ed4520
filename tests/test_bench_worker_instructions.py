"""The whole-worker instruction counter reads callgrind's files and the bytecode tracer's counts
right: names, self costs, what Python calls into a library, thread groups, the per-leaf diff."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import durapipe as dp
from bench.worker_instructions import (
    SEQ_PRIMER,
    cache_report,
    durapipe_worker,
    main,
    padding,
    parse,
    pipeline_yaml,
    python_place,
    python_report,
    report,
    thread_group,
)

# A callgrind file as valgrind 3.19 writes it with --dump-instr=no: compressed names, a recursion
# level (f'2), and calls whose cost lines are inclusive (the caller's calls, not its own work).
CANNED = """# callgrind format
version: 1
creator: callgrind-3.19.0
thread: 1
positions: line
events: Ir
summary: 0

ob=(1) /usr/lib/libpython3.11.so.1.0
fl=(1) Python/ceval.c
fn=(1) _PyEval_EvalFrameDefault
10 1000
+2 500
cob=(2) /venv/lib/python3.11/site-packages/_ctypes.cpython-311-x86_64-linux-gnu.so
cfi=(2) Modules/_ctypes/callproc.c
cfn=(2) PyCFuncPtr_call
calls=3 5
* 4000
cfn=(3) _PyEval_EvalFrameDefault'2
calls=1 7
* 9000

fn=(3)
12 800

ob=(2)
fl=(2)
fn=(2)
5 300
cob=(3) /usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6
cfi=(3) sqlite3.c
cfn=(4) sqlite3_step
calls=3 9
* 3700

ob=(3)
fl=(3)
fn=(4)
9 3700

totals: 6300
"""


def test_self_costs_are_each_functions_own_work_by_library_with_recursion_levels_merged() -> None:
    costs = parse(CANNED)
    assert costs.own == {
        "python:_PyEval_EvalFrameDefault": 1000 + 500 + 800,
        "_ctypes:PyCFuncPtr_call": 300,
        "libsqlite3:sqlite3_step": 3700,
    }
    assert sum(costs.own.values()) == 6300  # the file's totals: no call line counted as work
    assert costs.by_object == {"python": 2300, "_ctypes": 300, "libsqlite3": 3700}
    # What the interpreter called into another library, callees included; not its own recursion,
    # nor a library's calls into another library.
    assert costs.entries == {"_ctypes:PyCFuncPtr_call": 4000}


def test_threads_are_grouped_by_what_they_run() -> None:
    costs = parse(CANNED)
    assert thread_group(1, costs) == "event loop"
    assert thread_group(7, costs) == "python threads"
    rust = parse(
        "ob=(1) /venv/temporalio/bridge/temporal_sdk_bridge.abi3.so\nfn=(1) tokio::park\n1 900\n"
    )
    assert thread_group(3, rust) == "temporal core"


def _row(lines: list[str], place: str) -> list[str]:
    """The durapipe, handwritten and diff columns of the first row for ``place``."""
    rows = (line[len(place) :].split() for line in lines if line.startswith(place + " "))
    return next(row for row in rows if len(row) == 3 and row[0][0].isdigit())


def _dump(folder: Path, name: str, lines: str) -> None:
    (folder / name).write_text(f"events: Ir\n{textwrap.dedent(lines)}")


def test_the_report_gives_per_leaf_differences_by_thread_library_and_function(
    tmp_path: Path,
) -> None:
    python = "ob=(1) /usr/bin/python3.11\n"
    # durapipe: two measured dumps (rounds) of the main thread and one of a pool thread.
    _dump(tmp_path, "durapipe.1-01", python + "fn=(1) eval\n1 600000\n")
    _dump(tmp_path, "durapipe.2-01", python + "fn=(1) eval\n1 600000\n")
    _dump(tmp_path, "durapipe.1-03", python + "fn=(2) gc\n1 400000\n")
    _dump(tmp_path, "handwritten.1-01", python + "fn=(1) eval\n1 1000000\n")
    _dump(tmp_path, "durapipe-01", python + "fn=(1) eval\n1 999999999\n")  # the exit dump: not
    lines = report(tmp_path, leaves=100, top=15)
    assert lines[0].startswith(
        "instructions per leaf (k): durapipe 16.0, handwritten 10.0, durapipe minus handwritten "
        "+6.0 (1.600x)"
    )
    assert _row(lines, "event loop") == ["12.0", "10.0", "+2.0"]
    assert _row(lines, "python threads") == ["4.0", "0.0", "+4.0"]
    assert _row(lines, "python:gc") == ["4.0", "0.0", "+4.0"]
    assert _row(lines, "python") == ["16.0", "10.0", "+6.0"]  # the library table


def test_python_functions_are_named_by_package_and_bytecodes_compared_per_leaf(
    tmp_path: Path,
) -> None:
    venv = "/w/.venv/lib/python3.11/site-packages"
    assert python_place(f"loop|{venv}/temporalio/worker/_activity.py:10:run") == (
        "temporalio",
        "temporalio/worker/_activity.py:run",
    )
    assert python_place("threads|/w/durapipe/stores/_held_sqlite.py:5:_bind") == (
        "durapipe",
        "durapipe/stores/_held_sqlite.py:_bind",
    )
    assert python_place("loop|/py/lib/python3.11/asyncio/events.py:3:__lt__") == (
        "stdlib:asyncio",
        "stdlib/asyncio/events.py:__lt__",
    )
    held = "/w/durapipe/stores/_held_sqlite.py:5:_bind"
    run = f"{venv}/temporalio/worker/_activity.py:10:run"
    (tmp_path / "durapipe.opcodes.1.json").write_text(
        json.dumps({f"loop|{held}": 300, f"loop|{run}": 1000, f"threads|{run}": 100})
    )
    (tmp_path / "handwritten.opcodes.1.json").write_text(json.dumps({f"loop|{run}": 1000}))
    lines = python_report(tmp_path, leaves=10, top=15)
    assert "durapipe 140, handwritten 100, durapipe minus handwritten +40 (1.400x)" in lines[0]
    assert _row(lines, "durapipe/stores/_held_sqlite.py:_bind") == ["30.0", "0.0", "+30.0"]
    assert _row(lines, "temporalio/worker/_activity.py:run") == ["110.0", "100.0", "+10.0"]
    assert _row(lines, "python threads") == ["10.0", "0.0", "+10.0"]
    assert _row(lines, "event loop") == ["130.0", "100.0", "+30.0"]


def test_the_tracer_counts_bytecodes_between_its_signals_on_every_thread(tmp_path: Path) -> None:
    (tmp_path / "traced_probe.py").write_text(
        textwrap.dedent(
            """
            import os, signal, threading

            def before(): return sum(range(3))
            def counted(): return sum(range(3))
            def on_thread(): return sum(range(3))

            before()
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(10):
                counted()
            thread = threading.Thread(target=on_thread)
            thread.start()
            thread.join()
            os.kill(os.getpid(), signal.SIGUSR2)
            before()
            """
        )
    )
    out = tmp_path / "probe.opcodes"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}"}
    subprocess.run(
        [sys.executable, "-m", "bench.worker_instructions", "--trace-bytecodes", str(out),
         "--", "traced_probe"],
        check=True, env=env, timeout=120,
    )  # fmt: skip
    counts = json.loads((tmp_path / "probe.opcodes.1.json").read_text())
    probe = str(tmp_path / "traced_probe.py")
    mine = {key.split(":")[-1]: (key.split("|")[0], n) for key, n in counts.items() if probe in key}
    assert "before" not in mine  # outside the signals: not counted
    where, counted = mine["counted"]
    assert where == "loop"
    assert counted % 10 == 0 and counted > 0  # ten calls, the same bytecodes each
    assert mine["on_thread"][0] == "threads"


# The same with --cache-sim --branch-sim: 13 events, trailing zeros left out of a cost line.
SIMULATED = """events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim
desc: I1 cache: 32768 B, 64 B, 8-way associative
desc: D1 cache: 32768 B, 64 B, 8-way associative
desc: LL cache: 1048576 B, 64 B, 8-way associative
ob=(1) /usr/lib/libpython3.11.so.1.0
fl=(1) Python/ceval.c
fn=(1) _PyEval_EvalFrameDefault
10 100000 30000 10000 500 700 200 10 20 30 8000 300 1000 100
+1 1000 0 0 5
cob=(2) /usr/lib/x86_64-linux-gnu/libc.so.6
cfn=(2) memset
calls=2 4
* 50000 0 50000 0 0 800 0 0 800
ob=(2)
fn=(2)
4 50000 0 50000 0 0 800 0 0 800
"""


def test_simulated_events_are_each_functions_own_misses_and_calls_add_none() -> None:
    costs = parse(SIMULATED)
    assert costs.own == {"python:_PyEval_EvalFrameDefault": 101000, "libc:memset": 50000}
    assert costs.events["I1mr"] == {"python:_PyEval_EvalFrameDefault": 505}
    assert costs.events["D1mw"] == {"python:_PyEval_EvalFrameDefault": 200, "libc:memset": 800}
    assert costs.events["DLmw"] == {"python:_PyEval_EvalFrameDefault": 30, "libc:memset": 800}
    assert costs.events["Bim"] == {"python:_PyEval_EvalFrameDefault": 100}
    assert costs.caches[2] == "LL cache: 1048576 B, 64 B, 8-way associative"


def test_the_cache_report_gives_misses_and_estimated_cycles_per_leaf(tmp_path: Path) -> None:
    (tmp_path / "durapipe.1-01").write_text(SIMULATED)
    theirs = SIMULATED.split("cob=")[0]  # the interpreter's work alone, no memset
    (tmp_path / "handwritten.1-01").write_text(theirs)
    lines = cache_report(tmp_path, leaves=10, top=15)
    assert "LL cache: 1048576 B" in lines[0]

    def event(name: str) -> list[str]:
        return next(line.split()[1:] for line in lines if line.startswith(f"{name} "))

    # durapipe: L1 misses 505 + 700 + 200 + 800 = 2205, LL 10 + 20 + 30 + 800 = 860, branches 400
    assert event("L1m") == ["220.5", "140.5", "+80.0", "1.569"]
    assert event("LLm") == ["86.0", "6.0", "+80.0", "14.333"]
    assert event("Bm") == ["40.0", "40.0", "+0.0", "1.000"]
    # cycles = Ir + 10 L1m + 100 LLm + 15 Bm, over 10 leaves: durapipe (151000 + 22050 + 86000
    # + 6000), hand-written (101000 + 14050 + 6000 + 6000)
    assert event("cycles") == ["26505.0", "12705.0", "+13800.0", "2.086"]
    assert any("durapipe 26.5, handwritten 12.7 (2.086x; instructions 1.495x)" in x for x in lines)
    # memset's misses are all durapipe's: 80 L1 and 80 LL misses per leaf, 13.8 k cycles
    assert _row(lines, "libc") == ["13.8", "0.0", "+13.8"]  # the cycles table comes first
    assert _row(lines, "libc:memset") == ["8.8", "0.0", "+8.8"]  # miss cycles only, k per leaf


def test_files_without_a_cache_simulation_give_no_cache_report(tmp_path: Path) -> None:
    _dump(tmp_path, "durapipe.1-01", "ob=(1) /usr/bin/python3.11\nfn=(1) eval\n1 5\n")
    _dump(tmp_path, "handwritten.1-01", "ob=(1) /usr/bin/python3.11\nfn=(1) eval\n1 4\n")
    assert report(tmp_path, leaves=1, top=1)  # the instructions' tables are there
    assert cache_report(tmp_path, leaves=1, top=1) == []


def test_pad_lengthens_each_leafs_activity_input_and_changes_nothing_it_sends(
    tmp_path: Path,
) -> None:
    # --pad prices a payload byte: the leaf's input carries the padding, the model sees the same.
    plain_file, padded_file = tmp_path / "plain.yaml", tmp_path / "padded.yaml"
    plain_file.write_text(pipeline_yaml(7))
    padded_file.write_text(pipeline_yaml(7, 64))
    plain, padded = dp.load(plain_file), dp.load(padded_file)
    assert "pad" not in plain.pipes["ask"].inputs  # without --pad: the pipeline as before
    assert padded.pipes["batch"].inputs == {"questions": "list[text]", "pad": "text"}
    pad = padding(64)
    assert len(pad) == 64 and pad == padding(64) and pad.isascii()
    prompt = padded.pipes["ask"].prompt
    assert dp.spec.render(prompt, {"question": "q3", "pad": pad}) == "q3"
    assert dp.spec.render(prompt, {"question": "q3", "pad": ""}) == "q3"
    run = dp.adapters.pipe_run(padded, "batch", {"questions": ["q0"], "pad": pad})
    assert run.inputs["pad"] == pad  # every item reads the batch's own by its name


def test_pad_is_refused_for_the_concurrent_shape(capsys: pytest.CaptureFixture[str]) -> None:
    # --pad lengthens a batch item's input; the concurrent shape's runs carry none of it, so its
    # counts would silently be unpadded ones.
    with pytest.raises(SystemExit) as exit_info:
        main(["--shape", "concurrent", "--pad", "64", "--only", "bytecodes"])
    assert exit_info.value.code == 2
    assert "--pad prices a batch leaf's byte: use it with --shape batch" in capsys.readouterr().err


def test_the_seq_shape_runs_its_steps_in_one_sequence_as_seq50_does(tmp_path: Path) -> None:
    # --shape seq counts one run of --leaves steps (seq50's shape) after a shorter primer run;
    # both ask the run's question at every step, as make bench's seq50 does.
    from bench.__main__ import PIPELINE_YAML

    counted_file, bench_file = tmp_path / "counted.yaml", tmp_path / "bench.yaml"
    counted_file.write_text(pipeline_yaml(7, None, 12))
    bench_file.write_text(PIPELINE_YAML)
    counted, bench = dp.load(counted_file), dp.load(bench_file)
    assert [step.pipe for step in counted.pipes["seq"].steps] == ["ask"] * 12
    assert len(counted.pipes["seq_primer"].steps) == SEQ_PRIMER
    assert counted.pipes["seq"].inputs == bench.pipes["seq50"].inputs == {"question": "text"}
    assert counted.pipes["ask"] == bench.pipes["ask"]
    assert len(bench.pipes["seq50"].steps) == 50


def test_the_counted_durapipe_worker_beats_as_often_as_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Under valgrind durapipe's 5 s worker heartbeats would fall on a counted run as a real run's
    # never do: the counted worker's runtime beats every --worker-heartbeat seconds, or never.
    import durapipe_entry
    from bench import durapipe_worker as module
    from durapipe.client import _telemetry

    assert durapipe_worker("5", "p.yaml")[2:] == ["durapipe", "worker", "p.yaml"]
    command = durapipe_worker("60", "p.yaml")
    assert command[2:] == ["bench.durapipe_worker", "60", "worker", "p.yaml"]
    seen: list[object] = []
    monkeypatch.setattr(_telemetry, "WORKER_HEARTBEAT", _telemetry.WORKER_HEARTBEAT)
    monkeypatch.setattr(
        durapipe_entry, "main", lambda: seen.append((sys.argv, _telemetry.WORKER_HEARTBEAT))
    )
    for interval, beat in (("60", timedelta(seconds=60)), ("off", None)):
        monkeypatch.setattr(sys, "argv", ["bench.durapipe_worker", interval, "worker", "p.yaml"])
        module.main()
        assert seen.pop() == (["durapipe", "worker", "p.yaml"], beat)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--shape", "seq", "--pad", "64"], "--pad prices a batch leaf's byte"),
        (["--worker-heartbeat", "soon"], "--worker-heartbeat takes seconds or off, not soon"),
    ],
)
def test_options_the_seq_shape_and_the_heartbeat_cannot_take_are_refused(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*arguments, "--only", "bytecodes"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
