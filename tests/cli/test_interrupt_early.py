"""Ctrl-C while the CLI is still loading (its imports take a second or more) ends the command
quietly with exit code 130, as a Ctrl-C does once a command runs: the `durapipe` console script
and `python -m durapipe` alike."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.support import cli_env, durapipe_command, interruptible_popen

CONSOLE_SCRIPT = Path(sys.executable).with_name("durapipe")
# A shared library the package's imports load early (pydantic's core), long before they end.
LOADED_EARLY = "pydantic_core"


def _interrupted_while_loading(command: list[str], tmp_path: Path) -> tuple[int, str]:
    err = tmp_path / "stderr.txt"
    with err.open("wb") as stderr:
        process = interruptible_popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=cli_env()
        )
    try:
        maps = Path(f"/proc/{process.pid}/maps")
        deadline = time.monotonic() + 60
        # Mid-import: the library is mapped, and the command has not run yet (it would end).
        while LOADED_EARLY not in maps.read_text():
            assert process.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.002)
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, err.read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps")
@pytest.mark.parametrize("how", ["console script", "python -m durapipe"])
def test_ctrl_c_while_the_cli_loads_exits_130_without_a_traceback(how: str, tmp_path: Path) -> None:
    args = ["validate", str(EXAMPLES / "brief.yaml")]
    command = [str(CONSOLE_SCRIPT), *args] if how == "console script" else durapipe_command(*args)
    code, stderr = _interrupted_while_loading(command, tmp_path)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert code == 130, stderr
