"""What a worker's first ``https://`` request still sets up after `durapipe.ops.warm_up`.

``python bench/first_tls.py [--workers 7] [--requests 20]`` starts the fake provider serving TLS
in its own process, then, one after another, fresh worker-like processes that each run
``warm_up()`` (what ``durapipe worker`` does before it polls) and send requests over held TLS
connections (``Connection: close``: every request makes a new connection and handshake). It prints
one ``name = value`` per line, medians over the processes, in milliseconds:

- ``first_request_ms``: the first request of a process (connection, handshake, request, answer);
- ``later_request_ms``: the median of the later ones (the same work, nothing left to set up);
- ``first_request_setup_ms``: their difference, what the first request still sets up;
- ``*_cpu_ms``: the same in CPU time of the worker's event-loop thread (``time.thread_time``),
  which a busy host disturbs less than wall time (the provider's side is not in it);
- ``first_handshake_cpu_ms`` / ``later_handshake_cpu_ms``: the TLS handshake alone.

The first process is not counted: it warms the provider's own first handshake.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


async def measure(base_url: str, requests: int) -> dict[str, object]:
    """In this (fresh) process: warm up as a worker does, then time ``requests`` requests."""
    import httpx

    import durapipe as dp
    from durapipe.adapters import _answers
    from durapipe.adapters._held_tls import HeldTlsStream
    from durapipe.adapters._litellm import litellm_module

    handshakes: list[float] = []
    handshake = HeldTlsStream.handshake.__func__  # type: ignore[attr-defined]

    async def timed(cls: type[HeldTlsStream], *args: object) -> HeldTlsStream:
        began = time.thread_time()
        try:
            return await handshake(cls, *args)  # type: ignore[no-any-return]
        finally:
            handshakes.append(time.thread_time() - began)

    HeldTlsStream.handshake = classmethod(timed)  # type: ignore[method-assign, assignment]
    await dp.ops.warm_up()
    transport = litellm_module().aclient_session._transport
    assert isinstance(transport, _answers.KeepAnswers) and transport.held is not None
    body = json.dumps({"model": "gpt-first", "messages": [{"role": "user", "content": "hi"}]})
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(requests):
        request = httpx.Request(
            "POST", f"{base_url}/chat/completions", content=body.encode(),
            headers={"content-type": "application/json", "authorization": "Bearer sk-fake",
                     "connection": "close"},
        )  # fmt: skip
        began, began_cpu = time.perf_counter(), time.thread_time()
        response = await transport.held.handle_async_request(request)
        await response.aread()
        times.append(time.perf_counter() - began)
        cpu.append(time.thread_time() - began_cpu)
        assert response.status_code == 200, response.status_code
    return {"times": times, "cpu": cpu, "handshakes": handshakes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=7, help="fresh processes measured")
    parser.add_argument("--requests", type=int, default=20, help="requests per process")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(asyncio.run(measure(options.child, options.requests))))
        return
    from bench.chaos import start_provider

    with tempfile.TemporaryDirectory(prefix="durapipe-first-tls-") as tmp:
        workdir = Path(tmp)
        provider, base_url = start_provider(
            workdir / "ledger.jsonl", 0.0, 1, idempotent=False, tls=workdir / "tls"
        )
        env = {**os.environ, "SSL_CERT_FILE": str(workdir / "tls" / "cert.pem")}
        runs = []
        try:
            for _ in range(options.workers + 1):
                child = subprocess.run(
                    [sys.executable, __file__, "--child", base_url,
                     "--requests", str(options.requests)],
                    capture_output=True, text=True, env=env, check=True, timeout=300,
                )  # fmt: skip
                runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
        finally:
            provider.terminate()
            provider.wait(timeout=20)
    runs = runs[1:]  # the first warmed the provider
    lines = {}
    for name, series in (
        ("request", "times"),
        ("request_cpu", "cpu"),
        ("handshake_cpu", "handshakes"),
    ):
        first = statistics.median(r[series][0] for r in runs) * 1000
        later = statistics.median(statistics.median(r[series][1:]) for r in runs) * 1000
        lines[f"first_{name}_ms"] = first
        lines[f"later_{name}_ms"] = later
        if name != "handshake_cpu":
            lines[f"first_{name.replace('request', 'request_setup')}_ms"] = first - later
    for name, value in lines.items():
        print(f"{name} = {value:.2f}")


if __name__ == "__main__":
    main()
