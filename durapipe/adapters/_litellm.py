"""The litellm adapter: one place that imports litellm, registers the offline model and maps errors.

litellm is imported lazily (it takes seconds) and only with ``LITELLM_LOCAL_MODEL_COST_MAP=True``,
because without it litellm fetches a price list from the internet at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from temporalio.exceptions import ApplicationError

from durapipe._errors import ErrorType
from durapipe._settings import settings
from durapipe.security._codec import EncryptionError
from durapipe.security._secrets import redact

_litellm: ModuleType | None = None
# One import at a time: a local run imports litellm on a thread while its first steps run (see
# `durapipe.local`), and a step may ask for it meanwhile.
_importing = threading.Lock()


def litellm_module() -> ModuleType:
    """The litellm module, imported offline-safe, with the offline model registered.

    The first call imports it (3.5 s on an idle two-core machine, 12-19 s on a loaded one); any
    thread may make it, and a call made meanwhile waits for that import.
    """
    global _litellm
    if _litellm is None:
        with _importing:
            if _litellm is None:
                _litellm = _import_litellm()
    return _litellm


def litellm_imported() -> bool:
    """Whether `litellm_module` has imported litellm already (a call would not wait)."""
    return _litellm is not None


def _import_litellm() -> ModuleType:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    from durapipe.adapters._offline import register_offline_model

    litellm.suppress_debug_info = True
    litellm.drop_params = True  # a setting one provider lacks must not fail a step on another
    register_offline_model()
    register_env_prices(litellm)
    return litellm


def missing_keys(model: str) -> tuple[str, list[str]]:
    """The provider of ``model`` and the variables litellm looks for that this process's
    environment lacks (``("openai", ["OPENAI_API_KEY"])``; none: the provider has what it needs)."""
    litellm = litellm_module()
    try:
        provider = litellm.get_llm_provider(model)[1]
        found = litellm.validate_environment(model=model)
    except Exception:  # a model litellm cannot place: the step says so itself when it runs
        return "", []
    return provider, list(found.get("missing_keys") or [])


async def warm_provider_clients() -> None:
    """Run litellm's first-call setup for OpenAI-compatible providers now, offline.

    litellm's first request to such a provider imports and builds its client machinery (most of a
    second; seconds on a busy host). Inside a worker's first call that delays the request past the
    moment its provider limit let it go, so workers pay it at startup instead: one request to a
    closed port on this host, refused before anything is sent anywhere.
    """
    litellm = litellm_module()
    with socket.socket() as closed:  # a port nobody listens on: bound, never listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with contextlib.suppress(Exception):
            await litellm.acompletion(
                model="openai/warm-up",
                api_base=f"http://127.0.0.1:{port}/v1",
                api_key="warm-up",
                messages=[{"role": "user", "content": "warm-up"}],
                num_retries=0,
                timeout=5,
            )


def litellm_tasks(tasks: Iterable[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """The tasks among ``tasks`` that run litellm's code and end by themselves: the logging
    litellm starts for each call (its service hooks), not anything else the process started.

    A task is litellm's when its coroutine's code lives in the litellm package (read from the
    code object, so a renamed hook still counts). litellm's logging worker loop
    (``LoggingWorker._worker_loop``) is litellm's too but never ends: it is left out.
    """
    package = Path(litellm_module().__file__ or "").parent
    endless = _endless_litellm_code()
    found: set[asyncio.Task[Any]] = set()
    for task in tasks:
        code = getattr(task.get_coro(), "cr_code", None)
        if code is None or code in endless:
            continue
        if Path(code.co_filename).is_relative_to(package):
            found.add(task)
    return found


def _endless_litellm_code() -> set[CodeType]:
    try:
        from litellm.litellm_core_utils.logging_worker import LoggingWorker
    except ImportError:  # a litellm without the logging worker: nothing of its runs forever
        return set()
    loop = getattr(LoggingWorker, "_worker_loop", None)
    return {loop.__code__} if loop is not None else set()


PRICES_ENV = "DURAPIPE_MODEL_PRICES"


def register_env_prices(litellm: ModuleType) -> None:
    """Register the model prices in ``DURAPIPE_MODEL_PRICES`` with litellm.

    The variable holds JSON, or the path of a JSON file: ``{"openai/gpt-x":
    {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}}`` (any field of litellm's
    price data). Workers need it for models litellm has no price for (a private deployment, the
    fake provider in tests): cost accounting and budget estimates both read these prices.
    """
    prices = settings().prices()  # checked when the worker or client started
    entries: dict[str, dict[str, Any]] = {}
    for model, info in prices.items():
        provider = model.partition("/")[0] if "/" in model else "openai"
        entries[model] = {"litellm_provider": provider, "mode": "chat", **info}
    litellm.register_model(entries)


# Stable error type names, and whether the provider may answer next time (retryable).
# The contract is the HTTP status and the provider's own error code: litellm's exception classes
# are only a hint, since a new litellm release may map the same response to another class.
_BY_CODE = {
    "content_policy_violation": (ErrorType.CONTENT_POLICY_VIOLATION, False),
    "content_filter": (ErrorType.CONTENT_POLICY_VIOLATION, False),
    "context_length_exceeded": (ErrorType.CONTEXT_WINDOW_EXCEEDED, False),
    "string_above_max_length": (ErrorType.CONTEXT_WINDOW_EXCEEDED, False),
    "invalid_api_key": (ErrorType.AUTHENTICATION_ERROR, False),
    "model_not_found": (ErrorType.NOT_FOUND, False),
}
_BY_STATUS = {
    400: (ErrorType.BAD_REQUEST, False),
    401: (ErrorType.AUTHENTICATION_ERROR, False),
    403: (ErrorType.PERMISSION_DENIED, False),
    404: (ErrorType.NOT_FOUND, False),
    408: (ErrorType.TIMEOUT, True),
    409: (ErrorType.CONFLICT, True),
    422: (ErrorType.BAD_REQUEST, False),
    429: (ErrorType.RATE_LIMITED, True),
}
# Hints for failures without a status (no response came back) or without a code (providers whose
# errors litellm recognises from their wording, e.g. a context window named only in the message).
_BY_CLASS = {
    "ContextWindowExceededError": (ErrorType.CONTEXT_WINDOW_EXCEEDED, False),
    "ContentPolicyViolationError": (ErrorType.CONTENT_POLICY_VIOLATION, False),
    "Timeout": (ErrorType.TIMEOUT, True),
    "APIConnectionError": (ErrorType.CONNECTION_ERROR, True),
    "AuthenticationError": (ErrorType.AUTHENTICATION_ERROR, False),
    "PermissionDeniedError": (ErrorType.PERMISSION_DENIED, False),
    "NotFoundError": (ErrorType.NOT_FOUND, False),
    "UnsupportedParamsError": (ErrorType.BAD_REQUEST, False),
    "UnprocessableEntityError": (ErrorType.BAD_REQUEST, False),
    "BadRequestError": (ErrorType.BAD_REQUEST, False),
    "RateLimitError": (ErrorType.RATE_LIMITED, True),
    "InternalServerError": (ErrorType.PROVIDER_ERROR, True),
    "ServiceUnavailableError": (ErrorType.PROVIDER_ERROR, True),
    "BadGatewayError": (ErrorType.PROVIDER_ERROR, True),
}
# Class hints that say more than a bare 400 (a status alone cannot tell these from a bad request).
_REFINES_BAD_REQUEST = ("ContextWindowExceededError", "ContentPolicyViolationError")


_NO_CREDENTIALS = re.compile(
    r"Missing credentials|api_key client option must be set|Missing \w+ API key", re.IGNORECASE
)
"""How litellm and the openai SDK say no API key was found (raised before any request is sent):
``Missing Gemini API key``, ``Missing Anthropic API Key`` (litellm calls Gemini's a 500
connection error)."""


def classify(err: BaseException, *, model: str) -> ApplicationError:
    """An `ApplicationError` with a stable type name and the right retryability for a provider error.

    A retryable error carries the provider's Retry-After (if any) as ``next_retry_delay``, which
    Temporal uses instead of the retry policy's own interval.
    """
    sealed = _encryption_error(err)
    if sealed is not None:
        # A kept answer this worker cannot open (see `durapipe.adapters._answers`), raised in the
        # transport and wrapped by litellm: it fails the step as sealed content without the key
        # does anywhere (non-retryable, naming the variable), not as a retryable connection error.
        return ApplicationError(
            str(sealed), type=ErrorType.ENCRYPTION_KEY_ERROR, non_retryable=True
        )
    error_type, retryable = error_type_of(err)
    delay = retry_after(err) if retryable else None
    untrusted = untrusted_certificate(err)
    return ApplicationError(
        f"{model}: {untrusted or _no_key(err, model) or _short(err)}",
        type=error_type,
        non_retryable=not retryable,
        next_retry_delay=timedelta(seconds=delay) if delay is not None else None,
    )


def _no_key(err: BaseException, model: str) -> str | None:
    """A key missing where the step runs, in durapipe's words (litellm's is a 500's label:
    ``InternalServerError: OpenAIException - Missing credentials. Please pass an `api_key`...``),
    naming the variable the provider reads; None for any other error."""
    text = str(err)
    if not _NO_CREDENTIALS.search(text):
        return None
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    named = _KEY_VARIABLE.search(text)  # the provider's own variable, when its message names one
    variable = named.group(0) if named else f"{provider.upper().replace('-', '_')}_API_KEY"
    return (
        f"no API key for provider '{provider}' where this step runs: set {variable} in the "
        "worker's environment (or its --secrets-file; with --local, this process's); nothing "
        "was sent"
    )


_KEY_VARIABLE = re.compile(r"\b[A-Z][A-Z0-9_]*_(?:API_KEY|TOKEN)\b")


def _encryption_error(err: BaseException) -> EncryptionError | None:
    """The `EncryptionError` behind ``err`` (litellm wraps what its transport raises), if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, EncryptionError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def error_type_of(err: BaseException) -> tuple[str, bool]:
    """The stable type name of a provider error and whether it is worth retrying.

    In order: the provider's error code, its ``x-should-retry`` hint, the HTTP status, and only
    then litellm's exception class (for failures that never got a response).
    """
    names = [cls.__name__ for cls in type(err).__mro__]
    text = str(err)
    # A key missing on this worker is raised before any request: no retry brings it.
    if _NO_CREDENTIALS.search(text):
        return ErrorType.AUTHENTICATION_ERROR, False
    # A certificate this worker does not trust is its configuration (or an attack): no retry helps.
    if untrusted_certificate(err) is not None:
        return ErrorType.UNTRUSTED_CERTIFICATE, False
    code = provider_error_code(err)
    if code in _BY_CODE:
        return _BY_CODE[code]
    status = status_of(err)
    # A dropped connection reaches us as a 500 InternalServerError saying "Connection error."
    if "Connection error" in text:
        return ErrorType.CONNECTION_ERROR, True
    if status == 400:
        for name in names:
            if name in _REFINES_BAD_REQUEST:
                return _BY_CLASS[name]
    if status is not None:
        error_type, retryable = _status_type(status)
        hint = _header(err, "x-should-retry")
        if hint in ("true", "false"):
            retryable = hint == "true"
        return error_type, retryable
    for name in names:
        if name in _BY_CLASS:
            return _BY_CLASS[name]
    return ErrorType.PROVIDER_ERROR, True


