"""A real S3-speaking server for the S3 driver's tests: moto's standalone server (``moto_server``,
a dev dependency) as a separate process on a free port, stopped by its own pid."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from durapipe.ops._dev import free_port


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a moto S3 server of this session (``http://127.0.0.1:PORT``)."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = Path(sys.executable).parent / "moto_server"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(endpoint):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"moto_server did not answer: {log.read_text()}"
            time.sleep(0.1)  # a separate process: nothing to await
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the session's S3 server; this process's boto3 clients point at it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"durapipe-{uuid.uuid4().hex[:12]}"
    import boto3

    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket
