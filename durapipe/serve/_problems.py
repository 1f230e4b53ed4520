"""Errors of `durapipe serve` as MTHDS problem documents (RFC 9457 with the MTHDS core members).

Every refusal is one `ServeError`: an HTTP status and one sentence that names what to change, under a
code of the MTHDS core registry, so the `mthds` client reads it as the runtime's own problem
(`exc.problem.code`) instead of guessing from the status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"
CORE_BASE_URL: Final = "https://mthds.ai/errors"


@dataclass(frozen=True)
class _Code:
    """What the MTHDS core registry declares about one code: status, title, who acts, retry, next step."""

    status: int
    title: str
    domain: str
    retry: str
    step: str


# The codes this runner answers with, copied from the registry of the `mthds` package (0.25.0), so
# the server needs no client library at run time.
CODES: Final[dict[str, _Code]] = {
    "auth.missing_credential": _Code(
        401, "No credential was sent", "account", "no", "check_credentials"
    ),
    "auth.invalid_credential": _Code(
        401, "The credential was refused", "account", "no", "check_credentials"
    ),
    "request.malformed": _Code(
        422, "The request body cannot be parsed", "input", "no", "change_input"
    ),
    "request.invalid": _Code(
        422, "The request does not match the route's schema", "input", "no", "change_input"
    ),
    "request.not_found": _Code(404, "No such route", "input", "no", "upgrade"),
    "request.method_not_allowed": _Code(
        405, "The route does not accept this HTTP method", "input", "no", "upgrade"
    ),
    "request.too_large": _Code(
        413, "The request exceeds a size limit", "input", "no", "change_input"
    ),
    "request.pipe_not_found": _Code(
        422, "The selected pipe is not in the method", "input", "no", "change_input"
    ),
    "request.pipe_unspecified": _Code(422, "No pipe is selected", "input", "no", "change_input"),
    "request.idempotency_conflict": _Code(
        409, "The idempotency key was used for a different request", "input", "no", "change_input"
    ),
    "request.blobs_missing": _Code(
        422, "The runner does not hold some files sent by hash", "input", "no", "change_input"
    ),
    "request.unsupported": _Code(
        422, "The request uses a form this runtime does not accept", "input", "no", "change_input"
    ),
    "method.invalid": _Code(422, "The method does not validate", "method", "no", "change_method"),
    "security.method_path_refused": _Code(
        422, "A path the method names was refused", "method", "no", "change_method"
    ),
    "input.missing": _Code(422, "A required input is missing", "input", "no", "change_input"),
    "input.invalid": _Code(
        422, "An input does not fit its concept's structure", "input", "no", "change_input"
    ),
    "run.not_found": _Code(404, "No such run", "input", "no", "change_input"),
    "run.failed": _Code(409, "The run did not succeed", "runtime", "no", "read_run"),
    "run.not_finished": _Code(409, "The run has not finished", "runtime", "yes", "wait"),
    "runtime.unavailable": _Code(
        503, "The runtime or a service it depends on is unavailable", "runtime", "yes", "retry"
    ),
    "runtime.unexpected": _Code(500, "An unexpected error occurred", "runtime", "no", "report"),
    # durapipe's own extension code (the registry has none for a request that arrives too slowly).
    "durapipe.request.timeout": _Code(
        408, "The request did not arrive in time", "input", "yes", "retry"
    ),
}


class ServeError(Exception):
    """A refusal of `durapipe serve`, answered as a problem document.

    Args:
        code: a code of `CODES`.
        detail: one sentence saying what happened and what to change, with the names that find it.
        status: the HTTP status, when it differs from the code's.
        params: the code's parameters.
        errors: one item per fault (`{"code", "detail", "location"}`), for a method with several.
        extra: more members (``pipeline_run_id``, ``retry_after``, ``run_error``).
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        params: dict[str, Any] | None = None,
        errors: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status or CODES[code].status
        self.params = params
        self.errors = errors
        self.extra = extra or {}

    def document(self) -> dict[str, Any]:
        """The problem document: RFC 9457 members and the MTHDS core members."""
        spec = CODES[self.code]
        body: dict[str, Any] = {
            "type": f"{CORE_BASE_URL}/{self.code}",
            "title": spec.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "domain": spec.domain,
            "retry": spec.retry,
            "next_step": {"kind": spec.step, "detail": self.detail},
        }
        if self.params is not None:
            body["params"] = self.params
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        """The HTTP answer carrying this problem."""
        return web.json_response(
            self.document(),
            status=self.status,
            content_type=PROBLEM_CONTENT_TYPE,
            headers=headers,
        )


def problem_item(code: str, detail: str, **location: Any) -> dict[str, Any]:
    """One fault of a method or a verdict (`ProblemItem`): a code, a sentence, where it is."""
    item: dict[str, Any] = {"code": code, "detail": detail}
    where = {key: value for key, value in location.items() if value is not None}
    if where:
        item["location"] = where
    return item
