"""`bench.workflow_instructions` reads callgrind's dumps and the markers' labels right."""

from __future__ import annotations

import json
from pathlib import Path

from bench.workflow_instructions import CALIBRATION, collect, count_calls, parse_dump, report

# A dump as callgrind writes it (compressed names and positions, one event): `run` costs 10 itself
# and calls `helper` twice (inclusive 30 and 12); `helper` costs 42 itself; `run` calls itself
# once (recursion: not added to its inclusive figure again).
DUMP = """version: 1
creator: callgrind-3.22.0
pid: 7
cmd:  python
part: 1

desc: I1 cache:
desc: Timerange: Basic block 0 - 100
desc: Trigger: Client Request: getppid

positions: line
events: Ir
summary: 100

ob=(1) /usr/lib/libpython3.11.so.1.0
fl=(1) ???
fn=(1) run
0 6
+2 4
cfn=(2) helper
calls=2 0
0 30
cfn=(2)
calls=1 0
* 12
cfn=(1)
calls=1 0
0 99
ob=(2) /x/_pydantic_core.so
fn=(2)
0 40
+1 2
fn=(3) idle
0

totals: 100
"""


def test_a_dump_gives_each_function_its_self_and_inclusive_instructions() -> None:
    costs = parse_dump(DUMP.splitlines())
    assert costs.total == 100
    assert costs.self == {
        "run [libpython3.11.so.1.0]": 10,
        "helper [_pydantic_core.so]": 42,
        "idle [_pydantic_core.so]": 0,
    }
    assert costs.inclusive["run [libpython3.11.so.1.0]"] == 10 + 30 + 12
    assert costs.inclusive["helper [_pydantic_core.so]"] == 42
    assert parse_dump(DUMP.splitlines(), functions=False).self == {}


def _segment(shape: str, side: str, *stack: str) -> list[str]:
    return ["pieces", shape, side, "1", *stack]


def test_piece_calls_are_counted_from_the_markers_labels() -> None:
    # A run's segments: upsert entered twice inside publish_totals, once at the top.
    labels = [
        None,
        _segment("single", "durapipe"),
        _segment("single", "durapipe", "publish"),
        _segment("single", "durapipe", "publish", "upsert"),
        _segment("single", "durapipe", "publish"),
        _segment("single", "durapipe", "publish", "upsert"),
        _segment("single", "durapipe", "publish"),
        _segment("single", "durapipe"),
        _segment("single", "durapipe", "upsert"),
        _segment("single", "durapipe"),
        None,
    ]
    assert count_calls(labels) == {
        ("single", "durapipe", "publish"): [1, 2, 2],
        ("single", "durapipe", "upsert"): [3, 0, 0],
    }


def test_the_report_prints_runs_differences_functions_and_pieces(tmp_path: Path) -> None:
    labels: list[list[str] | None] = []

    def dump(label: list[str] | None, total: int, function: str = "f") -> None:
        labels.append(label)
        number = len(labels)
        for thread, share in (("01", total - 1), ("02", 1)):  # every thread's file counts
            body = f"events: Ir\nsummary: {share}\nob=(1) /lib/x.so\nfn=(1) {function}\n0 {share}\n"
            (tmp_path / f"callgrind.{number}-{thread}").write_text(body)

    dump(None, 5)
    for side, per_run in (("durapipe", 1200), ("handwritten", 1000), ("features", 1150)):
        dump(["run", "seq50", side, "2"], per_run * 2, f"{side}_work")
    # Pieces: durapipe's publish (inclusive 900) holds one upsert (600); markers calibrated.
    dump(_segment("seq50", "durapipe"), 100)
    dump(_segment("seq50", "durapipe", "publish"), 200)
    dump(_segment("seq50", "durapipe", "publish", "upsert"), 600)
    dump(_segment("seq50", "durapipe", "publish"), 100)
    dump(_segment("seq50", "durapipe"), 100)
    dump(_segment("seq50", CALIBRATION, "marked calls"), 20 * 40)
    for _ in range(20):
        dump(_segment("seq50", CALIBRATION, "marked calls", "nothing"), 10)
        dump(_segment("seq50", CALIBRATION, "marked calls"), 0)
    dump(_segment("seq50", CALIBRATION, "plain calls"), 20 * 4)
    (tmp_path / "labels.json").write_text(json.dumps(labels))

    runs, pieces, calls = collect(tmp_path)
    assert [c.total for c in runs["seq50", "durapipe"]] == [1200]
    lines = report(runs, pieces, calls, top=2)
    text = "\n".join(lines)
    assert "seq50.durapipe_minus_handwritten = +200 /run +4 /step (ratio 1.200)" in text
    assert "seq50.durapipe_minus_features = +50 /run +1 /step (ratio 1.043)" in text
    # The main thread's part: each dump's thread 01 (all but 1 instruction of each here).
    assert "seq50.durapipe_minus_handwritten.main = +200 /run +4 /step (ratio 1.200)" in text
    # Each side's work is its own function: durapipe's is +1,200 over nothing.
    assert any("+1,200" in line and "durapipe_work [x.so]" in line for line in lines)
    # A marked call: 10 inside, 10 + 40 - 4 = 46 in all; publish's 900 less its own 10 and the
    # upsert's 46 is 844; its self (300) less its own 10 and the upsert's 36 outside is 254.
    assert "call's 46 instructions taken out, 10 of them inside" in text
    publish = next(line for line in lines if line.strip().startswith("publish"))
    assert "0.8k / 0.3k x1" in publish
    upsert = next(line for line in lines if line.strip().startswith("upsert"))
    assert "0.6k / 0.6k x1" in upsert
