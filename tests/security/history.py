"""Search whole histories as a thief with database access would: JSON, with every payload decoded."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from typing import Any

from temporalio.client import Client


async def history_text(client: Client, workflow_ids: list[str]) -> str:
    """The raw JSON of each history, followed by every base64 field decoded (payload data, metadata).

    The JSON holds payloads as base64, so a plain-text search of it alone would find nothing even
    without encryption; decoding every field is what makes "not found" mean something.
    """
    parts = []
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        raw = history.to_json()
        parts.append(raw)
        parts.extend(_decoded_strings(json.loads(raw)))
    return "\n".join(parts)


def _decoded_strings(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for value in node.values():
            found.extend(_decoded_strings(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_decoded_strings(value))
    elif isinstance(node, str) and len(node) >= 4:
        with contextlib.suppress(binascii.Error, ValueError):
            found.append(base64.b64decode(node, validate=True).decode("utf-8", errors="replace"))
    return found
