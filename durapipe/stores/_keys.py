"""The text a checkpoint key is hashed from, made without repeating work (see `checkpoint_key`).

Every leaf hashes its call as ``json.dumps(content, sort_keys=True, default=str, separators=(",",
":"))`` spells it; those bytes may not change (a worker upgraded while runs are in flight must find
the results the worker before it stored, see ``tests/stores/test_checkpoint_keys.py``).
`canonical_json` gives the same text for less, and `json_value` the text of one value of such a
document (for a key spliced together from its values in sorted order, see `checkpoint_key`).
"""

from __future__ import annotations

from _json import make_encoder  # CPython's, which temporalio's wheels need anyway
from json.encoder import encode_basestring_ascii
from typing import Any


def canonical_json(value: Any) -> str:
    """``value`` as ``json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))``
    spells it, raising what it raises.

    json.dumps builds a `json.JSONEncoder` and then json's C encoder on every call: a third of the
    time of an llm call's key. This builds the C encoder alone, with what json.dumps hands it, in
    its order: a fresh circular-reference marker dict (a value that contains itself raises
    ValueError, as it did), default, the ASCII string escaper (ensure_ascii), indent, key
    separator, item separator, sort_keys, skipkeys, allow_nan.
    """
    encode = make_encoder({}, str, encode_basestring_ascii, None, ":", ",", True, False, True)
    return "".join(encode(value, 0))


def json_value(value: Any) -> str:
    """``value`` as `canonical_json` spells it inside a document: the common cheap ones (a
    string, None, an empty dict or list) without building an encoder."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if kind is dict and not value:
        return "{}"
    if kind is list and not value:
        return "[]"
    return canonical_json(value)
