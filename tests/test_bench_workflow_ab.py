"""The workflow A/B's ``versus``: another checkout's package is importable beside this one."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from bench.workflow_ab import old_package


def test_an_old_checkout_is_copied_as_durapipe_old_with_its_imports_renamed(
    tmp_path: Path,
) -> None:
    package = tmp_path / "old" / "durapipe"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from durapipe.sub import NAME\n"
        "import durapipe.sub as sub\n"
        "ACTIVITY = 'durapipe.llm'  # a name recorded in histories: kept\n"
    )
    (package / "sub" / "__init__.py").write_text("NAME = 'old'\n")
    into = tmp_path / "into"
    into.mkdir()
    try:
        module = importlib.import_module(old_package(tmp_path / "old", into))
        assert (module.__name__, module.NAME, module.sub.__name__) == (
            "durapipe_old",
            "old",
            "durapipe_old.sub",
        )
        assert module.ACTIVITY == "durapipe.llm"
    finally:
        sys.path.remove(str(into))
        for name in [n for n in sys.modules if n.split(".")[0] == "durapipe_old"]:
            del sys.modules[name]
