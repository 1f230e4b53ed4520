"""Writes examples/invoice.pdf, the sample invoice of examples/invoice.yaml (run once; committed).

python examples/make_invoice_pdf.py
"""

from pathlib import Path

from durapipe.testing import text_pdf

INVOICE = """\
ACME Office Supplies Ltd.
12 Harbour Street, Bristol BS1 4QA
INVOICE  No. INV-2024-0117
Date: 2024-03-14
Bill to: Northwind Traders

Description                     Qty      Amount
Recycled paper, A4 (box)          4      £96.00
Ink cartridges, black             6     £138.00
Desk organiser                    2      £31.50

Subtotal                                £265.50
VAT 20%                                  £53.10
TOTAL DUE (GBP)                         £318.60

Payment within 30 days to IBAN GB29 NWBK 6016 1331 9268 19."""


def main() -> None:
    target = Path(__file__).with_name("invoice.pdf")
    target.write_bytes(text_pdf([INVOICE]))
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
