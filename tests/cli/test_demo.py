"""`durapipe demo` (what `make demo` runs): exits 0, prints the result and a UI address, cleans up."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT
from tests.support import cli_env


def test_demo_prints_result_run_id_and_ui_address_and_stops_its_server() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "durapipe", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert '"word_count": ' in done.stdout and '"claims": ' in done.stdout
    run_id = re.search(r"^run id: (\S+)$", done.stdout, re.MULTILINE)
    ui = re.search(
        r"^Temporal UI: http://127\.0\.0\.1:(\d+)/namespaces/default/workflows/(\S+)$",
        done.stdout,
        re.MULTILINE,
    )
    assert run_id and ui and ui.group(2) == run_id.group(1)
    assert "✓ fact_check/verify" in done.stderr
    assert "stopped the dev server" in done.stderr
    # The server it started is gone: nothing listens on the UI port any more.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import socket; socket.create_connection(('127.0.0.1', {ui.group(1)}), 1)",
        ],
        capture_output=True,
    )
    assert probe.returncode != 0
