"""The agent loop: model requests and tool calls, each one a step the runtime runs as an activity.

The loop lives in the interpreter's world (no I/O, no Temporal import), so the same code runs in the
workflow and in-process with ``--local``. On Temporal, when the history grows long, the loop stops
after a whole turn and raises `ContinueAsNew` with its state; the workflow starts a fresh run that
picks up from that state.
"""

from __future__ import annotations

import asyncio
from typing import Any

from durapipe._errors import ErrorType, StepFailed
from durapipe.runtime._agent_messages import (
    TOOL_ERROR,
    AgentReply,
    AgentState,
    ToolRequest,
    tool_arguments,
    tool_result,
    tool_schema,
)
from durapipe.runtime._calls import AgentTurnCall, StepRecord, ToolCall
from durapipe.runtime._host import Host
from durapipe.runtime._memory import join_path
from durapipe.runtime._steps import AGENT_STEPS_PATCH
from durapipe.spec import AgentPipe, TemplateError, ToolPipe, limits_for, render


class ContinueAsNew(Exception):
    """The loop's history is long: go on in a fresh run of the same pipe from ``resume``."""

    def __init__(self, resume: dict[str, Any]) -> None:
        super().__init__("continue as new")
        self.resume = resume


class AgentLoop:
    """Runs one agent pipe over an interpreter: its runtime, step records and usage."""

    def __init__(self, interpreter: Host, pipe: AgentPipe) -> None:
        self.interp = interpreter
        self.pipe = pipe
        self.name = interpreter.run.pipe
        self.path = interpreter.run.path or self.name
        spec = interpreter.run.spec
        self.tools: dict[str, ToolPipe] = {
            n: p for n in pipe.tools if isinstance(p := spec.pipes[n], ToolPipe)
        }
        types = [pipe.output] + [t for tool in self.tools.values() for t in tool.inputs.values()]
        self.structures = interpreter.structures_for(types)
        self.schemas = [tool_schema(n, t, self.structures) for n, t in self.tools.items()]
        # What every turn's and tool call's message carries beside its own values: a pure
        # function of the run's spec, made once instead of per call.
        self.limits = limits_for(pipe, spec.limits)
        self.tool_parts = {
            n: (
                interpreter.structures_for([*t.inputs.values(), t.output]),
                limits_for(t, spec.limits),
            )
            for n, t in self.tools.items()
        }
        resume = interpreter.run.resume
        self.state = AgentState.model_validate(resume) if resume else self._start()
        self.counts = False  # whether its turns count against the run's steps (see `run`)
        for record in self.state.steps:
            interpreter.keep(record)
        interpreter.usage = self.state.usage

    def _start(self) -> AgentState:
        inputs = self.interp.run.inputs
        try:
            messages = (
                [{"role": "system", "content": render(self.pipe.instructions, inputs)}]
                if self.pipe.instructions
                else []
            )
            messages.append({"role": "user", "content": render(self.pipe.prompt, inputs)})
        except TemplateError as err:
            raise self._failure(ErrorType.TEMPLATE_ERROR, f"pipe '{self.name}': {err}") from None
        return AgentState(messages=messages)

    async def run(self) -> Any:
        """Ask and call tools until a final answer; return it.

        Raises:
            StepFailed: a model request or tool call failed after its retries, or the agent ran
                out of turns, bad tool calls or re-asks.
            ContinueAsNew: the history is long; the workflow goes on in a fresh run.
        """
        state = self.state
        turns_this_run = 0
        # Its turns and tool calls count against the run's steps (see `durapipe.runtime.Steps`)
        # when the run has a cap, since the patch: runs recorded before counted none.
        steps = self.interp.steps
        self.counts = steps.limit is not None and self.interp.runtime.patched(AGENT_STEPS_PATCH)
        if state.steps:  # a fresh run of a long agent: the steps its earlier runs started
            await self._count(len(state.steps), f"agent '{self.name}' has started")
        while True:
            if state.turn >= self.pipe.max_turns:
                raise self._failure(
                    ErrorType.MAX_TURNS_EXCEEDED,
                    f"agent '{self.name}' reached max_turns={self.pipe.max_turns} "
                    "without a final answer",
                )
            await self._count(1, f"agent '{self.name}', turn {state.turn + 1}, would start")
            state.turn += 1
            turns_this_run += 1
            reply = await self._ask(state.turn)
            state.messages.append(reply.message())
            if reply.tool_calls:
                await self._call_tools(state.turn, reply.tool_calls)
            elif reply.problem is None:
                return reply.output
            else:
                self._reask(reply.problem)
            if self.interp.runtime.continue_as_new_suggested(turns_this_run):
                state.steps, state.usage = self.interp.snapshot(), self.interp.usage
                state.runs += 1
                raise ContinueAsNew(state.model_dump(mode="json"))

    async def _ask(self, turn: int) -> AgentReply:
        path = join_path(self.interp.run.path, f"turn-{turn}")
        record = self._record(path, self.name, "llm")
        call = AgentTurnCall(
            run_id=self.interp.run.run_id,
            scope=self.interp.run.scope,
            path=path,
            pipe_name=self.name,
            pipe=self.pipe,
            structures=self.structures,
            turn=turn,
            messages=list(self.state.messages),
            tools=self.schemas,
            limits=self.limits,
        )
        output = await self.interp.track(record, self.interp.leaf(call, record))
        return AgentReply.model_validate(output)

    async def _call_tools(self, turn: int, requests: list[ToolRequest]) -> None:
        """Run the valid calls concurrently; answer every call, in the model's order."""
        bad: str | None = None
        answers: list[str | None] = []
        valid: list[tuple[int, ToolCall]] = []
        used: dict[str, int] = {}
        for index, request in enumerate(requests):
            try:
                valid.append((index, self._tool_call(turn, request, used)))
            except ValueError as err:
                bad = bad or str(err)
                answers.append(tool_result({"error": str(err)}))
                continue
            answers.append(None)
        if valid:  # counted before any has a record: none of them starts if they do not fit
            what = f"agent '{self.name}', turn {turn}, asks for tool calls that would start"
            await self._count(len(valid), what)
        calls: list[tuple[int, ToolCall, StepRecord]] = [
            (index, call, self._record(call.path, call.pipe_name, "tool")) for index, call in valid
        ]
        results = await asyncio.gather(
            *(self.interp.track(r, self.interp.leaf(c, r)) for _, c, r in calls),
            return_exceptions=True,
        )
        for (index, _, _), result in zip(calls, results, strict=True):
            if isinstance(result, StepFailed) and result.cause_type == TOOL_ERROR:
                answers[index] = tool_result({"error": result.cause})
            elif isinstance(result, BaseException):
                raise result
            else:
                answers[index] = tool_result(result)
        self.state.messages.extend(
            {"role": "tool", "tool_call_id": request.id, "content": answer}
            for request, answer in zip(requests, answers, strict=True)
        )
        self._count_bad_turn(bad)

    def _tool_call(self, turn: int, request: ToolRequest, used: dict[str, int]) -> ToolCall:
        tool = self.tools.get(request.name)
        if tool is None:
            raise ValueError(
                f"unknown tool '{request.name}' (tools: {', '.join(self.tools) or 'none'})"
            )
        arguments = tool_arguments(tool, self.structures, request.arguments)
        used[request.name] = used.get(request.name, 0) + 1
        suffix = f"-{used[request.name]}" if used[request.name] > 1 else ""
        structures, limits = self.tool_parts[request.name]
        return ToolCall(
            run_id=self.interp.run.run_id,
            scope=self.interp.run.scope,
            path=join_path(self.interp.run.path, f"turn-{turn}/{request.name}{suffix}"),
            pipe_name=request.name,
            pipe=tool,
            structures=structures,
            inputs=arguments,
            summary=f"tool {request.name}",
            limits=limits,
        )

    async def _count(self, steps: int, what: str) -> None:
        """Count ``steps`` more of the run's steps, or refuse them before they start.

        Raises:
            StepFailed: ``durapipe.RunTooLarge``: the run's allowance has no room for them.
        """
        if not self.counts:
            return
        try:
            await self.interp.steps.count(steps, self.path, "agent", what)
        except StepFailed as err:
            err.model, err.steps = self.pipe.model, self.interp.snapshot()
            raise

    def _count_bad_turn(self, bad: str | None) -> None:
        self.state.bad_turns = self.state.bad_turns + 1 if bad else 0
        if self.state.bad_turns > self.pipe.max_bad_turns:
            raise self._failure(
                ErrorType.INVALID_TOOL_CALLS,
                f"agent '{self.name}' asked for unknown tools or gave invalid arguments "
                f"{self.state.bad_turns} turns in a row (max_bad_turns={self.pipe.max_bad_turns}); "
                f"last: {bad}",
            )

    def _reask(self, problem: str) -> None:
        if self.state.reasks >= self.pipe.reask:
            raise self._failure(
                ErrorType.INVALID_OUTPUT,
                f"{self.pipe.model}: the final answer did not fit the output type "
                f"{self.pipe.output} after {self.pipe.reask + 1} answers: {problem}",
            )
        self.state.reasks += 1
        self.state.messages.append(
            {
                "role": "user",
                "content": f"That answer was rejected: {problem}. "
                "Answer again with only JSON that matches the schema.",
            }
        )

    def _record(self, path: str, pipe: str, kind: str) -> StepRecord:
        record = StepRecord(path=path, pipe=pipe, kind=kind)
        self.interp.keep(record)
        return record

    def _failure(self, cause_type: str, cause: str) -> StepFailed:
        return StepFailed(
            path=self.path,
            kind="agent",
            model=self.pipe.model,
            cause_type=cause_type,
            cause=cause,
            steps=self.interp.snapshot(),
        )