def untrusted_certificate(err: BaseException) -> str | None:
    """The sentence for a provider whose TLS certificate failed verification, naming its endpoint;
    None for any other error.

    The verification error is at the bottom of the chain (litellm's error, the openai SDK's
    "Connection error.", httpx's, then `ssl`'s); the openai SDK's error carries the request.
    """
    verify: ssl.SSLCertVerificationError | None = None
    endpoint = "this provider"
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            verify = cause
        with contextlib.suppress(Exception):  # httpx errors raise when they carry no request
            url = cause.request.url  # type: ignore[attr-defined]
            endpoint = f"{url.scheme}://{url.netloc.decode('ascii')}"
        cause = cause.__cause__ or cause.__context__
    if verify is None:
        return None
    reason = verify.verify_message or str(verify)
    return (
        f"the provider at {endpoint} presented a TLS certificate this worker does not trust "
        f"({reason}); give the worker the CA that signed it (SSL_CERT_FILE=/path/to/ca.pem)"
    )


def _status_type(status: int) -> tuple[str, bool]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return ErrorType.BAD_REQUEST, False
    return ErrorType.PROVIDER_ERROR, True


def status_of(err: BaseException) -> int | None:
    """The HTTP status of the provider's answer, or None when no answer came back."""
    response = getattr(err, "response", None)
    for status in (getattr(response, "status_code", None), getattr(err, "status_code", None)):
        if isinstance(status, int) and 100 <= status <= 599:
            return status
    return None


