"""The text a checkpoint key is hashed from, made without repeating work (see `checkpoint_key`).

Every leaf hashes its call as ``json.dumps(content, sort_keys=True, default=str, separators=(",",
":"))`` spells it; those bytes may not change (a worker upgraded while runs are in flight must find
the results the worker before it stored, see ``tests/stores/test_checkpoint_keys.py``).
`canonical_json` gives the same text for less, and `llm_document` an llm call's (most leaves')
spliced together from its values' JSON in sorted order.
"""

from __future__ import annotations

from _json import make_encoder  # CPython's, which temporalio's wheels need anyway
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durapipe.runtime._calls import LlmCall


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


def llm_document(
    call: LlmCall,
    messages: list[dict[str, str]] | None,
    namespace: str,
    memo_scope: str | None,
    version: int,
) -> str:
    """The text `checkpoint_key` hashes for an llm call, spliced from its values' JSON in its
    sorted order instead of a dict encoded whole with its keys sorted: the same bytes in half the
    time (``tests/stores/test_checkpoint_keys.py`` checks it against the dict's encoding).

    Args:
        call: the llm call.
        messages: the rendered messages it sends.
        namespace: the namespace it runs in.
        memo_scope: the scope of a memoised pipe (its path then hashes as null), else None.
        version: the key's version.
    """
    pipe = call.pipe
    structures = call.structures
    # The fields their models type as `str` (validated when the call was decoded) go straight to
    # json's string encoder; the others through `json_value`.
    quote = encode_basestring_ascii
    return "".join(
        (
            '{"kind":',
            quote(pipe.kind),
            ',"messages":',
            json_value(messages),
            ',"model":',
            json_value(pipe.model),
            ',"namespace":',
            quote(namespace),
            ',"output":',
            quote(pipe.output),
            ',"path":',
            "null" if memo_scope is not None else quote(call.path),
            ',"scope":',
            quote(memo_scope)
            if memo_scope is not None
            else f"[{quote(call.run_id)},{quote(call.scope)}]",
            ',"settings":',
            json_value(pipe.settings),
            ',"structures":',
            json_value({n: s.model_dump(mode="json") for n, s in structures.items()})
            if structures
            else "{}",
            ',"v":',
            str(version),
            "}",
        )
    )
