"""A package address before ``->`` (Pipelex's `github.com/Pipelex/methods/documents->...`) resolves
from installed methods on this machine only: the package's ``.mthds/methods/``, the configured
store (``DURAPIPE_MTHDS_METHODS``) or a declared dependency with that address. A miss is one
sentence; nothing is fetched and no folder outside the stores is read."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import durapipe as dp
from durapipe.adapters.mthds import load_method, validate_mthds
from durapipe.cli import app
from durapipe.serve._methods import load_method as load_sent_method
from durapipe.serve._problems import ServeError
from tests.conftest import EXAMPLES
from tests.mthds.conftest import PACKAGES
from tests.support import WorkerProcess, run_cli

# The scoring_lib test package's manifest: address github.com/durapipe-tests/scoring-lib, name
# scoring_lib. Pipelex writes <address>/<name>; the case need not match.
BY_NAME = "github.com/Durapipe-Tests/scoring-lib/scoring_lib"
SCORE = "scoring_lib-scoring-score_text"


def _bundle(folder: Path, address: str = BY_NAME, pipe: str = "score_text") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "review.mthds"
    path.write_text(
        f"""domain      = "review"
description = "Score an article with an installed method, named by its address"
main_pipe   = "review"

[pipe.review]
type        = "PipeSequence"
description = "Score the article"
inputs      = {{ article = "Text" }}
output      = "{address}->scoring.Score"
steps = [
  {{ pipe = "{address}->scoring.{pipe}", result = "score" }},
]
"""
    )
    return path


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty configured store (so no method installed on this machine is found)."""
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("DURAPIPE_MTHDS_METHODS", str(store))
    return store


async def test_an_address_resolves_from_the_configured_store_and_runs(
    tmp_path: Path, stores: Path, mthds_worker: tuple[Any, str]
) -> None:
    # Laid out as `mthds install` does: <store>/<repository>/<method>/.
    shutil.copytree(PACKAGES / "scoring_lib", stores / "durapipe-tests" / "scoring_lib")
    pipeline = load_method(_bundle(tmp_path / "app")).pipeline
    assert SCORE in pipeline.pipes
    client, task_queue = mthds_worker
    inputs = {"article": "Tides rise twice a day."}
    run_id = f"mthds-address-{uuid.uuid4().hex[:8]}"
    on_temporal = await dp.run(
        client, pipeline, "review", inputs, run_id=run_id, task_queue=task_queue
    )
    local = await dp.run_local(pipeline, "review", inputs)
    assert on_temporal.output == local.output
    assert set(local.output) >= {"value", "reason"}


def test_an_address_resolves_from_the_packages_own_methods_folder(
    tmp_path: Path, stores: Path
) -> None:
    app_folder = tmp_path / "app"
    _bundle(app_folder)
    (app_folder / "METHODS.toml").write_text(
        '[package]\naddress = "github.com/acme/app"\nversion = "0.1.0"\ndescription = "An app"\n'
    )
    shutil.copytree(PACKAGES / "scoring_lib", app_folder / ".mthds" / "methods" / "scoring_lib")
    method = load_method(app_folder)
    assert SCORE in method.pipeline.pipes
    # The installed method is a dependency, not a bundle of the package.
    assert [b.domain for b in method.library.bundles] == ["review"]


def test_an_address_names_a_declared_dependency(stores: Path) -> None:
    # editorial declares scoring_lib as a path dependency; its address works before `->` too.
    writing = PACKAGES / "editorial" / "bundles" / "writing.mthds"
    text = writing.read_text().replace(
        '"scoring->scoring.score_text"',
        '"github.com/durapipe-tests/scoring-lib->scoring.score_text"',
    )
    assert text != writing.read_text()
    package = stores.parent / "editorial"
    shutil.copytree(PACKAGES / "editorial", package)
    (package / "bundles" / "writing.mthds").write_text(text)
    manifest = package / "METHODS.toml"
    manifest.write_text(
        manifest.read_text().replace('"../scoring_lib"', f'"{PACKAGES / "scoring_lib"}"')
    )
    pipeline = load_method(package).pipeline
    assert [
        s.pipe
        for s in pipeline.pipes["publish"].steps  # type: ignore[union-attr]
    ] == ["draft_article", "review_article", "scoring-scoring-score_text"]
    # A tag must agree with the declared dependency's version (scoring_lib is 0.2.0).
    pinned = text.replace("scoring-lib->", "scoring-lib@v0.2.0->")
    (package / "bundles" / "writing.mthds").write_text(pinned)
    assert not validate_mthds(package)
    (package / "bundles" / "writing.mthds").write_text(pinned.replace("@v0.2.0", "@v9.0.0"))
    assert any(
        "pins version 9.0.0, but dependency 'scoring' (METHODS.toml [dependencies], that "
        "address) is version 0.2.0" in str(p)
        for p in validate_mthds(package)
    )


def test_a_missing_address_is_one_sentence_and_nothing_outside_the_stores_is_read(
    tmp_path: Path, stores: Path
) -> None:
    # The package sits right beside the bundle, but in no store: it is not found.
    shutil.copytree(PACKAGES / "scoring_lib", tmp_path / "scoring_lib")
    path = _bundle(tmp_path)
    problems = validate_mthds(path)
    assert len(problems) == 2  # the step and the output concept, each at its line
    [text] = [str(p) for p in problems if str(p).startswith(f"{path}:11:")]
    assert text.startswith(f"{path}:11: bundle 'review', pipe 'review', step 1")
    assert f"package '{BY_NAME}' is not installed here" in text
    assert str(stores) in text and "durapipe does not fetch packages" in text
    assert "DURAPIPE_MTHDS_METHODS" in text and "[dependencies]" in text
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_an_installed_method_keeps_its_private_pipes_private(tmp_path: Path, stores: Path) -> None:
    shutil.copytree(PACKAGES / "scoring_lib", stores / "scoring_lib")
    problems = validate_mthds(_bundle(tmp_path / "app", pipe="rate"))
    assert any("pipe 'scoring.rate' of dependency" in str(p) for p in problems), problems
    assert any("is not exported" in str(p) for p in problems)


def test_bundle_text_resolves_from_the_folders_the_caller_names(
    tmp_path: Path, stores: Path
) -> None:
    given = tmp_path / "given"
    shutil.copytree(PACKAGES / "scoring_lib", given / "scoring_lib")
    text = _bundle(tmp_path / "app").read_text()
    assert validate_mthds(text, source="review.mthds")  # not in the configured store
    assert SCORE in load_method(text, source="review.mthds", methods=[given]).pipeline.pipes


def test_the_methods_option_names_the_store_on_the_command_line(
    tmp_path: Path, stores: Path, temporal_address: str, task_queue: str
) -> None:
    # Before, only DURAPIPE_MTHDS_METHODS (here an empty store) or load_method(methods=) could.
    given = tmp_path / "given"
    shutil.copytree(PACKAGES / "scoring_lib", given / "scoring_lib")
    path = _bundle(tmp_path / "app")
    missed = CliRunner().invoke(app, ["validate", str(path)])
    assert missed.exit_code == 2 and "is not installed here" in missed.output
    found = CliRunner().invoke(app, ["validate", str(path), "--methods", str(given)])
    assert found.exit_code == 0, found.output
    assert found.output.startswith(f"{path}: ok, 3 pipes")
    # A worker and a run on Temporal, each told the store by the option.
    worker = WorkerProcess(
        path, temporal_address, task_queue, tmp_path / "worker.log", "--methods", str(given)
    )
    try:
        ran = run_cli(
            "run", "review", "--file", str(path), "--methods", str(given),
            "--inputs", '{"article": "Tides rise twice a day."}',
            "--address", temporal_address, "-t", task_queue,
        )  # fmt: skip
    finally:
        worker.stop()
    assert ran.returncode == 0, ran.stderr
    assert {"value", "reason"} <= set(json.loads(ran.stdout))
    # `durapipe serve --methods`: a method a client sends resolves from the server's folders.
    sent = {"review.mthds": path.read_bytes()}
    with pytest.raises(ServeError):
        load_sent_method(sent)
    assert SCORE in load_sent_method(sent, methods=[given]).pipeline.pipes
    # A mistake: a file that is no bundle, a folder that does not exist.
    yaml = CliRunner().invoke(
        app, ["validate", str(EXAMPLES / "brief.yaml"), "--methods", str(given)]
    )
    assert yaml.exit_code == 2
    assert "--methods applies to MTHDS bundles (.mthds) and packages only" in yaml.output
    nowhere = CliRunner().invoke(app, ["validate", str(path), "--methods", str(tmp_path / "no")])
    assert nowhere.exit_code == 2
    assert nowhere.stderr == (
        f"error: --methods '{tmp_path / 'no'}': no such folder; give a folder of installed methods\n"
    )


def _version(folder: Path, version: str) -> Path:
    manifest = folder / "METHODS.toml"
    manifest.write_text(
        manifest.read_text().replace('version     = "0.2.0"', f'version = "{version}"')
    )
    return folder


def test_a_tagged_address_takes_the_installed_copy_of_that_version(
    tmp_path: Path, stores: Path
) -> None:
    # The tag was ignored: any installed version matched. A tag is a version (the spec's tags
    # `v1.0.0`, its `v` stripped), which a copy's manifest states.
    shutil.copytree(PACKAGES / "scoring_lib", stores / "old" / "scoring_lib")
    newer = _version(
        shutil.copytree(PACKAGES / "scoring_lib", stores / "new" / "scoring_lib"), "0.3.0"
    )
    for tag, folder in (("v0.2.0", "old"), ("0.3.0", "new"), ("V0.3.0", "new")):
        method = load_method(_bundle(tmp_path / tag, f"{BY_NAME}@{tag}"))
        [dep] = method.library.by_address.values()
        assert Path(dep.bundles[0].source).is_relative_to(stores / folder), (tag, dep)
    # A version no store holds is refused, naming the bundle, the address and what is installed.
    shutil.rmtree(newer)
    path = _bundle(tmp_path / "missing", f"{BY_NAME}@v0.3.0")
    problems = [str(p) for p in validate_mthds(path)]
    [text] = [p for p in problems if p.startswith(f"{path}:11:")]
    assert text.startswith(f"{path}:11: bundle 'review', pipe 'review', step 1")
    assert (
        f"package '{BY_NAME}@v0.3.0' pins version 0.3.0, but only other versions of it are "
        f"installed here ({stores / 'old' / 'scoring_lib'}: version 0.2.0)"
    ) in text
    assert "drop '@v0.3.0' to run the installed version" in text
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    # A copy Pipelex fetched records its tag (`.provenance.json`): a tag that is no version too.
    (stores / "old" / "scoring_lib" / ".provenance.json").write_text(
        '{"address": "github.com/durapipe-tests/scoring-lib", "tag": "spring-release"}'
    )
    assert not validate_mthds(_bundle(tmp_path / "named", f"{BY_NAME}@spring-release"))
