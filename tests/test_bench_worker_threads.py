"""The per-thread bench reads the kernel's counters right, charges a run's work to the group whose
threads did it (the ended threads' too), names Python threads so their groups can be told apart,
and prints durapipe minus each baseline per leaf."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.worker_threads import (
    TICK_US,
    Counts,
    Window,
    comm_name,
    differences,
    parse_thread,
    read_threads,
    sitecustomize,
    spent,
    table,
)

STAT = "4242 (tokio-rt worker) S 1 2 3 0 -1 4194560 10 0 2 0 7 3 0 0 20 0 1 0 5 6 7"
STATUS = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t5\n"


def test_a_threads_counters_come_from_stat_schedstat_and_status() -> None:
    name, counts = parse_thread(STAT, "1500000 999 8\n", STATUS)
    assert name == "tokio-rt worker"  # a name with a space does not shift the fields
    assert counts == Counts(
        1500.0, 7 * TICK_US, 3 * TICK_US, 8, 12, 5, 10 + 2
    )  # minor + major faults


def test_python_threads_get_their_groups_name() -> None:
    assert comm_name("temporal_workflow__3") == "py:workflow"
    assert comm_name("asyncio_0") == "py:executor"
    assert comm_name("durapipe-wal-copier-long") == "py:durapipe-wal"  # 15 bytes, the kernel's


def test_a_run_is_charged_to_the_groups_that_did_it_and_ended_threads_to_exited() -> None:
    before = ({1: ("main", Counts(cpu_us=100, user_us=0)), 2: ("py:executor", Counts(slices=3))},
              0.0)  # fmt: skip
    after = (
        {
            1: ("main", Counts(cpu_us=400, user_us=5 * TICK_US, slices=9)),
            3: ("py:executor", Counts(cpu_us=50, slices=2)),  # born during the run
        },
        9 * TICK_US,  # the process's time: 4 ticks more than its live threads'
    )
    window = spent(before, after)
    assert window.groups["main"] == Counts(cpu_us=300, user_us=5 * TICK_US, slices=9)
    assert window.groups["py:executor"] == Counts(cpu_us=50, slices=2)
    assert window.groups["exited"].cpu_us == 4 * TICK_US
    assert window.threads == {"main": 1, "py:executor": 1}


def test_the_table_gives_durapipe_minus_each_baseline_per_leaf_with_the_rounds_spread() -> None:
    def window(main: float, tokio: float) -> Window:
        groups = {"main": Counts(cpu_us=main), "tokio-rt-worker": Counts(cpu_us=tokio)}
        return Window(groups, Counter(dict.fromkeys(groups, 1)))

    windows = {
        "durapipe": [window(1000, 500), window(1200, 500)],
        "handwritten": [window(1000, 300), window(1000, 300)],
        "features": [window(1100, 500), window(1100, 500)],
    }
    assert differences(windows["durapipe"], windows["handwritten"], "*", 10) == [20.0, 40.0]
    lines = table(windows, 10, [("durapipe", "handwritten"), ("durapipe", "features")])
    # The group with the biggest gap to the minimal baseline comes first, the total last.
    assert lines[1].split()[:3] == ["tokio-rt-worker", "durapipe", "50.0"]
    assert "durapipe - handwritten: +20.0 µs CPU/leaf (rounds +20.0 to +20.0)" in lines[4]
    assert (
        "durapipe - handwritten: +30.0 µs CPU/leaf (rounds +20.0 to +40.0; by round +20 +40)"
        in lines[-2]
    )
    assert lines[-4].split()[:3] == ["total", "handwritten", "130.0"]


def test_the_sitecustomize_names_a_workers_python_threads(tmp_path: Path) -> None:
    code = (
        "import threading\n"
        "def look():\n"
        "    print(open(f'/proc/self/task/{threading.get_native_id()}/comm').read().strip())\n"
        "t = threading.Thread(target=look, name='asyncio_3'); t.start(); t.join()\n"
    )
    env = {"PATH": "/usr/bin:/bin", **sitecustomize(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "py:executor", out.stderr
    threads, total = read_threads(os.getpid())
    assert any(group == "main" for group, _ in threads.values()) and total > 0
