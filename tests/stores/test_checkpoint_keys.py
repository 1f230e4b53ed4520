"""Checkpoint keys are the same bytes from one durapipe to the next.

A worker upgraded while runs are in flight must find the results the worker before it stored, and
a local run shares memoised answers with the workers of its namespace: the key of a call may not
change unless `KEY_VERSION` does. The digests below were computed by the key function as it was
before its encoding was made cheaper (``json.dumps(content, sort_keys=True, default=str,
separators=(",", ":"))`` of one dict); one call of each kind, with the parts that travel through
each branch (structures, settings, memoisation, non-ASCII text, values JSON cannot spell).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import pydantic_core
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter

from durapipe.runtime import (
    AgentTurnCall,
    CallBase,
    ExtractCall,
    ImageCall,
    LeafCall,
    LlmCall,
    ToolCall,
)
from durapipe.spec import AgentPipe, ExtractPipe, ImagePipe, LlmPipe, PipeBase, ToolPipe
from durapipe.spec._base import RetrySpec
from durapipe.spec._types import Blob, StructureSpec
from durapipe.stores._checkpoints import checkpoint_key

CLAIM = StructureSpec.model_validate(
    {
        "description": "A claim and how sure we are — «vérifié»",
        "fields": {"text": "text", "score": {"type": "number", "description": "0..1"}},
    }
)
SOURCE = StructureSpec.model_validate({"fields": {"url": "text", "claims": "list[Claim]"}})
STRUCTURES = {"Source": SOURCE, "Claim": CLAIM}
SETTINGS = {"temperature": 0.25, "max_tokens": 300, "metadata": {"b": [1, 2.5], "a": None}}
SCAN = Blob(blob="sha256:" + "ab" * 32, media_type="image/png", size=12, name="scan.png")


class MutePipe(PipeBase):
    """A registered kind's pipe with no ``output`` field (the key then hashes ``null``)."""

    kind: Literal["mute"] = "mute"
    volume: int = 0


class MuteCall(CallBase):
    """A registered kind's call: the key hashes its whole pipe and its inputs."""

    pipe: MutePipe


