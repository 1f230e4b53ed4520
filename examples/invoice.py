"""The `invoice` pipeline in Python: the twin of invoice.yaml (both produce the same spec).

Run it with
`durapipe run invoice --file examples/invoice.py --input document=@examples/invoice.pdf --local`.
"""

from typing import Literal

from pydantic import BaseModel, Field

import durapipe as dp


class LineItem(BaseModel):
    description: str
    quantity: int = 1
    amount: float = Field(description="The line's total in the invoice currency.")


class Invoice(BaseModel):
    """The facts of one invoice."""

    vendor: str
    invoice_number: str
    currency: Literal["EUR", "USD", "GBP"]
    total: float
    line_items: list[LineItem]
    notes: str | None = None


read_invoice = dp.extract("read_invoice", inputs={"document": "document"})

structure_invoice = dp.llm(
    "structure_invoice",
    model="fast",
    inputs={"pages": list[dp.Page]},
    system="You read invoices and report exactly what they say.",
    prompt=(
        "Extract the vendor, invoice number, currency, total and line items of this invoice.\n"
        "{% for page in pages %}\n"
        "--- page {{ page.page }} ---\n"
        "{{ page.text }}\n"
        "{% endfor %}\n"
    ),
    output=Invoice,
)

review_invoice = dp.llm(
    "review_invoice",
    model="fast",
    inputs={"invoice": Invoice},
    prompt=(
        "Write a two-line review note for the accounts team about this invoice from\n"
        "{{ invoice.vendor }} for {{ invoice.total }} {{ invoice.currency }}: "
        "what to check before paying.\n"
    ),
)

route_by_total = dp.condition(
    "route_by_total",
    description="Large invoices get a review note; small ones go through as they are.",
    inputs={"invoice": Invoice},
    expression="invoice.total > 1000",
    outcomes={True: review_invoice, False: "continue"},
)

invoice = dp.sequence(
    "invoice",
    description="Read an invoice, structure it, and add a review note when its total is large.",
    inputs={"document": "document"},
    steps=[
        dp.step(read_invoice, result="pages"),
        dp.step(structure_invoice, result="invoice"),
        dp.step(route_by_total, result="review"),
    ],
    output=["invoice", "review"],
)

pipeline = dp.pipeline(invoice, models={"fast": "durapipe/offline"})
