""".mthds bundles that tomllib cannot read without an error of Python's own: values nested past
the recursion limit, an integer past the digits Python converts. A client sends bundles to
`durapipe serve`, whose trust check and loader read them first: each is one problem naming the
bundle, not a runner's bug (a 500 and a traceback in its log) nor a traceback from the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from durapipe.adapters.mthds._bundle import parse_bundle
from durapipe.serve._trust import Capabilities, bundle_function_problems, unregistered
from tests.support import cli_env, durapipe_command

BOMBS = {
    "nested": ("x = " + "[" * 50_000 + "]" * 50_000, "values are nested too deeply"),
    "digits": ("x = " + "9" * 50_000, "an integer has more digits than can be read"),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
def test_a_bundle_tomllib_cannot_read_is_one_problem(bomb: str, tmp_path: Path) -> None:
    text, why = BOMBS[bomb]
    bundle = f'domain = "d"\n{text}\n'
    # serve's trust check reads the bundle before its loader does: unreadable, it leaves it be.
    bundles = {"m.mthds": bundle.encode()}
    assert bundle_function_problems(bundles, Capabilities()) == []
    assert unregistered(bundles, Capabilities()) == set()
    _, problems = parse_bundle(bundle, "m.mthds")
    assert [p.message for p in problems] == [f"not valid TOML: {why}"]
    (tmp_path / "m.mthds").write_text(bundle)
    done = subprocess.run(
        durapipe_command("validate", str(tmp_path / "m.mthds")),
        capture_output=True, text=True, env=cli_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert why in done.stderr
    assert "Traceback" not in done.stderr
