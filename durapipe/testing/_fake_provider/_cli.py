"""The fake provider as a process: ``python -m durapipe.testing.fake_provider``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from collections.abc import Sequence
from pathlib import Path

from durapipe.testing._certificates import self_signed_certificate
from durapipe.testing._fake_provider._provider import FakeProvider

logger = logging.getLogger(__name__)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m durapipe.testing.fake_provider",
        description="Run a fake OpenAI-compatible chat completions provider until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--script", type=Path, help="JSON script document to load at start")
    parser.add_argument("--ledger", type=Path, help="append one JSON line per call to this file")
    parser.add_argument("--failure-rate", type=float, default=0.0, help="random failure rate")
    parser.add_argument("--seed", type=int, default=None, help="seed for --failure-rate")
    parser.add_argument(
        "--honour-idempotency",
        action="store_true",
        help="answer a repeated idempotency key with its stored answer, unbilled",
    )
    parser.add_argument(
        "--tls",
        type=Path,
        metavar="DIR",
        help="serve https with a self-signed certificate made in DIR (clients trust DIR/cert.pem)",
    )
    parser.add_argument(
        "--max-concurrency-report",
        action="store_true",
        help="on exit, print a 'max concurrency report: {json}' line",
    )
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    provider = FakeProvider(
        host=args.host,
        port=args.port,
        ledger_path=args.ledger,
        honour_idempotency=args.honour_idempotency,
        tls=self_signed_certificate(args.tls) if args.tls is not None else None,
    )
    if args.script is not None:
        provider.load_script(json.loads(args.script.read_text(encoding="utf-8")))
    if args.failure_rate:
        provider.set_failure_rate(args.failure_rate, seed=args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await provider.start_async()
    print(f"listening on {provider.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await provider.stop_async()
        if args.max_concurrency_report:
            report = {
                "max_concurrency": provider.max_concurrency,
                "max_concurrency_by_model": provider.ledger_snapshot()["max_concurrency_by_model"],
                "max_rate_1s": provider.max_rate(1.0),
                "calls": len(provider.calls),
            }
            print(f"max concurrency report: {json.dumps(report)}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m durapipe.testing.fake_provider``.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    args = _parse_args(argv)
    asyncio.run(_serve(args))
    return 0
