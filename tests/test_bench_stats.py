"""The bench's figures: pairs taken in the same rounds, the rounds' orders balanced, a warm-up
round discarded, and each ratio the median of the pairs' ratios printed with its spread, the
median's interval and inputs."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import types
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import peer
from bench._common import (
    Spread,
    balanced_cycle,
    dev_servers,
    median_interval,
    pair_ratios,
    side_order,
)


def successions(orders: Sequence[Sequence[int]]) -> Counter[tuple[int, int]]:
    """How often, within a round, side ``j`` runs right after side ``i``, for each ``(i, j)``."""
    return Counter(pair for order in orders for pair in itertools.pairwise(order))


def assert_balanced(orders: Sequence[Sequence[int]], sides: int) -> None:
    """Every side runs right after every other side equally often, in every position equally
    often, and before every other side as often as after it."""
    every = list(itertools.permutations(range(sides), 2))
    follows = successions(orders)
    assert {follows[pair] for pair in every} == {len(orders) * (sides - 1) // len(every)}, follows
    for position in range(sides):
        assert Counter(order[position] for order in orders) == dict.fromkeys(
            range(sides), len(orders) // sides
        )
    for a, b in every:
        assert sum(order.index(a) < order.index(b) for order in orders) == len(orders) // 2


def test_the_round_order_is_balanced_over_each_cycle() -> None:
    assert [side_order(n, 2) for n in range(4)] == [[0, 1], [1, 0], [0, 1], [1, 0]]
    for sides in range(2, 7):
        cycle = balanced_cycle(sides)
        assert len(cycle) == (sides if sides % 2 == 0 else 2 * sides)
        assert [side_order(n, sides) for n in range(2 * len(cycle))] == cycle * 2
        assert_balanced(cycle, sides)
    with pytest.raises(ValueError, match="at least one side"):
        balanced_cycle(0)


def test_the_order_of_before_would_fail_the_balance() -> None:
    # F A B C / C B A F (the features baseline, durapipe, hand-written, totals off): hand-written
    # always ran right after a durapipe run and paid for what it left behind.
    before = [[3, 0, 1, 2], [2, 1, 0, 3]]
    assert successions(before)[(0, 1)] + successions(before)[(2, 1)] == 2
    with pytest.raises(AssertionError):
        assert_balanced(before, 4)


def test_a_spread_is_the_median_quartiles_and_range_of_the_pairs() -> None:
    assert Spread.of([1.0, 2.0, 3.0, 4.0, 10.0]) == Spread(
        3.0, 2.0, 4.0, 1.0, 10.0, 5, 1.0, 10.0, 0.9375
    )
    assert Spread.of([1.25]).median == 1.25
    assert Spread.of([1.0, 1.5]).median == 1.25
    with pytest.raises(ValueError):
        Spread.of([])


def test_the_median_interval_is_as_wide_as_its_coverage_needs() -> None:
    values = [float(v) for v in range(1, 13)]
    # 12 pairs: the 3rd and 10th values cover the median with 96.1% (the 4th and 9th: 85.4%).
    low, high, level = median_interval(values)
    assert (low, high) == (3.0, 10.0)
    assert level == pytest.approx(1 - 2 * (1 + 12 + 66) / 4096)
    assert median_interval(values[:10])[:2] == (2.0, 9.0)  # 97.9%
    assert median_interval(values[:8])[:2] == (1.0, 8.0)  # the 2nd and 7th: 93.0%, too little
    # Too few pairs for 95%: the range, and what it covers.
    assert median_interval([4.0, 1.0, 3.0, 2.0]) == (1.0, 4.0, 0.875)
    assert median_interval([1.0], level=0.5)[:2] == (1.0, 1.0)


def test_pairs_divide_reading_by_reading() -> None:
    assert pair_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError, match="cannot pair"):
        pair_ratios([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="not positive"):
        pair_ratios([1.0], [0.0])


class BusierMachine:
    """Stands in for `bench.__main__.measure`: every run costs 2% more than the one before it
    (the machine getting busier), durapipe's runs cost 1.1 times hand-written's, and the first
    run of each side (cold caches) costs five times more."""

    def __init__(self, ours: object) -> None:
        self.ours = ours
        self.calls: list[str] = []
        self.factor = 1.0

    async def __call__(
        self, work: Callable[[], Awaitable[object]], pid: int
    ) -> tuple[float, float]:
        side = "ours" if work is self.ours else "theirs"
        cost = self.factor * (1.1 if side == "ours" else 1.0)
        if side not in self.calls:
            cost *= 5
        self.calls.append(side)
        self.factor *= 1.02
        return cost, cost


async def _noop() -> None:
    return None


async def _other() -> None:
    return None


async def test_the_ratio_is_the_median_of_pairs_taken_side_by_side(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = BusierMachine(_noop)
    monkeypatch.setattr(bench_main, "measure", machine)
    wall, cpu = await bench_main.compare(
        "seq50", bench_main.Work(_noop, _other, None, 50), (1, 2), 6
    )
    # A warm-up round, then six pairs, which side goes first alternating.
    assert machine.calls == ["ours", "theirs"] + ["theirs", "ours", "ours", "theirs"] * 3
    # Alternating cancels the drift (1.1/1.02 and 1.1*1.02 pairs): the median is 1.1 to 4
    # decimals; with durapipe always first it would be 1.078, always second 1.122.
    assert cpu.median == pytest.approx(1.1, abs=5e-4)
    assert cpu.count == 6
    assert (cpu.low, cpu.high) == pytest.approx((1.1 / 1.02, 1.1 * 1.02))
    assert wall == cpu
    out = capsys.readouterr().out.splitlines()
    assert "seq50.pairs = 6" in out
    assert "seq50.cpu_ratio = 1.100" in out
    assert "seq50.cpu_ratio.range = 1.078-1.122" in out
    assert "seq50.cpu_ratio.iqr = 1.078-1.122" in out
    assert "seq50.cpu_ratio.ci = 1.078-1.122 (96.9%)" in out  # 6 pairs: their range
    assert "seq50.order = BA AB BA AB BA AB" in out
    # The inputs note: exact totals without the warm-up round (its five-fold runs), every pair.
    inputs = next(line for line in out if line.startswith("# seq50.cpu_ratio: "))
    ours = sum(1.1 * 1.02**k for k in (3, 4, 7, 8, 11, 12))
    theirs = sum(1.02**k for k in (2, 5, 6, 9, 10, 13))
    assert f"durapipe {ours:.3f} s CPU, hand-written {theirs:.3f} s CPU" in inputs
    assert "over 300 leaves each, 6 pairs" in inputs
    assert inputs.endswith("per pair: 1.1220 1.0784 1.1220 1.0784 1.1220 1.0784")


async def test_a_third_side_runs_in_the_same_rounds_in_a_balanced_order(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def ours() -> None: ...
    async def theirs() -> None: ...
    async def off() -> None: ...

    sides = {ours: 0, theirs: 1, off: 2}
    calls: list[tuple[int, int]] = []

    async def measure(work: Callable[[], Awaitable[object]], pid: int) -> tuple[float, float]:
        calls.append((sides[work], pid))
        return (1.2 if sides[work] == 2 else 1.0), 1.0

    monkeypatch.setattr(bench_main, "measure", measure)
    await bench_main.compare("concurrent200", bench_main.Work(ours, theirs, off, 200), (1, 2), 6)
    # Totals off runs on durapipe's worker; a warm-up round, then 6 rounds: a whole cycle.
    assert {pid for side, pid in calls if side != 1} == {1}
    counted = [[side for side, _ in calls[at : at + 3]] for at in range(3, len(calls), 3)]
    assert len(counted) == 6
    assert_balanced(counted, 3)
    out = capsys.readouterr().out
    assert "concurrent200.order = BCA CAB CBA ACB BAC ABC" in out
    assert "concurrent200.cpu_ratio.totals_off = " in out
    assert "concurrent200.wall_ratio.totals_off = 1.200" in out
    assert "# concurrent200.cpu_ratio.totals_off: durapipe totals off " in out
    assert "not whole cycles" not in out
    await bench_main.compare("concurrent200", bench_main.Work(ours, theirs, off, 200), (1, 2), 4)
    assert (
        "# concurrent200: 4 rounds are not whole cycles of the balanced order (6 rounds for 3 "
        "sides): the order is balanced over the first 0 only"
    ) in capsys.readouterr().out


async def _ours() -> None: ...
async def _theirs() -> None: ...
async def _off() -> None: ...
async def _featured() -> None: ...


# durapipe, the minimal baseline, durapipe with totals off, the baseline with features.
_FOUR_SIDES = (_ours, _theirs, _off, _featured)


async def test_the_features_baseline_runs_in_the_same_rounds_and_leaves_the_pairs_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, theirs, off, featured = _FOUR_SIDES
    names = {ours: "ours", theirs: "theirs", off: "off", featured: "features"}
    cost = {"ours": 1.2, "theirs": 1.0, "off": 1.1, "features": 1.05}
    calls: list[tuple[str, int]] = []

    async def measure(work: Callable[[], Awaitable[object]], pid: int) -> tuple[float, float]:
        calls.append((names[work], pid))
        return cost[names[work]], cost[names[work]]

    monkeypatch.setattr(bench_main, "measure", measure)
    await bench_main.compare(
        "seq50", bench_main.Work(ours, theirs, off, 50, featured), (1, 2, 3), 4
    )
    pids = {"ours": 1, "theirs": 2, "off": 1, "features": 3}
    assert all(pid == pids[name] for name, pid in calls)
    # After the warm-up round, 4 rounds (a whole cycle for 4 sides), balanced: no side always
    # runs right after a given other one (before, F A B C / C B A F: hand-written always ran
    # right after a durapipe run).
    index = {"ours": 0, "theirs": 1, "off": 2, "features": 3}
    counted = [[index[name] for name, _ in calls[at : at + 4]] for at in range(4, len(calls), 4)]
    assert len(counted) == 4
    assert_balanced(counted, 4)
    out = capsys.readouterr().out.splitlines()
    assert "seq50.order = BCAF CFBA FACB ABFC" in out
    # The headline pairs are durapipe's against the minimal baseline's, as without the features.
    assert "seq50.cpu_ratio = 1.200" in out
    assert "seq50.cpu_ratio.totals_off = 1.100" in out
    assert "seq50.cpu_ratio.vs_features = 1.143" in out
    assert "seq50.wall_ratio.vs_features = 1.143" in out
    assert "seq50.cpu_ms_per_leaf.handwritten_features = 21" in out
    assert (
        "# seq50: durapipe 4.000 ms CPU per leaf over hand-written, of which the features "
        "(hand-written with features over hand-written) 1.000 and durapipe's own translation 3.000"
    ) in out


def test_a_target_is_judged_on_the_median_and_says_how_far_the_pairs_agree(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = bench_main.Bench.__new__(bench_main.Bench)
    bench.results = {}
    inside = Spread(1.10, 1.08, 1.12, 1.05, 1.14, 10, 1.06, 1.13, 0.979)
    straddling = Spread(1.12, 1.10, 1.16, 1.05, 1.19, 10, 1.08, 1.18, 0.979)
    over = Spread(1.2, 1.18, 1.22, 1.16, 1.3, 6, 1.16, 1.3, 0.969)
    few = Spread(1.1, 1.08, 1.12, 1.06, 1.13, 4, 1.06, 1.13, 0.875)
    bench.judge("seq50", (inside, straddling))
    bench.judge("batch1000", (Spread(1.16, 1.1, 1.2, 1.0, 1.3, 5, 1.0, 1.3, 0.938), inside))
    bench.judge("concurrent200", (over, few))
    assert bench.results == {
        "seq50.wall_ratio": True,
        "seq50.cpu_ratio": True,
        "batch1000.wall_ratio": False,
        "batch1000.cpu_ratio": True,
        "concurrent200.wall_ratio": False,
        "concurrent200.cpu_ratio": True,
    }
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "# seq50.wall_ratio <= 1.15: met by every pair (median 1.100); resolved: its 97.9% "
        "interval 1.060-1.130 is at or under 1.15",
        "# seq50.cpu_ratio <= 1.15: met by the median, not by 1.190, the highest pair (median "
        "1.120); not resolved: 1.15 is inside its 97.9% interval 1.080-1.180",
        "# batch1000.wall_ratio <= 1.15: missed (median 1.160); not resolved: 1.15 is inside its "
        "93.8% interval 1.000-1.300",
        "# batch1000.cpu_ratio <= 1.15: met by every pair (median 1.100); resolved: its 97.9% "
        "interval 1.060-1.130 is at or under 1.15",
        "# concurrent200.wall_ratio <= 1.15: missed (median 1.200); resolved: its 96.9% interval "
        "1.160-1.300 is over 1.15",
        "# concurrent200.cpu_ratio <= 1.15: met by every pair (median 1.100); not resolved: 4 "
        "pairs are too few (its 87.5% interval 1.060-1.130, under 90%)",
    ]


def test_the_peer_race_reports_the_median_of_its_rounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def contestant(name: str, cpus: list[float]) -> peer.Contestant:
        runs = {"seq50": cpus, "fanout200": cpus}
        return peer.Contestant(name, 0, _seq, _noop, walls=runs, cpus=runs)

    contestants = [
        contestant("durapipe", [1.2, 1.1, 3.0]),
        contestant("handwritten", [1.0, 1.0, 1.0]),
        contestant("pydantic_ai", [1.5, 1.4, 1.6]),
    ]
    for part in ("seq50", "fanout200"):
        peer.report(contestants, part)
    out = capsys.readouterr().out.splitlines()
    # Rounds: 1.2, 1.1, 3.0 against 1.0 each: the median 1.2, not the pooled 1.767.
    assert "peer.durapipe.seq50.cpu_ratio = 1.200" in out
    assert "peer.durapipe.seq50.cpu_ratio.range = 1.100-3.000" in out
    assert "peer.pydantic_ai.fanout200.wall_ratio = 1.500" in out
    assert "peer.seq50.rounds = 3" in out
    assert "peer.durapipe.seq50.cpu_ms_per_call = 35.3" in out  # 5.3 s / 3 rounds / 50 calls
    # durapipe over pydantic-ai round by round: 0.800, 0.786, 1.875.
    assert "peer.durapipe.seq50.cpu_ratio.vs_pydantic_ai = 0.800" in out
    assert "peer.durapipe.fanout200.wall_ratio.vs_pydantic_ai.ci = 0.786-1.875 (75.0%)" in out


async def test_the_peer_race_runs_its_contestants_in_a_balanced_order(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs: list[str] = []

    async def measure(self: peer.Contestant, part: str) -> None:
        runs.append(self.name)

    monkeypatch.setattr(peer.Contestant, "measure", measure)
    names = ("durapipe", "handwritten", "pydantic_ai")
    await peer.run_rounds([peer.Contestant(n, 0, _seq, _noop) for n in names], "seq50", 6)
    rounds = [[names.index(name) for name in runs[at : at + 3]] for at in range(0, 18, 3)]
    assert_balanced(rounds, 3)
    assert "peer.seq50.order = DHP HPD PDH PHD DPH HDP" in capsys.readouterr().out


async def _seq() -> str:
    return "run"


def test_the_bench_finds_the_dev_server_it_waits_quiet_for(temporal_address: str) -> None:
    # A run starts once the dev server is quiet too: the server's work after one contestant's run
    # (history, visibility) fell on the next run's worker, which was always the hand-written one.
    port = temporal_address.rsplit(":", 1)[1]
    servers = dev_servers()
    assert servers, "no dev server among this process's children"
    arguments = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") for pid in servers]
    assert any(port.encode() in args for args in arguments)


def test_a_thread_that_ended_while_the_bench_looked_for_its_dev_servers_is_passed_over(
    temporal_address: str,
) -> None:
    # A thread of the bench's loop pool can end between the listing of its threads and the read
    # of its children (make bench stopped once on that FileNotFoundError).
    tasks = [
        Path(f"/proc/{os.getpid()}/task/999999999"),
        *Path(f"/proc/{os.getpid()}/task").iterdir(),
    ]
    assert dev_servers(tasks) == dev_servers()
    assert dev_servers(tasks)


def test_a_peer_race_that_cannot_finish_stops_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The deadlock detector tripping on a busy machine is expected: one sentence, exit 1.
    monkeypatch.setitem(sys.modules, "pydantic_ai", types.ModuleType("pydantic_ai"))
    monkeypatch.setenv("PEER_DEBUG_MODE", "0")
    monkeypatch.setattr(sys, "argv", ["python -m bench.peer"])

    async def race(repeats: int) -> None:
        raise peer.RaceStopped("pydantic_ai fanout200: a workflow task hit the deadlock detector")

    monkeypatch.setattr(peer, "race", race)
    assert peer.main() == 1
    err = capsys.readouterr().err
    assert err == (
        "bench-peer stopped: pydantic_ai fanout200: a workflow task hit the deadlock detector\n"
    )


async def test_a_stopped_peer_race_names_a_copy_of_the_log_that_outlives_it(tmp_path: Path) -> None:
    # The sentence named a log in the race's temporary folder, deleted as the race stopped.
    race_folder = tmp_path / "race"
    race_folder.mkdir()
    log = race_folder / "pydantic_ai.log"
    log.write_text(f"worker ready\n{peer.DEADLOCK} Potential deadlock detected\n")
    with pytest.raises(peer.RaceStopped) as stopped:
        await peer.within(asyncio.sleep(60), "pydantic_ai fanout200", log)
    log.unlink()
    race_folder.rmdir()
    named = Path(str(stopped.value).split("see ", 1)[1].split(")", 1)[0])
    try:
        assert named.is_absolute() and named.read_text().endswith("Potential deadlock detected\n")
    finally:
        named.unlink(missing_ok=True)


def test_a_peer_part_prints_its_figures_without_the_parts_after_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A race stopped in fanout200's rounds printed none of seq50's finished figures: its report
    # needed both parts' rounds.
    contestants = [
        peer.Contestant(name, 0, _seq, _noop, cpus={"seq50": cpus}, walls={"seq50": [2.3] * 3})
        for name, cpus in (
            ("durapipe", [0.60, 0.62, 0.61]),
            ("handwritten", [0.57, 0.58, 0.56]),
            ("pydantic_ai", [0.80, 0.81, 0.79]),
        )
    ]
    peer.report(contestants, "seq50")
    out = capsys.readouterr().out
    assert "peer.durapipe.seq50.cpu_ratio = 1.069" in out, out
    assert "peer.durapipe.seq50.cpu_ratio.vs_pydantic_ai = " in out
    assert "fanout200" not in out


async def test_rounds_take_every_sides_worker_copies_in_turn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One process per side carries one draw of a CPU-time offset it keeps for its life; with
    # copies, round r runs on copy r % copies of every side, and the warm-up warms every copy.
    ours, theirs, off, featured = _FOUR_SIDES
    names = {ours: "ours", theirs: "theirs", off: "off", featured: "features"}
    copies = [(10, 20, 30), (11, 21, 31), (12, 22, 32)]
    switched: list[int] = []
    calls: list[tuple[int, str, int]] = []

    def rotate(copy: int) -> tuple[int, ...]:
        switched.append(copy)
        return copies[copy]

    async def measure(work: Callable[[], Awaitable[object]], pid: int) -> tuple[float, float]:
        calls.append((switched[-1], names[work], pid))
        return 1.0, 1.0

    monkeypatch.setattr(bench_main, "measure", measure)
    await bench_main.compare(
        "seq50", bench_main.Work(ours, theirs, off, 50, featured), (10, 20, 30), 8, rotate, 3
    )
    # The warm-up round on copies 0, 1, 2; then rounds 1..8 on 1, 2, 0, 1, 2, 0, 1, 2.
    assert switched == [0, 1, 2, 1, 2, 0, 1, 2, 0, 1, 2]
    assert len(calls) == (3 + 8) * 4
    column = {"ours": 0, "theirs": 1, "off": 0, "features": 2}
    assert all(pid == copies[copy][column[name]] for copy, name, pid in calls)
    counted = {copy for copy, _, _ in calls[3 * 4 :]}
    assert counted == {0, 1, 2}
    assert "seq50.pairs = 8" in capsys.readouterr().out


def test_durapipes_workers_start_with_the_setting_the_bench_was_given(
    temporal_address: str, tmp_path: Path
) -> None:
    # `--durapipe-env DURAPIPE_CHECKPOINTS=off` prices a feature by a run of durapipe's workers
    # without it: the setting must reach durapipe's workers, and only theirs.
    file = tmp_path / "bench.yaml"
    file.write_text(bench_main.PIPELINE_YAML)
    env = {"DURAPIPE_CHECKPOINTS": "off"}
    with bench_main.workers(temporal_address, file, tmp_path, "q-env", env) as (ours, theirs):
        ours_env = Path(f"/proc/{ours.pid}/environ").read_bytes().split(b"\0")
        theirs_env = Path(f"/proc/{theirs.pid}/environ").read_bytes().split(b"\0")
    assert b"DURAPIPE_CHECKPOINTS=off" in ours_env
    assert b"DURAPIPE_CHECKPOINTS=off" not in theirs_env


def test_a_durapipe_setting_not_named_as_one_stops_the_bench_before_it_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stopped:
        asyncio.run(bench_main.main(["--durapipe-env", "CHECKPOINTS=off"]))
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--durapipe-env takes DURAPIPE_NAME=VALUE, not 'CHECKPOINTS=off'" in err
