"""A package (METHODS.toml) with two bundles and a local path dependency: bare, domain-qualified and
``alias->domain.pipe`` references, exports, on Temporal and with --local."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

import durapipe as dp
from durapipe.adapters.mthds import load_method, validate_mthds
from tests.mthds.conftest import PACKAGES

EDITORIAL = PACKAGES / "editorial"


async def test_package_runs_across_bundles_and_its_dependency(
    mthds_worker: tuple[Any, str],
) -> None:
    client, task_queue = mthds_worker
    method = load_method(EDITORIAL)
    assert method.main_pipe == "publish"
    pipeline = method.pipeline
    # The dependency's pipes keep their package apart: alias-domain-code.
    assert {"scoring-scoring-score_text", "scoring-scoring-rate"} <= set(pipeline.pipes)
    inputs = {"topic": "tides"}
    run_id = f"mthds-package-{uuid.uuid4().hex[:8]}"
    on_temporal = await dp.run(
        client, pipeline, "publish", inputs, run_id=run_id, task_queue=task_queue
    )
    local = await dp.run_local(pipeline, "publish", inputs)
    assert on_temporal.output == local.output
    assert set(local.output) == {"value", "reason"}
    assert [s.path for s in local.steps] == [
        "article",
        "review",
        "score",
        "score/score",
    ]


def test_a_bundle_of_a_package_loads_with_its_package() -> None:
    method = load_method(EDITORIAL / "bundles" / "writing.mthds")
    assert "review_article" in method.pipeline.pipes
    assert method.main_pipe == "publish"


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "pkgs"
    shutil.copytree(PACKAGES, root)
    return root / "editorial"


def test_an_export_no_bundle_defines_is_a_note_not_a_refusal(tmp_path: Path) -> None:
    # Pipelex loads and runs such a package; only `pipelex pkg publish` refuses it (Pipelex/methods'
    # due_diligence exports pipes under a domain its bundles do not use).
    package = _copy(tmp_path)
    manifest = package / "METHODS.toml"
    text = manifest.read_text()
    assert 'pipes = ["review_article"]' in text
    manifest.write_text(
        text.replace('pipes = ["review_article"]', 'pipes = ["review_article", "rewrite"]')
    )
    assert validate_mthds(package) == []
    (note,) = load_method(package).notes
    assert str(note) == (
        f"{manifest}: METHODS.toml, [exports.editorial.review]: exports 'rewrite', which no bundle "
        "of domain 'editorial.review' defines: nothing outside the package can call it (Pipelex "
        "runs such a package too, and refuses it only when publishing)"
    )


def test_a_bare_code_of_another_domain_is_refused_naming_the_domain(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    writing = package / "bundles" / "writing.mthds"
    text = writing.read_text()
    assert '"editorial.review.review_article"' in text
    writing.write_text(text.replace('"editorial.review.review_article"', '"review_article"'))
    (problem,) = validate_mthds(package)
    assert problem.message.endswith(
        "domain 'editorial.review' of this package has one: write "
        "'editorial.review.review_article' (a bare code names a pipe of its own domain only, in "
        "Pipelex too)"
    )


def test_a_private_pipe_of_a_dependency_is_refused(tmp_path: Path) -> None:
    package = _copy(tmp_path)
    writing = package / "bundles" / "writing.mthds"
    writing.write_text(
        writing.read_text().replace("scoring->scoring.score_text", "scoring->scoring.rate")
    )
    (problem,) = validate_mthds(package)
    assert (
        problem.where
        == "bundle 'editorial.writing', pipe 'publish', step 3 ('scoring->scoring.rate')"
    )
    assert "not exported (add it to [exports.scoring] pipes in its METHODS.toml)" in problem.message
    assert problem.source == f"{writing}:17"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'version     = "0.1.0"',
            'version = "one"',
            "field 'version': 'one' is not a semantic version",
        ),
        (
            'path = "../scoring_lib"',
            'path = "../nowhere"',
            "dependency 'scoring': no METHODS.toml at",
        ),
        (
            'pipes = ["publish", "draft_article"]',
            'pipes = ["draft_article"]',
            "'publish' must be listed in [exports]",
        ),
        (
            'name        = "editorial"',
            'name = "Editorial Team"',
            "field 'name': 'Editorial Team' must",
        ),
    ],
)
def test_manifest_mistakes_are_named(tmp_path: Path, old: str, new: str, expected: str) -> None:
    package = _copy(tmp_path)
    manifest = package / "METHODS.toml"
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new))
    problems = validate_mthds(package)
    assert any(expected in str(p) for p in problems), [str(p) for p in problems]
