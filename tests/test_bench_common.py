"""The bench's wait for a process to be ready: no fixed deadline (a loaded host starts workers
slowly), a line saying what it waits for, and one sentence, not a traceback, if the process died."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from bench import _common
from bench._common import wait_ready


def _child(log: Path, code: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-c", code], stdout=sink, stderr=subprocess.STDOUT)


def test_the_wait_has_no_fixed_deadline_and_says_what_it_waits_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "durapipe-worker.log"
    gate = tmp_path / "go"
    # Ready only once the test says so, after the clock below has passed 120 s many times over.
    child = _child(log, f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)"
                        "\nprint('worker ready', flush=True)")  # fmt: skip
    clock = {"now": 0.0, "polls": 0}

    def monotonic() -> float:
        clock["now"] += 30.0  # every look at the clock: 30 s of a very slow host
        return clock["now"]

    def sleep(_: float) -> None:
        clock["polls"] += 1
        if clock["polls"] == 40:  # 40 polls: about 20 minutes on this clock
            gate.touch()
        time.sleep(0.01)

    monkeypatch.setattr(_common, "time", types.SimpleNamespace(monotonic=monotonic, sleep=sleep))
    try:
        wait_ready(child, log, "worker ready")
    finally:
        child.wait(timeout=30)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"# waiting for durapipe-worker (pid {child.pid}) to print 'worker ready' in {log}"
    )
    assert any(line.startswith("# still waiting for durapipe-worker") for line in out)
    assert out[-1].startswith(f"# durapipe-worker (pid {child.pid}) ready after ")


def test_a_process_that_dies_first_ends_the_wait_in_one_sentence(tmp_path: Path) -> None:
    log = tmp_path / "durapipe-worker.log"
    child = _child(log, "print('starting'); print('ConfigError: DURAPIPE_LIMITS: no'); exit(3)")
    child.wait(timeout=30)
    with pytest.raises(SystemExit) as ended:
        wait_ready(child, log, "worker ready")
    assert str(ended.value) == (
        f"durapipe-worker (pid {child.pid}) exited with code 3 before it printed 'worker ready'; "
        f"its log {log} ends: ConfigError: DURAPIPE_LIMITS: no"
    )


def test_a_dead_process_is_reported_without_a_traceback(tmp_path: Path) -> None:
    log = tmp_path / "provider.log"
    script = (
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        "from bench._common import wait_ready\n"
        f"log = Path({str(log)!r})\n"
        "child = subprocess.Popen([sys.executable, '-c', 'exit(2)'])\n"
        "wait_ready(child, log, 'listening on')\n"
    )
    log.touch()
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert ran.returncode == 1
    assert "Traceback" not in ran.stderr
    assert ran.stderr.strip().endswith(f"its log {log} ends: (nothing)")


def test_a_thread_waiting_for_a_cpu_is_not_quiet() -> None:
    # On a busy host a spinning process may go a tick-length without a CPU; it is still busy.
    spinning = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    sleeping = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _common.runnable(spinning.pid)
        # The sleeper is runnable while Python starts, then asleep for good.
        deadline = time.monotonic() + 30
        while _common.runnable(sleeping.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _common.runnable(sleeping.pid)
        assert _common.runnable(spinning.pid)
    finally:
        for process in (spinning, sleeping):
            process.kill()
            process.wait()


async def test_cpu_is_read_once_the_process_is_quiet() -> None:
    # A process that keeps computing for a while after being asked (as a worker finishing a
    # run's logging) is charged for it: the reading waits until it stops.
    busy = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"
            "time.sleep(60)",
        ]
    )
    try:
        spent = await _common.cpu_when_quiet(busy.pid, quiet_s=0.2, at_most_s=60)
        assert spent >= 0.5, spent
        assert _common.cpu_seconds(busy.pid) == spent  # quiet: nothing more spent since
    finally:
        busy.kill()
        busy.wait()
