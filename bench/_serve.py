"""What every bench worker process does around its own worker: its command line (``--address``,
``--task-queue`` and any options of its own), SIGTERM to stop, and ``worker ready`` once it runs
(what the bench waits for, `bench._common.wait_ready`).

The hand-written baselines (`bench.handwritten`, `bench.handwritten_features`) and pydantic-ai's
contestant (`bench.peer_pydantic_ai`, in the peer race's own venv) each build a different worker;
this module imports nothing but the standard library (temporalio for types only), so a worker
process loads no more than its own module needs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from temporalio.worker import Worker


def main(
    prog: str,
    worker: Callable[[argparse.Namespace], Awaitable[Worker]],
    options: Callable[[argparse.ArgumentParser], object] | None = None,
) -> None:
    """Parse ``prog``'s command line (``--address`` and ``--task-queue``, required, and what
    ``options`` adds), then run the worker ``worker`` builds from the parsed arguments until
    SIGTERM, printing ``worker ready`` once it runs."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    if options is not None:
        options(parser)
    asyncio.run(serve(worker, parser.parse_args()))


async def serve(
    worker: Callable[[argparse.Namespace], Awaitable[Worker]], args: argparse.Namespace
) -> None:
    """Run the worker ``worker(args)`` builds until SIGTERM (until it is built, SIGTERM ends the
    process at once)."""
    built = await worker(args)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with built:
        print("worker ready", flush=True)
        await stop.wait()
