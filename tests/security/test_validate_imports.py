"""Issue 15, item 7: `durapipe validate FILE` imports nothing next to the file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support import cli_env, durapipe_command

PIPES = """
pipes:
  count:
    kind: tool
    function: helper_15:count
    inputs: {text: text}
"""


def test_validate_does_not_import_the_modules_a_pipeline_names(tmp_path: Path) -> None:
    marker = tmp_path / "imported.marker"
    (tmp_path / "helper_15.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n\ndef count(text: str) -> int:\n    return 1\n"
    )
    (tmp_path / "pipes.yaml").write_text(PIPES)
    done = subprocess.run(
        durapipe_command("validate", str(tmp_path / "pipes.yaml")),
        capture_output=True, text=True, env=cli_env(), timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ok, 1 pipe" in done.stdout
    assert not marker.exists()


def test_validate_still_reports_a_malformed_function_reference(tmp_path: Path) -> None:
    (tmp_path / "pipes.yaml").write_text(PIPES.replace("helper_15:count", "helper_15"))
    done = subprocess.run(
        durapipe_command("validate", str(tmp_path / "pipes.yaml")),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "pipe 'count'" in done.stderr and "function" in done.stderr