def calls() -> dict[str, tuple[LeafCall, list[dict[str, str]] | None]]:
    """One call of each kind (and each branch of the key), with the messages an llm call sends."""
    llm = LlmPipe(
        model="openai/gpt-x",
        system="Be brief.",
        prompt="{{ q }}",
        output="list[Claim]",
        settings=SETTINGS,
        inputs={"q": "text"},
    )
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": 'Où est la gare ? 駅 \u2028 "quoted" \\ tab\t'},
    ]
    tool = ToolPipe(function="tools:score", output="Claim", inputs={"claim": "Claim"})
    tool_inputs = {
        "claim": {"text": "ünïcode", "score": 0.1 + 0.2},
        "when": datetime(2026, 11, 27, 12, 30, tzinfo=UTC),  # a local run may pass one
        "n": 10**20,
        "flags": [True, False, None],
    }
    agent = AgentPipe(
        model="openai/gpt-agent", prompt="plan", tools=["score"], output="Claim", settings=SETTINGS
    )
    agent_messages = [
        {"role": "user", "content": "Plan the trip to Zürich."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "function": {"name": "score", "arguments": '{"x":1}'}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "0.5"},
    ]
    offered = [
        {"type": "function", "function": {"name": "score", "parameters": {"type": "object"}}}
    ]
    return {
        "llm": (
            LlmCall(
                run_id="run-1", scope="s1", path="ask[3]", pipe_name="ask", pipe=llm,
                inputs={"q": "x"}, structures=STRUCTURES,
            ),
            messages,
        ),
        "llm memoised": (
            LlmCall(
                run_id="run-1", scope="s1", path="ask", pipe_name="ask",
                pipe=llm.model_copy(update={"memoize": True}), structures=STRUCTURES,
            ),
            messages,
        ),
        "llm plain": (
            LlmCall(
                run_id="run-2", path="a", pipe_name="a", pipe=LlmPipe(prompt="hi"),
            ),
            [{"role": "user", "content": "hi"}],
        ),
        "llm no messages": (
            LlmCall(run_id="run-2", path="a", pipe_name="a", pipe=LlmPipe(prompt="hi")),
            None,
        ),
        "tool": (
            ToolCall(
                run_id="run-1", scope="s1", path="t", pipe_name="score", pipe=tool,
                inputs=tool_inputs, structures={"Claim": CLAIM},
            ),
            None,
        ),
        "tool memoised": (
            ToolCall(
                run_id="run-1", scope="s1", path="t", pipe_name="score",
                pipe=tool.model_copy(update={"memoize": True}), inputs=tool_inputs,
            ),
            None,
        ),
        "agent turn": (
            AgentTurnCall(
                run_id="run-1", scope="s1", path="agent", pipe_name="agent", pipe=agent,
                structures={"Claim": CLAIM}, turn=2, messages=agent_messages, tools=offered,
            ),
            None,
        ),
        "extract": (
            ExtractCall(
                run_id="run-1", scope="s1", path="read", pipe_name="read",
                pipe=ExtractPipe(language="eng+deu", settings={"pages": [1, 2]}),
                inputs={"scan": SCAN.model_dump(mode="json")},
            ),
            None,
        ),
        "extract, a blob object": (
            ExtractCall(
                run_id="run-1", scope="s1", path="read", pipe_name="read", pipe=ExtractPipe(),
                inputs={"scan": SCAN},
            ),
            None,
        ),
        "image": (
            ImageCall(
                run_id="run-1", scope="s1", path="cover", pipe_name="cover",
                pipe=ImagePipe(prompt="a lighthouse", size="64x64", output="list[image, 2]"),
                inputs={"subject": "lighthouse"},
            ),
            None,
        ),
        "registered kind": (
            MuteCall(
                run_id="run-1", scope="s1", path="m", pipe_name="m", pipe=MutePipe(volume=3),
                inputs={"text": "hush"},
            ),
            None,
        ),
    }  # fmt: skip


# sha256 digests from the key function before this change (namespace "ns" unless said).
PINNED = {
    "llm": "81fd30c6bc09a614c8697d86c9661fbae70afbff9c129cf5c190ec5ab3b250e8",
    "llm memoised": "875214e347d9738d9dc071e456978a5043d1256cdf1e47d409b3c8a342b5f3f1",
    "llm plain": "c4d518d897e557b1a6a0864339b8584d0005a35da9c6fbb74721af2509994293",
    "llm no messages": "7a5b9cf13f63252ba5c0b2555e21fe416f2f84ce21bc2d3c5d1b5505bb3bb8ed",
    "tool": "5acc1363a23c3c1455fd0a6108710a9c8a9a6f457fd794ddf17d0bfe580f105b",
    "tool memoised": "6292022944169bd34e509729433ed3f06baa63034199798e538cf9787eeb003e",
    "agent turn": "77925aa311786408df9c69613b21c055d26cc034e23ebf6e23b026b6895d7ab4",
    "extract": "6f83aacd70c0afb55cfd140be264ca3a2f23761d7d74b733d2dd4920ab1fe4d5",
    "extract, a blob object": "2442c289c99aa48db4f7c1d3e002eb6468df95570904ae22f3278d64f1b3974c",
    "image": "34b5e4ab3c19bb4f9c8d762acecc3b7eba8ba80d70e4d450f59ca3b8b0033012",
    "registered kind": "91fcb2b617c2e862be7905364975b58f5d58c1da694b02eb6e4f9c526153fbfe",
}


@pytest.mark.parametrize("name", list(PINNED))
def test_a_call_keeps_the_key_it_had(name: str) -> None:
    call, messages = calls()[name]
    assert checkpoint_key(call, messages, namespace="ns") == PINNED[name]


def test_a_local_run_keys_its_calls_in_the_namespace_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    call, messages = calls()["llm memoised"]
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "ns")
    assert checkpoint_key(call, messages) == PINNED["llm memoised"]
    monkeypatch.delenv("TEMPORAL_NAMESPACE")
    assert checkpoint_key(call, messages) == checkpoint_key(call, messages, namespace="default")


