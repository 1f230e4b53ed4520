"""The public API says what it exports: each `__all__` matches what its module defines (no pinned
second copy of the list), the top level stays small, and importing durapipe stays fast."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

import durapipe

# The top level is the core a newcomer holds in their head; operations live in these submodules.
PUBLIC_MODULES = [
    "durapipe",
    "durapipe.client",
    "durapipe.ops",
    "durapipe.security",
    "durapipe.serve",
    "durapipe.spec",
    "durapipe.stores",
    "durapipe.testing",
    "durapipe.testing.fake_provider",
]
MAX_TOP_LEVEL = 60


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_matches_the_public_members(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"
    public = {
        n
        for n, value in vars(module).items()
        if not n.startswith("_")
        and not isinstance(value, types.ModuleType)  # submodules are reached, not exported
        and n != "annotations"  # `from __future__ import annotations`
        and n != "Any"
    }
    assert public <= set(exported) | _lazy(module), (
        f"{name} has public names missing from __all__: {sorted(public - set(exported))}"
    )


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_exported_class_and_function_has_a_docstring(name: str) -> None:
    module = importlib.import_module(name)
    bare = [
        n
        for n in module.__all__
        if callable(value := getattr(module, n))
        and isinstance(value, (type, types.FunctionType))
        and not (value.__doc__ or "").strip()
    ]
    assert not bare, f"{name}: no docstring on {bare}"


def test_the_top_level_is_small() -> None:
    assert len(durapipe.__all__) <= MAX_TOP_LEVEL, (
        f"durapipe.__all__ has {len(durapipe.__all__)} names; put operations in a submodule"
    )


def test_importing_durapipe_does_not_import_litellm() -> None:
    code = "import sys, durapipe, durapipe.cli; print('litellm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the CLI must start fast; litellm takes seconds


def _lazy(module: types.ModuleType) -> set[str]:
    """Names a module loads on first use (PEP 562), listed in its `__all__` on purpose."""
    return set(module.__all__) if hasattr(module, "__getattr__") else set()
