"""deploy/ is checked against the real CLI: no Docker engine runs here, so this is what can be checked.

Every manifest parses; every ``durapipe <command> --flag`` in them exists in the Typer app; every
environment variable set for a durapipe container is one the CLI or the library reads; the image
and the commands agree across the Dockerfile, compose and Kubernetes files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from durapipe.cli import app
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
IMAGE = "durapipe-worker"
# Read by the library, not by a CLI option: checked below to appear in durapipe's source.
LIBRARY_ENV = {
    "DURAPIPE_ENCRYPTION_KEYS": "durapipe/security/_codec.py",
    "DURAPIPE_ENCRYPTION_KEYS_FILE": "durapipe/security/_codec.py",
    # Read by temporalio.envconfig, as durapipe/client/_connection.py documents.
    "TEMPORAL_ADDRESS": "durapipe/client/_connection.py",
    "TEMPORAL_NAMESPACE": "durapipe/client/_connection.py",
    "TEMPORAL_API_KEY": "durapipe/client/_connection.py",
    "TEMPORAL_TLS_CLIENT_CERT_PATH": "durapipe/client/_connection.py",
    "TEMPORAL_TLS_CLIENT_KEY_PATH": "durapipe/client/_connection.py",
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "durapipe/client/_connection.py",
    "TEMPORAL_TLS_SERVER_NAME": "durapipe/client/_connection.py",
}


def commands() -> dict[str, Any]:
    """The commands of the Typer app, as click sees them (Typer may vendor its own click)."""
    group: Any = typer.main.get_command(app)
    return dict(group.commands)


def cli_options() -> dict[str, set[str]]:
    """Every command of the Typer app and its flags."""
    return {
        name: {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for name, command in commands().items()
    }


def known_env() -> set[str]:
    envvars = {
        p.envvar
        for command in commands().values()
        for p in command.params
        if isinstance(p.envvar, str)
    }
    return envvars | set(LIBRARY_ENV)


def durapipe_containers(folder: Path) -> list[tuple[str, list[str], dict[str, Any]]]:
    """(where, argv after the entrypoint, env) of every container running the durapipe image."""
    found = []
    compose = yaml.safe_load((folder / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        if service.get("image", "").split(":")[0] == IMAGE:
            found.append((f"compose {name}", service["command"], service.get("environment", {})))
    for path in sorted((folder / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
            for container in spec.get("containers", []):
                if container["image"].split(":")[0] == IMAGE:
                    env = {e["name"]: e.get("value") for e in container.get("env", [])}
                    found.append((f"{path.name} {container['name']}", container["args"], env))
    entry, cmd = dockerfile_entry(folder / "Dockerfile")
    assert entry == ["durapipe"]
    found.append(("Dockerfile CMD", cmd, {}))
    return found


def dockerfile_entry(path: Path) -> tuple[list[str], list[str]]:
    text = path.read_text()
    lines = {
        m.group(1): json.loads(m.group(2))
        for m in re.finditer(r"^(ENTRYPOINT|CMD) (.*)$", text, re.M)
    }
    return lines["ENTRYPOINT"], lines["CMD"]


def mistakes(folder: Path) -> list[str]:
    options, env_names = cli_options(), known_env()
    found = []
    for where, argv, env in durapipe_containers(folder):
        command, flags = argv[0], [a.split("=")[0] for a in argv[1:] if a.startswith("--")]
        if command not in options:
            found.append(f"{where}: durapipe has no command '{command}'")
            continue
        found += [
            f"{where}: durapipe {command} has no option {f}"
            for f in flags
            if f not in options[command]
        ]
        found += [
            f"{where}: durapipe does not read {name}" for name in env if name not in env_names
        ]
    return found


def test_manifests_parse_and_kustomize_resources_exist() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert {"temporal", "postgresql", "temporal-ui", "codec-server"} <= set(compose["services"])
    assert compose["services"]["temporal"]["environment"]["DB"] == "postgres12"
    pools = [s for s in compose["services"] if s.startswith("worker-")]
    assert pools == ["worker-openai", "worker-anthropic"]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        docs = list(yaml.safe_load_all((DEPLOY / "k8s" / resource).read_text()))
        assert all("apiVersion" in d and "kind" in d and d["metadata"]["name"] for d in docs)
    assert kustomization["images"][0]["name"] == IMAGE
    scaled = list(yaml.safe_load_all((DEPLOY / "k8s" / "autoscaling.yaml").read_text()))
    queues = {
        d["spec"]["scaleTargetRef"]["name"]: d["spec"]["triggers"][0]["metadata"]["taskQueue"]
        for d in scaled
    }
    # The autoscaler watches the queue the Deployment it scales polls.
    for name, queue in queues.items():
        deployment = yaml.safe_load((DEPLOY / "k8s" / f"{name}.yaml").read_text())
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--task-queue") + 1] == queue
        assert f"--task-queue {queue}" in " ".join(compose["services"][name]["command"])


def test_every_command_option_and_variable_in_deploy_is_real() -> None:
    assert len(durapipe_containers(DEPLOY)) >= 7
    assert mistakes(DEPLOY) == []
    source = {path: (ROOT / path).read_text() for path in set(LIBRARY_ENV.values())}
    for name, path in LIBRARY_ENV.items():
        assert name in source[path], f"{name} is not read in {path}"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '"--max-concurrent", "20"',
            '"--max-concurrency", "20"',
            "durapipe worker has no option --max-concurrency",
        ),
        (
            "DURAPIPE_ENCRYPTION_KEYS_FILE: /run",
            "DURAPIPE_ENCRYPTION_KEY_PATH: /run",
            "durapipe does not read DURAPIPE_ENCRYPTION_KEY_PATH",
        ),
        ('["codec-server"', '["codec-serve"', "durapipe has no command 'codec-serve'"),
    ],
)
def test_the_check_fails_when_a_manifest_names_what_the_cli_lacks(
    old: str, new: str, expected: str, tmp_path: Path
) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy)
    compose = copy / "compose.yaml"
    assert old in compose.read_text()
    compose.write_text(compose.read_text().replace(old, new, 1))
    assert any(expected in m for m in mistakes(copy)), mistakes(copy)
