"""The text a checkpoint key is hashed from, made without repeating work (see `checkpoint_key`).

Every leaf hashes its call as ``json.dumps(content, sort_keys=True, default=str, separators=(",",
":"))`` spells it; those bytes may not change (a worker upgraded while runs are in flight must find
the results the worker before it stored, see ``tests/stores/test_checkpoint_keys.py``). These
helpers give the same text for less: one encoder for every key, and a call's structures encoded
once per set of structure objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

from durapipe.spec._types import StructureSpec

try:
    from _json import make_encoder
except ImportError:  # pragma: no cover - an interpreter without json's C encoder
    _ENCODE = None
else:
    # What json.dumps(sort_keys=True, default=str, separators=(",", ":")) hands the C encoder, in
    # its order: markers (None: no circular check, see `canonical_json`), default, the ASCII
    # string escaper (ensure_ascii), indent, key separator, item separator, sort_keys, skipkeys,
    # allow_nan. json.dumps makes an encoder object and this C encoder on every call: a third of
    # the time of an llm call's key.
    _ENCODE = make_encoder(None, str, encode_basestring_ascii, None, ":", ",", True, False, True)


def canonical_json(value: Any) -> str:
    """``value`` as ``json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))``
    spells it, with one encoder made once.

    Without the circular-reference check: a value that contains itself recurses until
    RecursionError, and is then handed to json.dumps, which raises what it always did.
    """
    if _ENCODE is None:  # pragma: no cover
        return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    try:
        return "".join(_ENCODE(value, 0))
    except RecursionError:
        return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def structures_text(structures: Mapping[str, StructureSpec]) -> str:
    """The canonical JSON of a call's structures (each one's JSON dump), kept per set of objects.

    A local run passes the same structure objects with every call of a pipe, and their text was
    more than half of a structured call's key (their dump, then their encoding). Entries are found
    by the objects' identity and hold the objects, so an id is not reused while its entry lives;
    structures are frozen, so the same objects give the same text. A worker decodes new objects
    for every activity: its lookups miss, and it encodes them as before.
    """
    ids = tuple((name, id(spec)) for name, spec in structures.items())
    kept = _KEPT.get(ids)
    if kept is not None:
        return kept[1]
    text = canonical_json({name: spec.model_dump(mode="json") for name, spec in structures.items()})
    if len(_KEPT) >= STRUCTURES_KEPT:
        _KEPT.clear()
    _KEPT[ids] = (tuple(structures.values()), text)
    return text


# Sets of structures whose text is kept (a few hundred bytes each); past it the cache starts over.
STRUCTURES_KEPT = 256
_KEPT: dict[tuple[tuple[str, int], ...], tuple[tuple[StructureSpec, ...], str]] = {}
