"""A worker and the CLI reach Temporal over TLS and mTLS for real (nginx terminates TLS), and a
client without the right certificate is refused."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import durapipe as dp
from tests.conftest import ARTICLE, EXAMPLES
from tests.security.tls_proxy import Pki, TlsProxy, make_pki, nginx_binary
from tests.support import WorkerProcess, cli_env, durapipe_command

pytestmark = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")
BRIEF = str(EXAMPLES / "brief.yaml")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(params=["tls", "mtls"])
def proxy(
    request: pytest.FixtureRequest, pki: Pki, temporal_address: str, tmp_path: Path
) -> Iterator[TlsProxy]:
    started = TlsProxy(tmp_path / "nginx", pki, temporal_address, mutual=request.param == "mtls")
    started.mutual = request.param == "mtls"  # type: ignore[attr-defined]
    yield started
    started.stop()


def run_brief(address: str, task_queue: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        durapipe_command(
            "run", "brief", "--file", BRIEF, "--input", f"article={ARTICLE}", "--json",
            "--address", address, "--task-queue", task_queue, *flags,
        ),
        capture_output=True, text=True, env=cli_env(), timeout=120,
    )  # fmt: skip


async def test_worker_and_cli_connect_through_tls_and_strangers_are_refused(
    proxy: TlsProxy, pki: Pki, task_queue: str, tmp_path: Path
) -> None:
    mutual = proxy.mutual  # type: ignore[attr-defined]
    client_cert = {
        "TEMPORAL_TLS_CLIENT_CERT_PATH": str(pki.client_cert),
        "TEMPORAL_TLS_CLIENT_KEY_PATH": str(pki.client_key),
    }
    # The worker takes its TLS settings from the environment, as the temporal CLI names them...
    worker = WorkerProcess(
        Path(BRIEF), proxy.address, task_queue, tmp_path / "worker.log",
        TEMPORAL_TLS_SERVER_CA_CERT_PATH=str(pki.ca), **(client_cert if mutual else {}),
    )  # fmt: skip
    try:
        # ...and the CLI from flags.
        cert_flags = [
            "--tls-cert-path",
            str(pki.client_cert),
            "--tls-key-path",
            str(pki.client_key),
        ]
        ran = run_brief(
            proxy.address, task_queue, "--tls-ca-path", str(pki.ca), *(cert_flags if mutual else [])
        )
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["word_count"] == len(ARTICLE.split())
    finally:
        worker.stop()
    assert "worker ready" in (tmp_path / "worker.log").read_text()

    # Refusals, in process: a CLI subprocess per case would only add interpreter start-ups.
    refused = {
        "plain text to a TLS port": dp.ConnectOptions(),
        "a server certificate from an unknown CA": dp.ConnectOptions(tls=True),
    }
    if mutual:
        refused["no client certificate"] = dp.ConnectOptions(tls_ca=pki.ca)
        refused["a client certificate of another CA"] = dp.ConnectOptions(
            tls_ca=pki.ca, tls_cert=pki.stranger_cert, tls_key=pki.stranger_key
        )
    for case, options in refused.items():
        with pytest.raises(dp.ConfigError, match=f"cannot reach Temporal at {proxy.address}"):
            await dp.connect(proxy.address, options=options)
            pytest.fail(case)


def test_connect_options_layer_flags_over_environment(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "from-env:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "env-ns")
    monkeypatch.setenv("TEMPORAL_API_KEY", "cloud-key-123")
    config = dp.ConnectOptions(namespace="flag-ns").client_config()
    assert (config["target_host"], config["namespace"]) == ("from-env:7233", "flag-ns")
    assert config["api_key"] == "cloud-key-123" and config["tls"] is True  # an API key implies TLS

    tls = dp.ConnectOptions(tls_ca=pki.ca, tls_server_name="localhost").client_config()["tls"]
    assert tls.server_root_ca_cert == pki.ca.read_bytes() and tls.domain == "localhost"
    assert dp.ConnectOptions(tls=False).client_config()["tls"] is False
    with pytest.raises(dp.ConfigError, match="mTLS needs both --tls-cert-path and --tls-key-path"):
        dp.ConnectOptions(tls_cert=pki.client_cert).client_config()
