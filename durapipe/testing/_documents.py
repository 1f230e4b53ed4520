"""Small documents for testing extract pipes: a PDF with a text layer, an image of text, a scan.

Everything is made in memory with no network and no fonts beyond Pillow's own, and the same
arguments always give the same bytes.
"""

from __future__ import annotations

import io


def text_pdf(pages: list[str], *, font_size: int = 12) -> bytes:
    """A PDF with one page per string, each line written in Helvetica as a real text layer.

    Example:
        >>> text_pdf(["Invoice 42", "Page two"])[:8]
        b'%PDF-1.4'
    """
    objects: list[bytes] = []  # object n is objects[n - 1]
    page_ids = [4 + 2 * index for index in range(len(pages))]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    kids = " ".join(f"{page_id} 0 R" for page_id in page_ids)
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for page_id, text in zip(page_ids, pages, strict=True):
        lines = " T* ".join(f"({_escape(line)}) Tj" for line in text.splitlines())
        stream = f"BT /F1 {font_size} Tf {font_size * 1.4:.1f} TL 72 740 Td {lines} ET".encode(
            "latin-1"
        )
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def text_image(text: str, *, font_size: int = 36, image_format: str = "PNG") -> bytes:
    """An image of ``text`` (black on white, one line per line of text), e.g. to OCR in a test."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(font_size)
    lines = text.splitlines() or [""]
    width = max(int(font.getlength(line)) for line in lines) + 2 * font_size
    height = int(len(lines) * font_size * 1.6) + 2 * font_size
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(lines):
        draw.text((font_size, font_size + index * font_size * 1.6), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def scanned_pdf(text: str, *, font_size: int = 36) -> bytes:
    """A one-page PDF holding only an image of ``text``: no text layer, like a scanned page."""
    from PIL import Image

    image = Image.open(io.BytesIO(text_image(text, font_size=font_size)))
    buffer = io.BytesIO()
    image.save(buffer, format="PDF", resolution=150.0)
    return buffer.getvalue()


def _escape(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
