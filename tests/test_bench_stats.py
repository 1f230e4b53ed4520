"""The bench's figures: side-by-side pairs, which side goes first alternating, a warm-up round
discarded, and each ratio the median of the pairs' ratios printed with its spread and inputs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import peer
from bench._common import Spread, beside, dev_servers, pair_ratios, side_order


def test_the_order_alternates_with_the_baseline_beside_every_side() -> None:
    assert [side_order(n, 2) for n in range(4)] == [[0, 1], [1, 0], [0, 1], [1, 0]]
    rounds = [side_order(n, 3) for n in range(4)]
    assert rounds == [[0, 1, 2], [2, 1, 0], [0, 1, 2], [2, 1, 0]]
    # The baseline (side 1) runs right beside each other side, before it as often as after it.
    assert all(order[1] == 1 for order in rounds)
    for side in (0, 2):
        before = sum(order.index(side) < order.index(1) for order in rounds)
        assert before == len(rounds) // 2
    with pytest.raises(ValueError, match="2 or 3 sides"):
        side_order(0, 4)


def test_a_spread_is_the_median_quartiles_and_range_of_the_pairs() -> None:
    assert Spread.of([1.0, 2.0, 3.0, 4.0, 10.0]) == Spread(3.0, 2.0, 4.0, 1.0, 10.0, 5)
    assert Spread.of([1.25]) == Spread(1.25, 1.25, 1.25, 1.25, 1.25, 1)
    assert Spread.of([1.0, 1.5]).median == 1.25
    with pytest.raises(ValueError):
        Spread.of([])


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
    # The inputs note: exact totals without the warm-up round (its five-fold runs), every pair.
    inputs = next(line for line in out if line.startswith("# seq50.cpu_ratio: "))
    ours = sum(1.1 * 1.02**k for k in (3, 4, 7, 8, 11, 12))
    theirs = sum(1.02**k for k in (2, 5, 6, 9, 10, 13))
    assert f"durapipe {ours:.3f} s CPU, hand-written {theirs:.3f} s CPU" in inputs
    assert "over 300 leaves each, 6 pairs" in inputs
    assert inputs.endswith("per pair: 1.1220 1.0784 1.1220 1.0784 1.1220 1.0784")


async def test_a_third_side_pairs_with_the_baseline_in_the_same_rounds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = BusierMachine(_noop)
    monkeypatch.setattr(bench_main, "measure", machine)
    await bench_main.compare("concurrent200", bench_main.Work(_noop, _other, _noop, 200), (1, 2), 2)
    # Totals off runs on durapipe's worker (the fake counts it as ours), beside hand-written.
    assert machine.calls == ["ours", "theirs", "ours"] * 3
    out = capsys.readouterr().out
    assert "concurrent200.cpu_ratio.totals_off = " in out
    assert "# concurrent200.cpu_ratio.totals_off: durapipe totals off " in out


async def test_the_features_baseline_runs_right_beside_durapipe_and_leaves_the_pairs_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def ours() -> None: ...
    async def theirs() -> None: ...
    async def off() -> None: ...
    async def featured() -> None: ...

    names = {ours: "ours", theirs: "theirs", off: "off", featured: "features"}
    cost = {"ours": 1.2, "theirs": 1.0, "off": 1.1, "features": 1.05}
    calls: list[tuple[str, int]] = []

    async def measure(work: Callable[[], Awaitable[object]], pid: int) -> tuple[float, float]:
        calls.append((names[work], pid))
        return cost[names[work]], cost[names[work]]

    monkeypatch.setattr(bench_main, "measure", measure)
    await bench_main.compare(
        "seq50", bench_main.Work(ours, theirs, off, 50, featured), (1, 2, 3), 2
    )
    there = [("features", 3), ("ours", 1), ("theirs", 2), ("off", 1)]
    assert calls == there + there[::-1] + there
    out = capsys.readouterr().out.splitlines()
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
    assert [beside(side_order(n, 2), 2, next_to=0) for n in range(2)] == [[2, 0, 1], [1, 0, 2]]


def test_a_target_is_judged_on_the_median_and_says_how_far_the_pairs_agree(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bench = bench_main.Bench.__new__(bench_main.Bench)
    bench.results = {}
    inside = Spread(1.10, 1.08, 1.12, 1.05, 1.14, 10)
    straddling = Spread(1.12, 1.10, 1.16, 1.05, 1.19, 10)
    bench.judge("seq50", (inside, straddling))
    bench.judge("batch1000", (Spread(1.16, 1.1, 1.2, 1.0, 1.3, 5), inside))
    assert bench.results == {
        "seq50.wall_ratio": True,
        "seq50.cpu_ratio": True,
        "batch1000.wall_ratio": False,
        "batch1000.cpu_ratio": True,
    }
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "# seq50.wall_ratio <= 1.15: met by every pair",
        "# seq50.cpu_ratio <= 1.15: met by the median, not by 1.190, the highest pair",
        "# batch1000.wall_ratio <= 1.15: missed",
    ]


def test_the_peer_race_reports_the_median_of_its_rounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def contestant(name: str, cpus: list[float]) -> peer.Contestant:
        runs = {"seq50": cpus, "fanout200": cpus}
        return peer.Contestant(name, 0, _seq, _noop, walls=runs, cpus=runs)

    peer.report(
        [
            contestant("durapipe", [1.2, 1.1, 3.0]),
            contestant("handwritten", [1.0, 1.0, 1.0]),
            contestant("pydantic_ai", [1.5, 1.4, 1.6]),
        ],
        peer_debug_mode=False,
    )
    out = capsys.readouterr().out.splitlines()
    # Rounds: 1.2, 1.1, 3.0 against 1.0 each: the median 1.2, not the pooled 1.767.
    assert "peer.durapipe.seq50.cpu_ratio = 1.200" in out
    assert "peer.durapipe.seq50.cpu_ratio.range = 1.100-3.000" in out
    assert "peer.pydantic_ai.fanout200.wall_ratio = 1.500" in out
    assert "peer.seq50.rounds = 3" in out
    assert "peer.durapipe.seq50.cpu_ms_per_call = 35.3" in out  # 5.3 s / 3 rounds / 50 calls


async def test_the_peer_race_runs_hand_written_beside_each_contestant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[str] = []

    async def measure(self: peer.Contestant, part: str) -> None:
        runs.append(f"{self.name}:{part}")

    monkeypatch.setattr(peer.Contestant, "measure", measure)
    names = ("durapipe", "handwritten", "pydantic_ai")
    await peer.run_rounds([peer.Contestant(n, 0, _seq, _noop) for n in names], "seq50", 4)
    there, back = [f"{n}:seq50" for n in names], [f"{n}:seq50" for n in reversed(names)]
    assert runs == there + back + there + back


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
