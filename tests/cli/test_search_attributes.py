"""A namespace without durapipe's search attributes: the worker refuses to start, setup fixes it."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError

import durapipe as dp
from durapipe.ops._dev import search_attribute_flags
from tests.conftest import EXAMPLES
from tests.support import run_cli


def test_dev_server_command_registers_every_search_attribute() -> None:
    command = dp.ops.DevServer(headless=True).command()
    flags = command[command.index("--search-attribute") :]
    assert flags == search_attribute_flags()
    assert "DurapipeCostUsd=Double" in flags and "DurapipePipe=Keyword" in flags


async def test_worker_fails_fast_until_setup_registers_the_attributes(
    temporal_address: str,
) -> None:
    namespace = f"bare-{uuid.uuid4().hex[:8]}"
    admin = await Client.connect(temporal_address)
    await admin.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=namespace,
            workflow_execution_retention_period=Duration(
                seconds=int(timedelta(days=1).total_seconds())
            ),
        )
    )
    client = await dp.connect(temporal_address, namespace)
    deadline = time.monotonic() + 30
    while True:  # a new namespace takes a moment to reach every server cache
        try:
            await dp.ops.check_search_attributes(client)
        except dp.ConfigError:
            break  # the namespace answers, without the attributes
        except RPCError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("a new namespace already has durapipe's search attributes")
    worker = await asyncio.to_thread(
        run_cli,
        "worker",
        str(EXAMPLES / "brief.yaml"),
        "--address",
        temporal_address,
        "--namespace",
        namespace,
    )
    # `runs` said the server's "cannot list runs (WorkflowType = ... AND DurapipePipe IS NOT
    # NULL): invalid query: invalid search attribute: DurapipePipe" instead.
    runs = await asyncio.to_thread(
        run_cli, "runs", "--address", temporal_address, "--namespace", namespace
    )
    for refused in (worker, runs):
        assert refused.returncode == 2
        assert refused.stderr.strip() == (
            f"error: namespace '{namespace}' lacks durapipe's search attributes (DurapipePipe, "
            "DurapipeCostUsd, DurapipeInputTokens, DurapipeOutputTokens, DurapipeSteps); "
            "register them once with `durapipe setup-search-attributes "
            f"--address {temporal_address} --namespace {namespace}`"
        )
    setup = await asyncio.to_thread(
        run_cli, "setup-search-attributes", "--address", temporal_address, "--namespace", namespace
    )
    assert setup.returncode == 0, setup.stderr
    assert setup.stdout.startswith("registered: DurapipePipe")
    while True:
        try:
            await dp.ops.check_search_attributes(client)
            break
        except dp.ConfigError:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.5)
    again = await asyncio.to_thread(
        run_cli, "setup-search-attributes", "--address", temporal_address, "--namespace", namespace
    )
    assert again.stdout.strip() == "already registered"
