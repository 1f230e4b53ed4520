"""deploy/k8s/ checked offline: no cluster (and no registry) is reachable here, so this is what can be.

Every Kubernetes object validates against the API's own JSON schema (the `kubernetes-validate`
package ships them; strict: an unknown or misspelt field fails), KEDA's objects against KEDA's own
CustomResourceDefinitions (tests/fixtures/keda, from kedacore/keda v2.20.1) with the Temporal
scaler's parameters, and every durapipe container runs what the compose services that
`make deploy-check` runs do: the same image and tag, arguments, store paths, user, read-only root,
metrics probes and queues. Not checked: kustomize's own file (no schema ships offline; its
resources and image are checked below), and anything only a cluster shows (scheduling, RBAC, KEDA
reaching Temporal).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
KEDA_CRDS = ROOT / "tests" / "fixtures" / "keda"
KUBERNETES = "1.30"  # the oldest Kubernetes release still supported upstream when this was written
# The Temporal scaler's parameters, from kedacore/keda v2.20.1 pkg/scalers/temporal_scaler.go.
TEMPORAL_TRIGGER = {
    "endpoint", "namespace", "activationTargetQueueSize", "targetQueueSize", "taskQueue",
    "queueTypes", "buildId", "workerDeploymentName", "workerDeploymentBuildId", "selectAllActive",
    "selectUnversioned", "minConnectTimeout", "unsafeSsl", "tlsServerName",
}  # fmt: skip
TEMPORAL_AUTH = {"apiKey", "cert", "key", "keyPassword", "ca"}
WORKERS = ["worker", "worker-openai", "worker-anthropic"]
DURAPIPE = [*WORKERS, "setup", "codec-server"]


def documents(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    """(file name, object) of every resource kustomize applies from ``folder``."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return [
        (name, doc)
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((folder / name).read_text())
        if doc
    ]


def _strict(schema: Any) -> Any:
    """A CRD's schema with unknown fields refused, as `kubectl apply --validate=strict` does."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def keda_schemas() -> dict[str, Any]:
    schemas = {}
    for path in KEDA_CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
        schemas[crd["spec"]["names"]["kind"]] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


def schema_problems(folder: Path) -> list[str]:
    """Why each object of ``folder`` would be refused by the API server (or KEDA's CRDs)."""
    keda = keda_schemas()
    found = []
    for name, doc in documents(folder):
        where = f"{name} {doc['kind']} {doc['metadata']['name']}"
        if doc["apiVersion"].startswith("keda.sh/"):
            validator = jsonschema.Draft7Validator(keda[doc["kind"]])
            found += [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(doc)]
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as err:
            found.append(f"{where}: {'.'.join(map(str, err.path))}: {err.message}")
    return found


def keda_problems(folder: Path) -> list[str]:
    """Parameters the Temporal scaler does not read, and triggers that watch another Temporal,
    namespace or queue than the Deployment they scale, or lack the workers' TLS."""
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in documents(folder)}
    found = []
    for (kind, name), doc in docs.items():
        if kind == "TriggerAuthentication":
            found += [
                f"TriggerAuthentication {name}: the Temporal scaler has no parameter '{p}'"
                for p in (t["parameter"] for t in doc["spec"]["secretTargetRef"])
                if p not in TEMPORAL_AUTH
            ]
        if kind != "ScaledObject":
            continue
        container = docs["Deployment", doc["spec"]["scaleTargetRef"]["name"]]["spec"]["template"][
            "spec"
        ]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        args = container["args"]
        for trigger in doc["spec"]["triggers"]:
            meta = trigger["metadata"]
            found += [
                f"ScaledObject {name}: the Temporal scaler has no parameter '{p}'"
                for p in meta
                if p not in TEMPORAL_TRIGGER
            ]
            expected = {
                "endpoint": env["TEMPORAL_ADDRESS"],
                "namespace": env["TEMPORAL_NAMESPACE"],
                "taskQueue": args[args.index("--task-queue") + 1],
            }
            found += [
                f"ScaledObject {name}: {p} is '{meta.get(p)}' but its workers use '{v}'"
                for p, v in expected.items()
                if meta.get(p) != v
            ]
            auth = docs.get(
                ("TriggerAuthentication", trigger.get("authenticationRef", {}).get("name"))
            )
            tls_secret = next(
                v["secret"]["secretName"]
                for v in container_volumes(docs, doc["spec"]["scaleTargetRef"]["name"])
                if v["name"] == "temporal-tls"
            )
            if auth is None or {r["name"] for r in auth["spec"]["secretTargetRef"]} != {tls_secret}:
                found.append(f"ScaledObject {name}: does not reach Temporal with the workers' TLS")
    return found


