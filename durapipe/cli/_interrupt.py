"""A local run interrupted by Ctrl-C ends quietly (exit 130), without Python's warnings."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def interruptible(run: Awaitable[T]) -> T:
    """Await a local run; when Ctrl-C cancels it, let go of the provider call it abandoned quietly.

    litellm's ``acompletion`` builds a call's coroutine in an executor thread (its ``completion``
    returns it) and awaits it back in the loop. A Ctrl-C while that thread runs cancels the await,
    and the coroutine the thread returns afterwards has nobody to await or close it: Python
    printed ``RuntimeWarning: coroutine 'OfflineModel.acompletion' was never awaited`` as the
    process exited. Nothing of that call was sent, so the warning is noise after a Ctrl-C.
    """
    try:
        return await run
    except asyncio.CancelledError:
        warnings.filterwarnings(
            "ignore", message=r"coroutine '.*' was never awaited", category=RuntimeWarning
        )
        raise
