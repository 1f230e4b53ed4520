"""What held TLS costs and what it closes: ``https://`` llm steps over litellm's transport and over
durapipe's held TLS connections, against the fake provider serving TLS in its own process.

``python bench/held_tls.py [--calls 300] [--rounds 6]`` runs ``run_llm`` (the llm activity's code,
with a SQLite checkpoint store) sequentially, alternating the two paths round by round (a busy
host slows both alike), and prints one ``name = value`` per line:

- ``<path>.cpu_ms_per_call``: this process's CPU time per step (the provider runs elsewhere);
- ``<path>.answers_unread_at_keep``: of the answers kept in one more round, how many still had
  bytes unread in the socket at the moment the store wrote them (held TLS: all; they are consumed
  after the write);
- ``litellm.read_to_keep_us_*``: on litellm's path, the time from the event loop's last read of an
  answer's bytes off the socket (aiohttp's ``data_received``) to its keep: the window in which a
  killed worker had an answer in memory only (median, p99, max, microseconds; same round).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-fake-held-tls")  # the fake provider takes any key

from bench.chaos import start_provider, unread_ports  # noqa: E402
from durapipe.activities import run_llm  # noqa: E402
from durapipe.adapters import _answers  # noqa: E402
from durapipe.adapters._litellm import litellm_module  # noqa: E402
from durapipe.runtime import LlmCall  # noqa: E402
from durapipe.spec import LlmPipe, ModelDeck, ModelEntry  # noqa: E402
from durapipe.stores import SqliteCheckpoints  # noqa: E402


class Watching(SqliteCheckpoints):
    """Notes, at each kept answer, whether the provider's socket still held unread bytes and how
    long ago the event loop last read bytes off a socket (litellm's aiohttp path)."""

    provider_port = 0
    last_read = 0.0
    watching = False  # off while CPU is measured: reading /proc costs more than a step's TLS
    unread: list[bool]
    read_to_keep: list[float]

    def put_answer_nowait(self, key: str, answer: bytes) -> None:
        if self.watching:
            self.read_to_keep.append(time.perf_counter() - Watching.last_read)
            self.unread.append(bool(unread_ports(os.getpid(), self.provider_port)))
        super().put_answer_nowait(key, answer)


def watch_aiohttp_reads() -> None:
    """Time-stamp every read aiohttp's client protocol gets from the event loop."""
    from aiohttp.client_proto import ResponseHandler

    received = ResponseHandler.data_received

    def data_received(self: ResponseHandler, data: bytes) -> None:
        Watching.last_read = time.perf_counter()
        received(self, data)

    ResponseHandler.data_received = data_received  # type: ignore[method-assign]


async def steps(store: Watching, deck: ModelDeck, calls: int, tag: str) -> float:
    """Run ``calls`` llm steps; the process CPU seconds they took."""
    pipe = LlmPipe(model="openai/gpt-bench", prompt="Name a colour.")
    began = time.process_time()
    for n in range(calls):
        call = LlmCall(run_id=f"{tag}-{n}", path="colour", pipe_name="colour", pipe=pipe)
        await run_llm(call, 1, store, deck)
    return time.process_time() - began


async def bench(calls: int, rounds: int, workdir: Path, base_url: str) -> list[str]:
    """Run the rounds against the provider at ``base_url``; the ``name = value`` lines."""
    os.environ["SSL_CERT_FILE"] = str(workdir / "tls" / "cert.pem")  # before litellm's client
    litellm_module()
    _answers.install()
    transport = litellm_module().aclient_session._transport
    assert isinstance(transport, _answers.KeepAnswers) and "https" in transport.schemes
    watch_aiohttp_reads()
    store = Watching(workdir / "checkpoints.sqlite")
    store.provider_port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    deck = ModelDeck.of({"bench": ModelEntry(model="openai/gpt-bench", api_base=base_url)})
    paths = {"litellm": ("http",), "held": ("http", "https")}
    cpu = {name: 0.0 for name in paths}
    unread = {name: [0, 0] for name in paths}
    windows: list[float] = []
    for name, schemes in paths.items():  # warm both: first connections, imports
        transport.schemes = schemes
        await steps(store, deck, 10, f"warm-{name}")
    for round_ in range(rounds):
        for name, schemes in paths.items():
            transport.schemes = schemes
            cpu[name] += await steps(store, deck, calls // rounds, f"{name}-{round_}")
    store.watching = True
    for name, schemes in paths.items():
        transport.schemes = schemes
        store.unread, store.read_to_keep = [], []
        await steps(store, deck, calls // rounds, f"watch-{name}")
        unread[name] = [sum(store.unread), len(store.unread)]
        if name == "litellm":
            windows = store.read_to_keep
    done = calls // rounds * rounds
    lines = []
    for name in paths:
        lines.append(f"{name}.cpu_ms_per_call = {cpu[name] / done * 1000:.3f}")
        lines.append(f"{name}.answers_unread_at_keep = {unread[name][0]} of {unread[name][1]}")
    lines.append(f"held_over_litellm.cpu_ratio = {cpu['held'] / cpu['litellm']:.4f}")
    micro = sorted(w * 1e6 for w in windows)
    lines.append(f"litellm.read_to_keep_us_median = {statistics.median(micro):.0f}")
    lines.append(f"litellm.read_to_keep_us_p99 = {micro[int(len(micro) * 0.99) - 1]:.0f}")
    lines.append(f"litellm.read_to_keep_us_max = {micro[-1]:.0f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="steps per path")
    parser.add_argument("--rounds", type=int, default=6, help="alternations of the two paths")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="durapipe-held-tls-") as tmp:
        workdir = Path(tmp)
        provider, base_url = start_provider(
            workdir / "ledger.jsonl", 0.0, 1, idempotent=False, tls=workdir / "tls"
        )
        try:
            lines = asyncio.run(bench(options.calls, options.rounds, workdir, base_url))
        finally:
            provider.terminate()
            provider.wait(timeout=20)
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