def container_volumes(docs: dict[tuple[str, str], Any], deployment: str) -> list[Any]:
    volumes: list[Any] = docs["Deployment", deployment]["spec"]["template"]["spec"]["volumes"]
    return volumes


def test_every_kubernetes_object_validates_against_its_schema() -> None:
    kinds = sorted({(d["apiVersion"], d["kind"]) for _, d in documents(DEPLOY / "k8s")})
    assert ("keda.sh/v1alpha1", "ScaledObject") in kinds and ("apps/v1", "Deployment") in kinds
    assert schema_problems(DEPLOY / "k8s") == []


def test_keda_triggers_watch_the_workers_queues_with_their_tls() -> None:
    assert keda_problems(DEPLOY / "k8s") == []


@pytest.mark.parametrize(
    ("path", "old", "new", "expected"),
    [
        # A misspelt field the API server would reject (strict validation).
        ("worker.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true",
         "readOnlyRootFileSystem"),
        ("worker.yaml", "containerPort: 9464", "containerPort: '9464'", "is not of type 'integer'"),
        ("autoscaling.yaml", "cooldownPeriod: 300", "coolDownPeriod: 300", "coolDownPeriod"),
        ("autoscaling.yaml", "taskQueue: llm-openai", "taskqueue: llm-openai",
         "has no parameter 'taskqueue'"),
        ("autoscaling.yaml", "taskQueue: llm-openai", "taskQueue: llm-anthropic",
         "taskQueue is 'llm-anthropic' but its workers use 'llm-openai'"),
        ("autoscaling.yaml", "parameter: ca,", "parameter: caCert,", "no parameter 'caCert'"),
    ],
)  # fmt: skip
def test_the_checks_fail_on_a_broken_manifest(
    path: str, old: str, new: str, expected: str, tmp_path: Path
) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy)
    text = (copy / path).read_text()
    assert old in text
    (copy / path).write_text(text.replace(old, new, 1))
    found = schema_problems(copy) + keda_problems(copy)
    assert any(expected in problem for problem in found), found


def k8s_containers() -> dict[str, dict[str, Any]]:
    """The durapipe container of each workload, by the compose service it stands for."""
    by_workload = {"setup-search-attributes": "setup"}
    found = {}
    for _, doc in documents(DEPLOY / "k8s"):
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            if container["image"] == "durapipe-worker":
                found[by_workload.get(doc["metadata"]["name"], doc["metadata"]["name"])] = {
                    **container,
                    "pod": pod,
                }
    return found


def test_kubernetes_runs_what_the_compose_check_proves() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    uid = int(re.search(r"useradd --uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    containers = k8s_containers()
    assert sorted(containers) == sorted(DURAPIPE)
    [image] = kustomization["images"]
    for name in DURAPIPE:
        service, container = compose[name], containers[name]
        # The same image and tag: kustomize sets the tag the compose check built.
        assert f"{image['name']}:{image['newTag']}" == service["image"], name
        args = container["args"]
        if name == "codec-server":  # the UI's origin is the one site-specific argument
            at = args.index("--cors-origin") + 1
            args = [*args[:at], service["command"][at], *args[at + 1 :]]
        assert args == service["command"], name
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env.keys() >= set(service["environment"]), name
        for variable in (
            "DURAPIPE_BLOB_DIR",
            "DURAPIPE_PAYLOAD_STORE",
            "DURAPIPE_ENCRYPTION_KEYS_FILE",
        ):
            assert env.get(variable) == service["environment"].get(variable), (name, variable)
        # Read-only root as in compose (read_only: true), as the image's user.
        assert service["read_only"] is True
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert container["pod"]["securityContext"]["runAsUser"] == uid, name
        mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
        for secret in service.get("secrets", []):  # compose mounts secrets at /run/secrets/NAME
            assert any(p.startswith(f"/run/secrets/{secret}") for p in mounts), (name, secret)
        if name not in WORKERS:
            continue
        assert "/tmp" in mounts and "/var/lib/durapipe" in mounts, name  # compose: tmpfs, volume
        port = args[args.index("--metrics-port") + 1]
        assert f"127.0.0.1:{port}/metrics" in " ".join(service["healthcheck"]["test"])
        assert container["ports"] == [{"name": "metrics", "containerPort": int(port)}]