def provider_error_code(err: BaseException) -> str | None:
    """The provider's own error code (OpenAI-style ``{"error": {"code": ...}}``), if it sent one."""
    bodies: list[Any] = [getattr(err, "body", None)]
    response = getattr(err, "response", None)
    if response is not None:
        with contextlib.suppress(Exception):
            bodies.append(response.json())
    for body in bodies:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body = body["error"]
        if isinstance(body, dict):
            for field in ("code", "type"):
                value = body.get(field)
                if isinstance(value, str) and value in _BY_CODE:
                    return value
    code = getattr(err, "code", None)
    return code if isinstance(code, str) else None


def _headers(err: BaseException) -> Any:
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None) if response is not None else None
    return headers or getattr(err, "litellm_response_headers", None) or {}


def _header(err: BaseException, name: str) -> str | None:
    headers = _headers(err)
    value = headers.get(name) or headers.get(name.title())
    return str(value).strip().lower() if value is not None else None


def retry_after(err: BaseException) -> float | None:
    """Seconds the provider asked us to wait (``retry-after-ms`` or ``Retry-After``), if it did."""
    headers = _headers(err)
    millis = headers.get("retry-after-ms")
    if millis is not None:
        with contextlib.suppress(ValueError):
            return max(0.0, float(millis) / 1000)
    value = headers.get("retry-after") or headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _short(err: BaseException) -> str:
    text = redact(str(err).replace("litellm.", "").strip())
    # Some litellm errors carry the traceback they were raised from in their message (Gemini's
    # missing key): litellm's internals, not the user's to read in a step's one-sentence error.
    text = text.split("\nTraceback (most recent call last)", 1)[0].strip()
    # litellm names its class twice ("ServiceUnavailableError: ServiceUnavailableError: ..."): once.
    name = type(err).__name__
    text = text.replace(f"{name}: {name}: ", f"{name}: ", 1)
    return text if len(text) <= 500 else text[:497] + "..."


