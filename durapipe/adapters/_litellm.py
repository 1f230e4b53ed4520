"""The litellm adapter: one place that imports litellm, registers the offline model and maps errors.

litellm is imported lazily (it takes seconds) and only with ``LITELLM_LOCAL_MODEL_COST_MAP=True``,
because without it litellm fetches a price list from the internet at import time.
"""

from __future__ import annotations

import email.utils
import functools
import os
import time
from datetime import timedelta
from types import ModuleType
from typing import Any

from temporalio.exceptions import ApplicationError

from durapipe._secrets import redact


@functools.cache
def litellm_module() -> ModuleType:
    """The litellm module, imported offline-safe, with the offline model registered."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    from durapipe.testing._offline import register_offline_model

    litellm.suppress_debug_info = True
    litellm.drop_params = True  # a setting one provider lacks must not fail a step on another
    register_offline_model()
    return litellm


# Stable error type names. Retryable: the provider may answer next time. Non-retryable: it will not.
_NON_RETRYABLE = {
    "AuthenticationError": "durapipe.AuthenticationError",
    "PermissionDeniedError": "durapipe.PermissionDenied",
    "ContextWindowExceededError": "durapipe.ContextWindowExceeded",
    "ContentPolicyViolationError": "durapipe.ContentPolicyViolation",
    "NotFoundError": "durapipe.NotFound",
    "UnsupportedParamsError": "durapipe.BadRequest",
    "UnprocessableEntityError": "durapipe.BadRequest",
    "BadRequestError": "durapipe.BadRequest",
}
_RETRYABLE = {
    "RateLimitError": "durapipe.RateLimited",
    "Timeout": "durapipe.Timeout",
    "APIConnectionError": "durapipe.ConnectionError",
    "InternalServerError": "durapipe.ProviderError",
    "ServiceUnavailableError": "durapipe.ProviderError",
    "BadGatewayError": "durapipe.ProviderError",
}
_RETRYABLE_STATUS = {408, 409, 429}


def classify(err: BaseException, *, model: str) -> ApplicationError:
    """An `ApplicationError` with a stable type name and the right retryability for a provider error."""
    message = f"{model}: {_short(err)}"
    # Walk the class hierarchy so subclasses (ContextWindowExceeded is a BadRequest) map first.
    for cls in type(err).__mro__:
        if cls.__name__ in _NON_RETRYABLE:
            return ApplicationError(message, type=_NON_RETRYABLE[cls.__name__], non_retryable=True)
        if cls.__name__ in _RETRYABLE:
            delay = retry_after(err)
            return ApplicationError(
                message,
                type=_RETRYABLE[cls.__name__],
                next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
            )
    status = getattr(err, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in _RETRYABLE_STATUS:
        return ApplicationError(message, type="durapipe.BadRequest", non_retryable=True)
    return ApplicationError(message, type="durapipe.ProviderError")


def retry_after(err: BaseException) -> float | None:
    """Seconds from a Retry-After header on a provider error, if the provider sent one."""
    headers: Any = None
    response = getattr(err, "response", None)
    if response is not None:
        headers = getattr(response, "headers", None)
    headers = headers or getattr(err, "litellm_response_headers", None)
    if not headers:
        return None
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time())


def _short(err: BaseException) -> str:
    text = redact(str(err).replace("litellm.", "").strip())
    return text if len(text) <= 500 else text[:497] + "..."
