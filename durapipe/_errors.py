"""Errors raised by durapipe.

Every error says what happened, where (pipe, step, field, run id) and, where it helps, what to do.

```
DurapipeError
├── PipelineError            a pipeline definition is wrong; nothing was started
│   └── (carries Problem rows: one per mistake, all reported at once)
├── ConfigError              the environment or a setting is wrong (missing tool, bad address, ...)
├── ToolError                raised by a tool: a recoverable error an agent's model sees as the result
├── DecisionRefused          an approval decision was refused (wrong step, not waiting, bad data)
└── RunError                 a run started and did not succeed
    ├── StepFailed           a step failed after its retries (names the step, kind, model and cause;
    │                        also a rejected approval, an exceeded budget, or a run larger than
    │                        its worker's DURAPIPE_MAX_RUN_STEPS, by cause type)
    ├── RunCancelled         the run was cancelled (the step in flight, later steps skipped)
    ├── RunStalled           the run cannot make progress (no worker polls a queue it needs)
    ├── RunNotFound          no run with that id
    └── RunExists            a running run has the id a new run was given (nothing was started)
```

Expected errors reach the CLI as one sentence on stderr and a non-zero exit; they are never shown
as tracebacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ErrorType(StrEnum):
    """The ``durapipe.X`` type names a failed step reports (`StepFailed.cause_type`, a step record's
    ``error_type``, Temporal's ``ApplicationError.type``).

    They are part of the user's contract: pipelines name them in ``non_retryable`` and tests match
    them, so a name never changes; code writes them only through this registry.
    """

    APPROVAL_UNAVAILABLE = "durapipe.ApprovalUnavailable"
    AUTHENTICATION_ERROR = "durapipe.AuthenticationError"
    BAD_DECISION = "durapipe.BadDecision"
    BAD_REQUEST = "durapipe.BadRequest"
    BLOB_NOT_FOUND = "durapipe.BlobNotFound"
    BUDGET_EXCEEDED = "durapipe.BudgetExceeded"
    CANCELLED = "durapipe.Cancelled"
    COMPOSE_ERROR = "durapipe.ComposeError"
    CONDITION_FAILED = "durapipe.ConditionFailed"
    CONFLICT = "durapipe.Conflict"
    CONNECTION_ERROR = "durapipe.ConnectionError"
    CONTENT_POLICY_VIOLATION = "durapipe.ContentPolicyViolation"
    CONTEXT_WINDOW_EXCEEDED = "durapipe.ContextWindowExceeded"
    ENCRYPTION_KEY_ERROR = "durapipe.EncryptionKeyError"
    EXPRESSION_ERROR = "durapipe.ExpressionError"
    INVALID_INPUT = "durapipe.InvalidInput"
    INVALID_OUTPUT = "durapipe.InvalidOutput"
    INVALID_SPEC = "durapipe.InvalidSpec"
    INVALID_TOOL_CALLS = "durapipe.InvalidToolCalls"
    MAX_TURNS_EXCEEDED = "durapipe.MaxTurnsExceeded"
    MISSING_VALUE = "durapipe.MissingValue"
    MODEL_NOT_ALLOWED = "durapipe.ModelNotAllowed"
    NO_OUTCOME = "durapipe.NoOutcome"
    NOT_A_LIST = "durapipe.NotAList"
    NOT_FOUND = "durapipe.NotFound"
    OCR_FAILED = "durapipe.OcrFailed"
    OCR_UNAVAILABLE = "durapipe.OcrUnavailable"
    OUTPUT_TRUNCATED = "durapipe.OutputTruncated"
    PERMISSION_DENIED = "durapipe.PermissionDenied"
    PROVIDER_ERROR = "durapipe.ProviderError"
    RATE_LIMITED = "durapipe.RateLimited"
    REJECTED = "durapipe.Rejected"
    RUN_TOO_LARGE = "durapipe.RunTooLarge"
    SETTING_NOT_ALLOWED = "durapipe.SettingNotAllowed"
    STEP_FAILED = "durapipe.StepFailed"
    TEMPLATE_ERROR = "durapipe.TemplateError"
    TIMEOUT = "durapipe.Timeout"
    TIMEOUT_NOT_ALLOWED = "durapipe.TimeoutNotAllowed"
    TOOL_ERROR = "durapipe.ToolError"
    TOOL_NOT_FOUND = "durapipe.ToolNotFound"
    UNKNOWN = "durapipe.Unknown"
    UNKNOWN_KIND = "durapipe.UnknownKind"
    UNTRUSTED_CERTIFICATE = "durapipe.UntrustedCertificate"
    UNSUPPORTED_DOCUMENT = "durapipe.UnsupportedDocument"


class DurapipeError(Exception):
    """Base of every error durapipe raises on purpose."""


@dataclass(frozen=True)
class Problem:
    """One mistake in a pipeline definition.

    Attributes:
        where: the pipe (and step or field) the mistake is in, e.g. ``pipe 'brief', step 'headline'``.
        message: what is wrong, in one sentence fragment.
        source: the file (and line/column when known) the pipe came from.
    """

    where: str
    message: str
    source: str = ""

    def __str__(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        return f"{prefix}{self.where}: {self.message}"


class PipelineError(DurapipeError):
    """A pipeline definition has mistakes; every one found is listed in ``problems``."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(DurapipeError):
    """A setting, file or environment value is wrong or missing."""


class ToolError(DurapipeError):
    """Raised by a tool function for an error the calling model can react to.

    Inside an agent the message goes back to the model as the tool's result (``{"error": ...}``)
    and the loop goes on; the call is not retried. Anywhere else it fails the step at once. Any
    other exception is retried by the tool's policy and then fails the step.

    Example:
        >>> def search(query: str) -> list[str]:
        ...     if not query.strip():
        ...         raise ToolError("the query is empty; ask with a few keywords")
        ...     return []
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class DecisionRefused(DurapipeError):
    """An approve/reject was refused: the step is unknown, not waiting, or the data does not fit."""


class RunError(DurapipeError):
    """A run started and did not succeed."""

    def __init__(self, message: str, *, run_id: str = "") -> None:
        self.run_id = run_id
        super().__init__(message)


class StepFailed(RunError):
    """A step failed after the retries its policy allows.

    Attributes:
        path: the step path inside the run, e.g. ``fact_check/verify``.
        kind: the pipe kind (``llm``, ``tool``, ...).
        model: the model the step called, if any.
        cause_type: the stable type name of the cause, e.g. ``durapipe.AuthenticationError``.
        cause: the cause's message.
        attempts: the attempt the step failed on (0 when unknown).
        spent: what the failed step spent before it failed, counted in the run's totals and
            budget (a ``durapipe.runtime.Usage``; None: nothing, or not known).
        failed_attempts: a failed leaf's spend per attempt (``FailedAttempt``s), for its record.
    """

    def __init__(
        self,
        *,
        path: str,
        kind: str,
        cause_type: str,
        cause: str,
        model: str | None = None,
        run_id: str = "",
        steps: list[Any] | None = None,
        attempts: int = 0,
    ) -> None:
        self.path = path
        self.attempts = attempts
        self.kind = kind
        self.model = model
        self.cause_type = cause_type
        self.cause = cause
        # The step records of the failed part of the run, so a parent can show where it stopped.
        self.steps = steps or []
        self.spent: Any = None
        self.failed_attempts: list[Any] = []
        on_model = f" on model {model}" if model else ""
        super().__init__(
            f"step '{path}' ({kind}{on_model}) failed: {cause_type}: {cause}", run_id=run_id
        )


class RunCancelled(RunError):
    """A run was cancelled: the step in flight is marked cancelled and later steps skipped.

    Attributes:
        path: the step that was in flight (empty when none was).
        steps: the step records when the run stopped, when known.
        spent: what the step in flight paid for before its cancellation reached it (a
            ``durapipe.runtime.Usage``; None: nothing, or not known), as `StepFailed.spent`.
        failed_attempts: its spend per attempt (``FailedAttempt``s), for its record.
    """

    def __init__(
        self, message: str, *, run_id: str = "", path: str = "", steps: list[Any] | None = None
    ) -> None:
        self.path = path
        self.steps = steps or []
        self.spent: Any = None
        self.failed_attempts: list[Any] = []
        super().__init__(message, run_id=run_id)


class RunStalled(RunError):
    """A run cannot make progress: a task queue it needs has no worker. The run itself goes on
    waiting on Temporal and proceeds once a worker polls the queue."""


class RunNotFound(RunError):
    """No run with the given id exists in the namespace."""


class RunExists(RunError):
    """A new run was given the id of a running run: nothing was started. (The id of a run that
    has ended starts a new run under it; Temporal keeps both.)

    A mistake in what was asked, like a bad input: the CLI exits 2 for it, not 1 (a run that did
    not succeed).
    """