def reference_key(call: LeafCall, messages: list[dict[str, str]] | None, namespace: str) -> str:
    """The key as durapipe computed it before its encoding was made cheaper: one dict, dumped by
    json.dumps with sorted keys (the oracle the kept and spliced text is checked against)."""
    pipe = call.pipe
    memoize = isinstance(call, LlmCall | ToolCall) and call.pipe.memoize
    content: dict[str, Any] = {
        "v": 2,
        "namespace": namespace,
        "scope": "memo" if memoize else [call.run_id, call.scope],
        "path": None if memoize else call.path,
        "kind": pipe.kind,
        "output": getattr(pipe, "output", None),
    }
    if isinstance(call, LlmCall | ToolCall | AgentTurnCall):
        content["structures"] = {n: s.model_dump(mode="json") for n, s in call.structures.items()}
    if isinstance(call, LlmCall):
        content |= {"model": call.pipe.model, "messages": messages, "settings": call.pipe.settings}
    elif isinstance(call, ToolCall):
        content |= {"function": call.pipe.function, "args": call.inputs}
    elif isinstance(call, AgentTurnCall):
        content |= {
            "model": call.pipe.model,
            "settings": call.pipe.settings,
            "turn": call.turn,
            "messages": call.messages,
            "tools": call.tools,
        }
    else:
        content |= {"pipe": pipe.model_dump(mode="json"), "inputs": call.inputs}
    text = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def test_the_reference_is_the_code_the_digests_were_pinned_with() -> None:
    assert {
        name: reference_key(call, messages, "ns") for name, (call, messages) in calls().items()
    } == PINNED


def test_a_structure_changed_in_place_changes_the_key() -> None:
    # A local run passes the same structure objects with every call, and a structure's fields are
    # a plain dict: a key must hash what the structures say now, not what they said last time.
    call, messages = calls()["llm"]
    spec = StructureSpec.model_validate({"fields": {"text": "text"}})
    again = call.model_copy(update={"structures": {"Claim": spec}})
    before = checkpoint_key(again, messages, namespace="ns")
    spec.fields["score"] = StructureSpec.model_validate({"fields": {"score": "integer"}}).fields[
        "score"
    ]
    after = checkpoint_key(again, messages, namespace="ns")
    assert after != before
    assert after == reference_key(again, messages, "ns")


def test_a_value_json_cannot_spell_or_that_contains_itself_fails_as_it_did() -> None:
    call, _ = calls()["tool"]
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        checkpoint_key(call.model_copy(update={"inputs": {"x": looped}}), namespace="ns")
    odd = call.model_copy(update={"inputs": {"x": {1, 2}, "y": float("nan")}})
    assert checkpoint_key(odd, namespace="ns") == reference_key(odd, None, "ns")


