"""Document and Image inputs over the protocol: data: URLs, base_64, and only the URLs the operator allows."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from mthds.runners.api.exceptions import ApiResponseError

from durapipe._errors import ConfigError
from durapipe.adapters.mthds._files import FileAccess, file_input
from tests.serve.conftest import HERE, Served, mthds_client, start_serve

READER = {"reader.mthds": (HERE / "methods" / "reader.mthds").read_text()}
LETTER = "Dear council, the bridge opens in 2027."


@pytest.fixture(scope="module")
async def files_site() -> AsyncIterator[str]:
    """An HTTP server holding files: /ok/ (allowed), /other/ (not), and a redirect out of /ok/."""

    async def letter(request: web.Request) -> web.Response:
        return web.Response(text=LETTER, content_type="text/plain")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/other/letter.txt")

    app = web.Application()
    app.router.add_get("/ok/letter.txt", letter)
    app.router.add_get("/other/letter.txt", letter)
    app.router.add_get("/ok/moved", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def fetching(
    temporal_address: str, worker: str, gate_dir: Path, files_site: str
) -> AsyncIterator[Served]:
    """`durapipe serve` allowed to fetch the site's /ok/ folder only."""
    server = await start_serve(
        temporal_address, worker, gate_dir, "--allow-url", f"{files_site}/ok/"
    )
    try:
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            await server.stop()


def _text(result: object) -> str:
    return json.dumps(result.pipe_output.working_memory.root["main_stuff"].content)  # type: ignore[attr-defined]


async def test_files_arrive_as_data_urls_base64_and_allowed_urls(
    fetching: Served, files_site: str
) -> None:
    data_url = "data:text/plain;base64," + base64.b64encode(LETTER.encode()).decode()
    async with mthds_client(fetching) as client:
        by_data = await client.execute(
            pipe_code="read",
            files=READER,
            inputs={"document": {"concept": "native.Document", "content": {"url": data_url}}},
        )
        by_url = await client.execute(
            pipe_code="read",
            files=READER,
            inputs={"document": {"url": f"{files_site}/ok/letter.txt"}},
        )
        by_base64 = await client.execute(
            pipe_code="read",
            files=READER,
            inputs={
                "document": {
                    "base_64": base64.b64encode(LETTER.encode()).decode(),
                    "mime_type": "text/plain",
                }
            },
        )
    for result in (by_data, by_url, by_base64):
        assert LETTER in _text(result)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("/etc/hostname", "a client may not read this runner's disk"),
        ("file:///etc/hostname", "a client may not read this runner's disk"),
        ("{site}/other/letter.txt", "outside the prefixes its operator allows"),
        ("{site}/ok/moved", "redirects are not followed"),
        ("s3://bucket/letter.txt", "no 's3://' reference"),
        ("data:text/plain;base64,%%%", "not valid Base64"),
    ],
)
async def test_a_file_the_server_may_not_read_is_refused(
    fetching: Served, files_site: str, url: str, says: str
) -> None:
    async with mthds_client(fetching) as client:
        with pytest.raises(ApiResponseError) as refused:
            await client.start(
                pipe_code="read",
                files=READER,
                inputs={"document": {"url": url.format(site=files_site)}},
            )
    problem = refused.value.problem
    assert problem.code == "input.invalid"
    assert "input 'document'" in problem.detail and says in problem.detail


@pytest.mark.parametrize(
    ("prefix", "url"),
    [
        # A prefix written without its closing slash reads as text: any host or port that
        # continues it, or a user part naming a host after it, passed.
        ("http://127.0.0.1:9", "http://127.0.0.1:99/ok/letter.txt"),
        ("http://127.0.0.1:9", "http://127.0.0.1:9@127.0.0.2:9/ok/letter.txt"),
        ("http://files.example.com", "http://files.example.com.evil.example/letter.txt"),
        # Dot segments a server resolves to a path outside the prefix (nginx does).
        ("http://127.0.0.1:9/ok/", "http://127.0.0.1:9/ok/../other/letter.txt"),
        ("http://127.0.0.1:9/ok/", "http://127.0.0.1:9/ok/%2e%2e/other/letter.txt"),
        ("http://127.0.0.1:9/ok/", "https://127.0.0.1:9/ok/letter.txt"),
    ],
)
def test_a_url_outside_the_operators_prefix_by_its_parts_is_refused(prefix: str, url: str) -> None:
    access = FileAccess(local_paths=False, url_prefixes=(prefix,))
    with pytest.raises(ConfigError, match="outside the prefixes its operator allows"):
        file_input("document", {"url": url}, access)


def test_a_url_under_the_operators_prefix_is_allowed() -> None:
    access = FileAccess(local_paths=False, url_prefixes=("https://files.example.com/ok/",))
    assert access.allows("https://files.example.com/ok/letter.txt")
    assert access.allows("https://FILES.example.com:443/ok/a/b.pdf?version=2")
    assert not access.allows("https://files.example.com/other/letter.txt")


YAML_READER = {
    "reader.yaml": """version: 1
pipes:
  read:
    kind: extract
    inputs: {document: document}
    output: text
"""
}


async def test_a_yaml_pipe_takes_files_by_the_same_rules(fetching: Served) -> None:
    data_url = "data:text/plain;base64," + base64.b64encode(LETTER.encode()).decode()
    async with mthds_client(fetching) as client:
        read = await client.execute(
            pipe_code="read", files=YAML_READER, inputs={"document": {"url": data_url}}
        )
        with pytest.raises(ApiResponseError) as refused:
            await client.start(
                pipe_code="read", files=YAML_READER, inputs={"document": "/etc/hostname"}
            )
    assert LETTER in _text(read)
    assert refused.value.problem.code == "input.invalid"
    assert "a client may not read this runner's disk" in refused.value.problem.detail
