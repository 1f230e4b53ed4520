"""How a process's Temporal connection compresses its messages: gzip (the SDK's default) or none."""

from __future__ import annotations

import uuid

import pytest
from temporalio.service import GrpcCompression

import durapipe as dp
from tests.conftest import ARTICLE
from tests.support import run_cli


async def test_a_worker_and_client_without_compression_run_a_pipeline(
    temporal_address: str, task_queue: str, brief_yaml: dp.Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = await dp.connect(temporal_address)
    assert default.service_client.config.grpc_compression is GrpcCompression.GZIP

    monkeypatch.setenv("DURAPIPE_GRPC_COMPRESSION", "None ")
    client = await dp.connect(temporal_address, pipeline=brief_yaml)
    assert client.service_client.config.grpc_compression is GrpcCompression.NONE
    async with dp.build_worker(client, task_queue=task_queue):
        result = await dp.run(
            client,
            brief_yaml,
            "brief",
            {"article": ARTICLE},
            run_id=f"nogzip-{uuid.uuid4().hex[:8]}",
            task_queue=task_queue,
        )
    assert result.output["word_count"] == len(ARTICLE.split())

    # The option (a CLI flag) over the environment.
    chosen = dp.ConnectOptions(grpc_compression="gzip").client_config()["grpc_compression"]
    assert chosen is GrpcCompression.GZIP


def test_an_unknown_compression_is_one_sentence_naming_the_flag_or_variable() -> None:
    by_flag = run_cli("runs", "--address", "127.0.0.1:1", "--grpc-compression", "zip")
    assert by_flag.returncode != 0
    assert "--grpc-compression must be gzip or none, not 'zip'" in by_flag.stderr
    assert "Traceback" not in by_flag.stderr

    by_env = run_cli("runs", "--address", "127.0.0.1:1", env={"DURAPIPE_GRPC_COMPRESSION": "zip"})
    assert by_env.returncode != 0
    assert "DURAPIPE_GRPC_COMPRESSION" in by_env.stderr and "gzip or none" in by_env.stderr
    assert "Traceback" not in by_env.stderr
