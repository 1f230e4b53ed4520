"""The DURAPIPE_* settings: read through one object, validated when a client or worker starts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import durapipe as dp
from durapipe._settings import PREFIX, Settings, settings
from tests.support import ROOT

PIPELINE = dp.pipeline(dp.llm("ask", prompt="hi"))


async def test_a_bad_value_fails_the_client_at_start_naming_the_variable(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPIPE_WORKFLOW_SANDBOX", "maybe")
    with pytest.raises(dp.ConfigError) as caught:
        await dp.connect(temporal_address, pipeline=PIPELINE)
    assert str(caught.value).startswith("DURAPIPE_WORKFLOW_SANDBOX='maybe' is not valid: ")
    monkeypatch.setenv("DURAPIPE_WORKFLOW_SANDBOX", "on")
    assert settings().workflow_sandbox is True  # a changed environment is read again


def test_every_change_to_the_environment_is_read_and_an_unchanged_one_is_not_parsed_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DURAPIPE_OFFLINE_DELAY", "0.25")
    first = settings()
    assert first.offline_delay == 0.25
    assert settings() is first  # an unchanged environment: the same object, no parse
    monkeypatch.setenv("DURAPIPE_OFFLINE_DELAY", "0.5")
    assert settings().offline_delay == 0.5
    monkeypatch.delenv("DURAPIPE_OFFLINE_DELAY")
    assert settings().offline_delay is None
    monkeypatch.setenv("DURAPIPE_OFFLINE_DELAY", "0.25")
    assert settings() is first  # back to earlier values: the settings parsed then


async def test_an_unwritable_store_fails_the_worker_at_start(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client = await dp.connect(temporal_address, pipeline=PIPELINE)
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a folder under a file cannot be made, even by root
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", str(blocker / "db" / "checkpoints.sqlite"))
    with pytest.raises(dp.ConfigError) as caught:
        dp.build_worker(client, task_queue=task_queue)
    assert str(caught.value) == (
        f"DURAPIPE_CHECKPOINTS: cannot write to {blocker / 'db'} (Not a directory); "
        "set DURAPIPE_CHECKPOINTS to a writable folder"
    )
    monkeypatch.setenv("DURAPIPE_CHECKPOINTS", str(tmp_path / "db" / "checkpoints.sqlite"))
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(blocker / "blobs"))
    with pytest.raises(dp.ConfigError, match=r"^DURAPIPE_BLOB_DIR: cannot write to "):
        dp.build_worker(client, task_queue=task_queue)
    monkeypatch.setenv("DURAPIPE_BLOB_DIR", str(tmp_path / "blobs"))
    monkeypatch.setenv("DURAPIPE_PAYLOAD_STORE", str(tmp_path / "payloads"))
    dp.build_worker(client, task_queue=task_queue)  # writable: the worker is built
    assert (tmp_path / "db").is_dir() and (tmp_path / "blobs").is_dir()


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("DURAPIPE_MODEL_PRICES", "{not json", "not JSON"),
        ("DURAPIPE_MODEL_PRICES", "/no/such/prices.json", "cannot read the file"),
        ("DURAPIPE_MODEL_PRICES", '{"openai/x": 3}', "expected {"),
        ("DURAPIPE_OFFLINE_DELAY", "soon", "valid number"),
        ("DURAPIPE_OFFLINE_DELAY", "-1", "greater than or equal to 0"),
        ("DURAPIPE_PAYLOAD_MAX", "lots", "not a size (e.g. 262144, 256KiB, 1MiB)"),
        ("DURAPIPE_PAYLOAD_THRESHOLD", "big", "not a size"),
        ("DURAPIPE_CHECKPOINT_TTL", "soon", "is not a duration"),
        # A URL of another scheme was taken as a SQLite path: a folder 'postgres:' appeared.
        ("DURAPIPE_CHECKPOINTS", "postgres://db/x", "expected a SQLite file, a redis://"),
        ("DURAPIPE_LIMITS", "bogus://x", "expected a SQLite file, a redis://"),
        ("DURAPIPE_BLOB_DIR", "gs://bucket", "expected a folder or s3://BUCKET[/PREFIX]"),
        ("DURAPIPE_PAYLOAD_STORE", "gs://bucket", "expected a folder or s3://BUCKET[/PREFIX]"),
    ],
)
async def test_bad_values_are_refused_when_the_client_starts_naming_the_variable(
    temporal_address: str, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, reason: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(dp.ConfigError) as caught:
        await dp.connect(temporal_address, pipeline=PIPELINE)
    assert str(caught.value).startswith(f"{variable}={value!r} is not valid: ")
    assert reason in str(caught.value)


async def test_a_bad_payload_limit_fails_the_worker_at_start(
    temporal_address: str, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await dp.connect(temporal_address, pipeline=PIPELINE)
    monkeypatch.setenv("DURAPIPE_PAYLOAD_MAX", "lots")
    with pytest.raises(dp.ConfigError) as caught:
        dp.build_worker(client, task_queue=task_queue)
    assert str(caught.value) == (
        "DURAPIPE_PAYLOAD_MAX='lots' is not valid: not a size (e.g. 262144, 256KiB, 1MiB)"
    )


def test_the_readme_lists_every_setting_and_only_those() -> None:
    rows = re.findall(r"^\| `(DURAPIPE_[A-Z_]+)` \|", (ROOT / "README.md").read_text(), re.M)
    declared = {PREFIX + name.upper() for name in Settings.model_fields}
    assert sorted(rows) == sorted(declared)


def test_durapipe_reads_no_setting_from_the_environment_directly() -> None:
    """Every ``DURAPIPE_*`` name the package spells is a declared setting, and no module passes one
    to ``os.environ``/``os.getenv``: they are read through `durapipe._settings` only."""
    declared = {PREFIX + name.upper() for name in Settings.model_fields}
    spelled, direct = set(), []
    for path in sorted((ROOT / "durapipe").rglob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {
            target.id: node.value.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign | ast.AnnAssign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                spelled |= set(re.findall(r"^DURAPIPE_[A-Z_]*[A-Z]$", node.value))
            read = _environment_read(node)
            if read is None:
                continue
            name = read.value if isinstance(read, ast.Constant) else None
            if isinstance(read, ast.Name):
                name = constants.get(read.id)
            if isinstance(name, str) and name.startswith(PREFIX):
                direct.append(f"{path.relative_to(ROOT)}:{node.lineno} reads {name}")
    assert direct == []
    assert spelled - declared == set()


def _environment_read(node: ast.AST) -> ast.expr | None:
    """The key of ``os.environ.get(key)``, ``os.environ[key]`` or ``os.getenv(key)``, else None."""
    if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
        return node.slice
    readers = {"os.environ.get", "os.getenv", "os.environ.setdefault"}
    if isinstance(node, ast.Call) and node.args and ast.unparse(node.func) in readers:
        return node.args[0]
    return None
