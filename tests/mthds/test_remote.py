"""Remote dependencies: resolved from the MTHDS package cache (durapipe never fetches), pinned by
``methods.lock`` (version and integrity hash), refused in one sentence when they cannot be."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.adapters.mthds import load_method, validate_mthds
from durapipe.adapters.mthds._remote import package_hash
from tests.mthds.conftest import PACKAGES

ADDRESS = "github.com/durapipe-tests/scoring-lib"
SCORE = "scoring-scoring-score_text"


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The editorial package with its scoring dependency made remote, and an empty package cache."""
    root = tmp_path / "editorial"
    shutil.copytree(PACKAGES / "editorial", root)
    manifest = root / "METHODS.toml"
    manifest.write_text(manifest.read_text().replace(', path = "../scoring_lib"', ""))
    monkeypatch.setenv("DURAPIPE_MTHDS_PACKAGES", str(tmp_path / "cache"))
    return root


def _cache(tmp_path: Path, version: str) -> Path:
    """Version ``version`` of the scoring package in the cache, its pipe's description naming it."""
    folder = tmp_path / "cache" / ADDRESS / version
    shutil.copytree(PACKAGES / "scoring_lib", folder)
    bundle = folder / "scoring.mthds"
    text = bundle.read_text()
    old = 'description = "Score a text ('
    bundle.write_text(text.replace(old, f'description = "v{version}: Score a text ('))
    return folder


def _lock(package: Path, version: str, digest: str) -> None:
    (package / "methods.lock").write_text(
        f'["{ADDRESS}"]\nversion = "{version}"\nhash = "{digest}"\nsource = "https://{ADDRESS}"\n'
    )


def _loaded_version(package: Path) -> str:
    description = load_method(package).pipeline.pipes[SCORE].description or ""
    return description.split(":")[0]


def test_a_remote_dependency_not_in_the_cache_is_refused_in_one_sentence(package: Path) -> None:
    [problem] = validate_mthds(package)
    text = str(problem)
    assert "dependency 'scoring'" in text and ADDRESS in text and "^0.2.0" in text
    assert "durapipe does not fetch packages" in text and "mthds pkg install" in text


def test_the_lowest_cached_version_that_fits_is_loaded(package: Path, tmp_path: Path) -> None:
    for version in ("0.1.0", "0.2.5", "0.2.1", "0.3.0"):
        _cache(tmp_path, version)
    # ^0.2.0 accepts 0.2.x only; minimum version selection picks 0.2.1.
    assert _loaded_version(package) == "v0.2.1"


async def test_methods_lock_pins_the_version_and_its_hash(
    package: Path, tmp_path: Path, mthds_worker: tuple[Any, str]
) -> None:
    _cache(tmp_path, "0.2.1")
    pinned = _cache(tmp_path, "0.2.5")
    _lock(package, "0.2.5", package_hash(pinned))
    assert _loaded_version(package) == "v0.2.5"
    # The package runs with its remote dependency, on Temporal as with --local.
    client, task_queue = mthds_worker
    pipeline = load_method(package).pipeline
    run_id = f"mthds-remote-{uuid.uuid4().hex[:8]}"
    on_temporal = await dp.run(
        client, pipeline, "publish", {"topic": "tides"}, run_id=run_id, task_queue=task_queue
    )
    local = await dp.run_local(pipeline, "publish", {"topic": "tides"})
    assert on_temporal.output == local.output
    assert set(local.output) == {"value", "reason"}
    # A cached package changed after it was locked fails the integrity check.
    (pinned / "scoring.mthds").write_text((pinned / "scoring.mthds").read_text() + "\n# edited\n")
    [problem] = validate_mthds(package)
    assert "does not match methods.lock" in str(problem) and "install it again" in str(problem)


@pytest.mark.parametrize(
    ("lock", "expected"),
    [
        ("0.1.0", "methods.lock pins github.com/durapipe-tests/scoring-lib 0.1.0, which its"),
        ("0.2.9", "(github.com/durapipe-tests/scoring-lib 0.2.9, pinned by methods.lock) is not"),
    ],
)
def test_a_lock_the_cache_or_the_constraint_cannot_honour_is_named(
    package: Path, tmp_path: Path, lock: str, expected: str
) -> None:
    _cache(tmp_path, "0.1.0")
    _lock(package, lock, "sha256:" + "0" * 64)
    problems = [str(p) for p in validate_mthds(package)]
    assert any(expected in p for p in problems), problems


def test_a_broken_lock_and_a_bad_address_are_named(package: Path) -> None:
    (package / "methods.lock").write_text(f'["{ADDRESS}"]\nversion = "1.0"\nhash = "md5:x"\n')
    manifest = package / "METHODS.toml"
    manifest.write_text(manifest.read_text().replace(ADDRESS, "github.com/../../etc"))
    problems = [str(p) for p in validate_mthds(package)]
    assert any("methods.lock" in p and "hash 'md5:x' must be sha256:" in p for p in problems)
    assert any("'github.com/../../etc' is not a package address" in p for p in problems)