def response_cost(response: Any) -> float:
    """What a litellm response cost in USD, 0 when litellm does not know the model's price."""
    # litellm already priced the response while handling it; pricing it again costs a millisecond.
    # None there means litellm found no price for the model: asking again found none either, and
    # cost 354 us a step (a model without a price, as the peer bench's fake provider's).
    hidden = response_attribute(response, "_hidden_params") or {}
    if "response_cost" in hidden:
        return float(hidden["response_cost"] or 0.0)
    try:
        return float(litellm_module().completion_cost(completion_response=response) or 0.0)
    except Exception:  # a model without a known price costs what we cannot know: record 0
        return 0.0


def thinking_budget(
    model: str, effort: object, limit: int, connection: Mapping[str, Any]
) -> int | None:
    """The thinking budget litellm sends ``model`` for ``reasoning_effort=effort`` beside an
    output limit of ``limit``, or None when it sends none (a model with adaptive thinking, or
    no thinking: OpenAI's reasoning models, Gemini, a model that does not reason).

    A budget is sent by Anthropic's extended thinking on the models without adaptive thinking,
    wherever they are served (Anthropic's API, Bedrock, Vertex AI, ...). It is read from
    litellm's own mapping of the request's parameters (``get_optional_params``, what
    ``completion`` sends), so a litellm that maps an effort to another budget is followed.
    """
    provider = connection.get("custom_llm_provider")
    api_base = connection.get("api_base") or connection.get("base_url")
    if isinstance(effort, str):  # the answer of a few hundred microseconds, kept
        return _thinking_budget(model, effort, limit, provider, api_base)
    return _thinking_budget.__wrapped__(model, effort, limit, provider, api_base)