def test_a_value_that_contains_itself_fails_whatever_the_recursion_limit() -> None:
    # json's circular check, not the recursion limit, must stop it: with a raised limit the C
    # encoder would recurse until the C stack overflows (a crash, not an error).
    script = (
        "import sys; sys.setrecursionlimit(200_000)\n"
        "from durapipe.stores._keys import canonical_json\n"
        "looped = []; looped.append(looped)\n"
        "try:\n    canonical_json({'x': looped})\n"
        "except ValueError as error:\n    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Circular reference" in done.stdout


def test_an_llm_calls_spliced_key_is_the_dicts_encoding_whatever_its_values() -> None:
    # An llm call's key is spliced from its values' JSON (the common leaf, at half the cost):
    # every value each part can hold must give the text the whole dict gave.
    call, messages = calls()["llm"]
    odd = {"when": datetime(2026, 11, 27, tzinfo=UTC), "nan": float("nan"), "set": {1}}
    variants: list[tuple[LeafCall, list[dict[str, str]] | None]] = [
        (call, messages),
        (call, []),
        (call, None),
        (call.model_copy(update={"scope": "", "path": "é[0]/\u2028"}), messages),
        (call.model_copy(update={"structures": {}}), messages),
        (call.model_copy(update={"pipe": call.pipe.model_copy(update={"model": None})}), None),
        (call.model_copy(update={"pipe": call.pipe.model_copy(update={"settings": odd})}), None),
        (call.model_copy(update={"pipe": call.pipe.model_copy(update={"settings": {}})}), None),
        (call.model_copy(update={"pipe": call.pipe.model_copy(update={"memoize": True})}), None),
    ]
    for variant, sent in variants:
        for namespace in ("ns", "prod «α»"):
            key = checkpoint_key(variant, sent, namespace=namespace)
            assert key == reference_key(variant, sent, namespace)


def decoded(call: LeafCall, data: bytes) -> LeafCall:
    """``data``, a JSON call, as the activity of ``call``'s kind reads it."""
    converter = pydantic_data_converter.payload_converter
    [payload] = converter.to_payloads([call])
    payload.data = data
    [back] = converter.from_payloads([payload], [type(call)])
    return back  # type: ignore[no-any-return]


def on_the_wire(call: LeafCall) -> bytes:
    """``call``'s JSON as a workflow worker of this release sends it."""
    [payload] = pydantic_data_converter.payload_converter.to_payloads([call])
    return payload.data


def written_whole(call: LeafCall) -> bytes:
    """``call``'s JSON as releases before its pipe left out defaults wrote it: every field, the
    pipe's too (what a rolling upgrade may hand an activity worker from an older workflow one)."""
    fields = {name: getattr(call, name) for name in type(call).model_fields}
    return pydantic_core.to_json(fields | {"pipe": call.pipe.model_dump(mode="json")})


@pytest.mark.parametrize("name", list(PINNED))
def test_a_call_keeps_its_key_whichever_release_wrote_its_input(name: str) -> None:
    # An activity input from an older workflow worker (the pipe in full) and one from this
    # release (without defaults, without what the activity does not read) are the same call.
    # The key this release gives the input it sends is the key the release before it gave the
    # input it sent: the pinned one, or where an input value reads back from JSON as another
    # type (a datetime or a blob object, which only a local run passes) the reference code's over
    # what it read back.
    call, messages = calls()[name]
    old, new = decoded(call, written_whole(call)), decoded(call, on_the_wire(call))
    assert len(on_the_wire(call)) < len(written_whole(call))
    assert old.model_copy(update={"inputs": call.inputs}) == call
    before = PINNED[name] if old == call else reference_key(old, messages, "ns")
    assert checkpoint_key(new, messages, namespace="ns") == before
    assert checkpoint_key(old, messages, namespace="ns") == before


def set_everywhere(pipe: PipeBase) -> PipeBase:
    """``pipe`` with every field a workflow (or an agent's loop) reads set off its default."""
    update: dict[str, Any] = {
        "description": "what it does",
        "inputs": {"q": "text"},
        "timeout": 33.0,
        "retry": RetrySpec(max_attempts=4),
        "queue": "own",
        "budget_usd": 2.0,
    }
    if isinstance(pipe, AgentPipe):
        update |= {"instructions": "Be brief.", "max_turns": 4, "max_bad_turns": 2, "reask": 1}
    return pipe.model_copy(update=update)


@pytest.mark.parametrize("name", list(PINNED))
def test_what_a_call_leaves_off_the_wire_is_never_part_of_its_key(name: str) -> None:
    # Extract and image keys hash the whole pipe, so those calls may leave out only defaults.
    call, messages = calls()[name]
    call = call.model_copy(update={"pipe": set_everywhere(call.pipe)})
    old, new = decoded(call, written_whole(call)), decoded(call, on_the_wire(call))
    assert old.pipe == call.pipe
    assert checkpoint_key(new, messages, namespace="ns") == checkpoint_key(
        old, messages, namespace="ns"
    )
    assert new.pipe.timeout == 33.0  # every activity reads its timeout
