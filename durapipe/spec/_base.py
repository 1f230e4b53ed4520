"""The parts every pipe spec shares: durations, `RetrySpec` and `PipeBase` (see `durapipe.spec.Kind`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
# Several parts, largest first, as `format_duration` writes them: ``1h30m``, ``2m30s``.
_COMPOUND = re.compile(r"^\s*((?:\d+(?:ms|s|m|h|d))+)\s*$")
_PART = re.compile(r"(\d+)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``500ms``, ``30s``, ``2m``, ``1h``, ``1d``, or
    several of them largest first, as `format_duration` writes them (``1h30m``).

    Raises:
        ValueError: not a duration, or not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    elif isinstance(value, str) and (match := _COMPOUND.match(value)):
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(match.group(1)))
    else:
        raise ValueError(f"{value!r} is not a duration (use seconds, or e.g. '30s', '2m', '1h')")
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration the way a person writes it, largest unit first: ``10m``, ``1h30m``, ``45s``.

    `parse_duration` reads it back.

    Example:
        >>> format_duration(600), format_duration(5400), format_duration(0.25)
        ('10m', '1h30m', '250ms')
    """
    left = round(seconds * 1000)
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[float, pydantic.BeforeValidator(parse_duration)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrySpec(_Spec):
    """How a step is retried (Temporal's RetryPolicy; the same rules apply with ``--local``).

    Attributes:
        max_attempts: total attempts including the first; 1 means no retry.
        initial_interval: delay before the first retry.
        backoff: multiplier applied to the delay after each retry.
        max_interval: the delay never grows past this.
        non_retryable: error type names that stop retrying at once.
    """

    max_attempts: int = Field(default=3, ge=1, le=100)
    initial_interval: Duration = 1.0
    backoff: float = Field(default=2.0, ge=1.0, le=10.0)
    max_interval: Duration = 60.0
    non_retryable: tuple[str, ...] = ()

    @pydantic.model_validator(mode="after")
    def _interval_order(self) -> RetrySpec:
        if self.max_interval < self.initial_interval:
            raise ValueError("max_interval must not be shorter than initial_interval")
        return self


class PipeBase(_Spec):
    """What every pipe kind's spec has: a subclass adds ``kind: Literal["name"] = "name"``.

    Attributes:
        description: what the pipe does, for people (and an agent's tool schema).
        inputs: input name -> type (``text``, ``Claim``, ``list[Claim]``, ``document``).
        timeout: each call's timeout in seconds (or ``30s``, ``2m``); the kind's default when unset.
        retry: how each call is retried; the kind's default when unset.
        queue: the task queue the pipe's calls run on (see `durapipe.spec.route`).
        budget_usd: the most a run of this pipe may spend, in USD; checked before each paid call.
    """

    if TYPE_CHECKING:
        # Each kind's class declares its own literal; not a field here, so the fields keep the
        # order recorded histories and checkpoint keys were written with.
        kind: str

    description: str = ""
    inputs: dict[str, str] = Field(default_factory=dict)
    timeout: Duration | None = None
    retry: RetrySpec | None = None
    queue: str | None = None
    # The most a run of this pipe may spend, in USD; checked before each paid call.
    budget_usd: float | None = Field(default=None, gt=0)