@functools.lru_cache(maxsize=256)
def _thinking_budget(
    model: str, effort: object, limit: int, provider: str | None, api_base: str | None
) -> int | None:
    litellm = litellm_module()
    try:
        name, routed, _, _ = litellm.get_llm_provider(
            model=model, custom_llm_provider=provider, api_base=api_base
        )
        params = litellm.get_optional_params(
            model=name, custom_llm_provider=routed, max_tokens=limit, reasoning_effort=effort
        )
    except Exception:
        # litellm cannot map them: the request itself fails the same way, and says why.
        return None
    thinking = params.get("thinking")
    if not isinstance(thinking, dict) or thinking.get("type") != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    return budget if isinstance(budget, int) and not isinstance(budget, bool) else None


def image_takes(model: str, name: str, connection: Mapping[str, Any]) -> bool:
    """Whether litellm sends image parameter ``name`` to ``model`` (read from its image config
    for the model's provider: Black Forest Labs takes ``seed`` and ``raw``, OpenAI's image
    models neither); none where litellm has no image config for the provider."""
    provider = connection.get("custom_llm_provider")
    api_base = connection.get("api_base") or connection.get("base_url")
    return name in _image_params(model, provider, api_base)


@functools.lru_cache(maxsize=256)
def _image_params(model: str, provider: str | None, api_base: str | None) -> frozenset[str]:
    litellm = litellm_module()
    try:
        name, routed, _, _ = litellm.get_llm_provider(
            model=model, custom_llm_provider=provider, api_base=api_base
        )
        config = litellm.utils.ProviderConfigManager.get_provider_image_generation_config(
            model=name, provider=litellm.LlmProviders(routed)
        )
    except Exception:
        # litellm cannot route it: the request itself fails the same way, and says why.
        return frozenset()
    if config is None:
        return frozenset()
    return frozenset(config.get_supported_openai_params(model=name))


def response_attribute(response: Any, name: str) -> Any:
    """``getattr(response, name, None)``, without pydantic's Python ``__getattr__`` where it can.

    A litellm response keeps ``usage`` among its extra fields and ``_hidden_params`` among its
    private attributes: plain attribute lookup misses both, and pydantic's ``__getattr__`` (Python
    code, after a failed lookup that raised AttributeError) then finds them, ~2 and ~5 us a read
    on this machine. Read from where that ``__getattr__`` reads them first; anything else (not a
    pydantic model, a declared field, a name it lacks) goes through ``getattr`` as before.
    """
    slot = "__pydantic_private__" if name.startswith("_") else "__pydantic_extra__"
    found = getattr(response, slot, None)
    if found and name in found:
        return found[name]
    return getattr(response, name, None)
