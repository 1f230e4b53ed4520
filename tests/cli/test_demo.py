"""`durapipe demo` (what `make demo` runs): exits 0, prints the result and a UI address, cleans up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

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
    # Each wait says what it waits for: the worker's start (litellm's import) took 16 s of
    # silence between the server's line and the worker's on a loaded machine.
    lines = done.stderr.splitlines()
    server = next(n for n, line in enumerate(lines) if line.startswith("Temporal dev server: "))
    assert lines[server + 1] == (
        "starting a worker (it loads the model library, litellm: a few seconds, more on a busy "
        "machine)..."
    )
    assert lines[server + 2].startswith("worker running on task queue ")
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


def test_demo_keep_says_which_address_to_pass_to_show() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "durapipe", "demo", "--keep"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=240,
    )
    pid = re.search(r"keeps running \(pid (\d+)\)", done.stderr)
    try:
        assert done.returncode == 0, done.stderr
        hint = re.search(
            r"^look at the run with: (durapipe show \S+ --address \S+)$", done.stderr, re.MULTILINE
        )
        assert hint, done.stderr
        shown = subprocess.run(
            [sys.executable, "-m", *hint.group(1).split()],
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert " succeeded" in shown.stdout and "verify (llm" in shown.stdout
    finally:
        if pid:  # the kept server, stopped by its own pid
            os.kill(int(pid.group(1)), signal.SIGTERM)


def test_demo_outside_the_clone_says_where_to_run_it(tmp_path: Path) -> None:
    # Run from another folder, the demo said only "pipeline file 'examples/brief.yaml' does not
    # exist": the example lives in the repository, which a user may not be in.
    done = subprocess.run(
        [sys.executable, "-m", "durapipe", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: pipeline file 'examples/brief.yaml' does not exist: the demo runs the example of "
        "durapipe's repository; run it in the clone's folder (as `make demo` does), or name a "
        "pipeline file with --file\n"
    )
