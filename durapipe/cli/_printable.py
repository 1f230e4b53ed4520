"""Text from a run, made safe for a terminal.

A run's pipe and step names, its errors and its answers come from whoever started it (any client
of the namespace can send a spec that was never validated) or from a model. Printed as they are,
an escape sequence in them would drive the reader's terminal: retitle it, clear it, make a link,
or (a bidi override) show text in an order other than its own. The CLI prints such text through
`printable`, which shows each control character as its escape (``\\x1b``) instead.
"""

from __future__ import annotations

# C0 and C1 controls (but newline and tab), DEL, and the bidi embeddings, overrides and isolates.
_CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
_ESCAPED = {
    **{code: f"\\x{code:02x}" for code in _CONTROLS},
    **{code: f"\\u{code:04x}" for code in _BIDI},
}


def printable(text: str) -> str:
    """``text`` with every control character (newlines and tabs aside) shown as its escape.

    Example:
        >>> printable("ask\\x1b[2J")
        'ask\\\\x1b[2J'
    """
    return text.translate(_ESCAPED)


# In JSON the same characters keep their value as ``\uXXXX`` escapes (json.dumps escapes C0 itself).
_JSON_ESCAPED = {code: f"\\u{code:04x}" for code in [*range(0x7F, 0xA0), *_BIDI]}


def printable_json(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with the controls json leaves as they
    are (DEL, C1, bidi) escaped as ``\\uXXXX``: the same JSON value, safe for a terminal."""
    return text.translate(_JSON_ESCAPED)
