"""Approval steps: what a waiting step asks a human, what the human answers, and how it is checked.

Pure code shared by the Temporal workflow (the update validator and handler) and the local runner.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from durapipe._errors import ErrorType, StepFailed
from durapipe.spec import ApprovalPipe, Pipeline, TemplateError, _types, render

DECIDE_UPDATE = "durapipe.decide"
REJECTED = ErrorType.REJECTED
# The longest reason or reviewer a decision may carry. A rejection's reason becomes the run's
# failure message, which is not a payload (no payload store takes it): a reason of 3 MB failed every
# workflow task of its run on Temporal's size limit (PAYLOADS_TOO_LARGE), and the run hung.
MAX_DECISION_TEXT = 2_000


class ApprovalRequest(BaseModel):
    """A step waiting for a human decision (what ``durapipe pending`` lists).

    Attributes:
        run_id: the top-level run.
        workflow_id: the workflow holding the step (the run, or a child ``<run id>/<path>``).
        path: the step path.
        pipe: the approval pipe's name.
        message: the rendered message for the reviewer.
        values: the input values under review.
        value: the input the run continues with when approved.
        output_type: the type edited data must fit.
        waiting_since: when the step started waiting.
        timeout_s: how long it waits (None: forever); then ``on_timeout`` applies.
        on_timeout: ``approve`` or ``reject``.
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    workflow_id: str = ""
    path: str
    pipe: str
    message: str
    values: dict[str, Any] = Field(default_factory=dict)
    value: str
    output_type: str
    waiting_since: datetime | None = None
    timeout_s: float | None = None
    on_timeout: Literal["approve", "reject"] = "reject"


class ApprovalDecision(BaseModel):
    """A human's answer to a waiting step (the argument of the ``durapipe.decide`` update).

    Attributes:
        step: the path of the waiting step.
        approved: approve (True) or reject (False).
        edited: whether ``data`` replaces the reviewed value.
        data: the edited value (only with ``edited``).
        reason: why, in the reviewer's words.
        reviewer: who decided.
    """

    model_config = ConfigDict(extra="forbid")

    step: str
    approved: bool
    edited: bool = False
    data: Any = None
    reason: str = ""
    reviewer: str = ""


def approval_request(
    run_id: str, path: str, pipe_name: str, pipe: ApprovalPipe, inputs: dict[str, Any]
) -> ApprovalRequest:
    """The request a waiting step shows; the message is rendered over the inputs.

    Raises:
        StepFailed: the message template failed to render.
    """
    try:
        message = render(pipe.message, inputs)
    except TemplateError as err:
        raise StepFailed(
            path=path, kind="approval", cause_type=ErrorType.TEMPLATE_ERROR, cause=str(err)
        ) from None
    return ApprovalRequest(
        run_id=run_id,
        path=path,
        pipe=pipe_name,
        message=message,
        values=inputs,
        value=pipe.value_name or "",
        output_type=pipe.output,
        timeout_s=pipe.timeout,
        on_timeout=pipe.on_timeout,
    )


def check_decision(
    request: ApprovalRequest, decision: ApprovalDecision, spec: Pipeline
) -> ApprovalDecision:
    """The decision with edited data validated against the step's type.

    Raises:
        ValueError: the data does not fit the step's type, or the reason or reviewer is longer
            than `MAX_DECISION_TEXT` (the message says how).
    """
    problem = decision_text_problem(decision)
    if problem is not None:
        raise ValueError(problem)
    if not (decision.approved and decision.edited):
        return decision
    try:
        data = _types.validate(request.output_type, spec.structures, decision.data)
    except pydantic.ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        raise ValueError(
            f"the data for step '{request.path}' must be {request.output_type}: "
            f"{where}: {first['msg']}"
        ) from None
    return decision.model_copy(update={"data": data})


def decision_text_problem(decision: ApprovalDecision) -> str | None:
    """Why the decision's reason or reviewer is too long, in one sentence, or None."""
    for field in ("reason", "reviewer"):
        text = getattr(decision, field)
        if len(text) > MAX_DECISION_TEXT:
            return (
                f"the {field} for step '{decision.step}' is {len(text):,} characters long; a "
                f"decision's {field} may be at most {MAX_DECISION_TEXT:,}"
            )
    return None


def timeout_decision(request: ApprovalRequest) -> ApprovalDecision:
    """The decision taken when nobody answered within the step's timeout."""
    return ApprovalDecision(
        step=request.path,
        approved=request.on_timeout == "approve",
        reason=f"no decision within {request.timeout_s:g}s",
        reviewer="timeout",
    )


def approved_value(request: ApprovalRequest, decision: ApprovalDecision) -> Any:
    """The step's output for a decision: the value, edited or not.

    Raises:
        StepFailed: the decision is a rejection (type ``durapipe.Rejected``, with the reason).
    """
    if not decision.approved:
        who = decision.reviewer or "the reviewer"
        reason = f": {decision.reason}" if decision.reason else ""
        raise StepFailed(
            path=request.path,
            kind="approval",
            cause_type=REJECTED,
            cause=f"rejected by {who}{reason}",
        )
    return decision.data if decision.edited else request.values.get(request.value)


def waiting_line(request: ApprovalRequest) -> str:
    """What a waiting step's record says it waits for."""
    return f"approval: {request.message}"
