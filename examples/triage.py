"""The `triage` pipeline in Python: the twin of triage.yaml (both produce the same spec).

Run it with `durapipe run triage --file examples/triage.py --input-json '{"tickets": [...]}'`.
"""

from typing import Literal

from pydantic import BaseModel

import durapipe as dp


class Ticket(BaseModel):
    id: str
    subject: str
    body: str


class Classification(BaseModel):
    """What a ticket is about."""

    category: Literal["billing", "bug", "question", "spam"]
    urgent: bool


def ticket_llm(name: str, prompt: str, output: object = "text") -> dp.Pipe:
    return dp.llm(name, model="fast", inputs={"ticket": Ticket}, prompt=prompt, output=output)


classify = ticket_llm(
    "classify",
    "Classify this support ticket.\nSubject: {{ ticket.subject }}\n{{ ticket.body }}\n",
    output=Classification,
)
answer = ticket_llm("answer", "Draft a friendly reply to: {{ ticket.subject }}. {{ ticket.body }}")
refund_note = ticket_llm(
    "refund_note",
    "Write an internal note on whether to refund ticket {{ ticket.id }}: {{ ticket.body }}",
)
bug_report = ticket_llm(
    "bug_report",
    "Turn this ticket into a bug report with steps to reproduce: {{ ticket.body }}",
)

billing_drafts = dp.parallel(
    "billing_drafts",
    inputs={"ticket": Ticket},
    branches={"reply": answer, "refund_note": refund_note},
)
bug_drafts = dp.parallel(
    "bug_drafts", inputs={"ticket": Ticket}, branches={"reply": answer, "bug_report": bug_report}
)

route = dp.condition(
    "route",
    inputs={"category": str, "ticket": Ticket},
    expression="category",
    outcomes={"billing": billing_drafts, "bug": bug_drafts, "spam": "fail"},
    default=answer,
)

handle_ticket = dp.sequence(
    "handle_ticket",
    inputs={"ticket": Ticket},
    steps=[
        dp.step(classify, result="classification"),
        dp.bind("classification.category", result="category"),
        dp.step(route, result="drafts"),
    ],
    output={"id": "ticket.id", "category": "category", "drafts": "drafts"},
)

triage = dp.batch(
    "triage",
    description="Handle every ticket, five at a time; failed tickets are listed, not fatal.",
    inputs={"tickets": list[Ticket]},
    over="tickets",
    item="ticket",
    pipe=handle_ticket,
    max_concurrency=5,
    on_error="collect",
)

pipeline = dp.pipeline(triage, models={"fast": "durapipe/offline"})
