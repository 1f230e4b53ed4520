"""What a provider call sends besides the prompt: the pipe's generation settings, refused if they
reach past them, plus the connection settings of this worker's model deck.

The spec arrives as workflow input, which any client of the namespace can send without running
validation, so the activity checks the settings again before anything is sent (see
`durapipe.spec._deck`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe.spec._deck import ModelDeck, refused_settings


def check_settings(kind: str, pipe_name: str, settings: Mapping[str, Any]) -> None:
    """Refuse a pipe whose settings go past generation parameters.

    Raises:
        ApplicationError: non-retryable ``durapipe.SettingNotAllowed`` naming the pipe and setting.
    """
    if not settings:
        return  # most pipes set none: nothing to refuse (checked twice a call, once per model)
    refused = refused_settings(kind, pipe_name, settings)
    if refused is not None:
        raise ApplicationError(refused, type=ErrorType.SETTING_NOT_ALLOWED, non_retryable=True)


def provider_settings(
    kind: str, pipe_name: str, model: str, settings: Mapping[str, Any], deck: ModelDeck | None
) -> dict[str, Any]:
    """The keyword arguments of a provider call: the deck's connection, then the pipe's settings.

    Raises:
        ApplicationError: the pipe's settings hold more than generation parameters, or this
            worker does not call ``model`` (checked again here, at the request: a body that
            forgot `check_models` still sends nothing).
    """
    check_settings(kind, pipe_name, settings)
    allowed = deck.allowed if deck is not None else None
    if allowed is not None and not allowed.allows(model):
        refused = allowed.refusal(pipe_name, "model", "model", model)
        raise ApplicationError(refused, type=ErrorType.MODEL_NOT_ALLOWED, non_retryable=True)
    return {**(deck.connection(model) if deck is not None else {}), **settings}
