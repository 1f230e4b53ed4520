"""The workflow makes a pipe's activity options (and an llm pipe's wire form) once and reuses them
for its later calls."""

from __future__ import annotations

import durapipe as dp
from durapipe.adapters import pipe_run
from durapipe.adapters._plan import activity_name, activity_options
from durapipe.runtime._interpret import Interpreter
from durapipe.spec._messages import pipe_on_the_wire
from durapipe.workflows._workflow import _ActivityOptions


def test_reused_options_equal_fresh_ones_with_each_calls_own_id_and_summary() -> None:
    ask = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}", timeout=30)
    batch = dp.batch(
        "many", inputs={"questions": list[str]}, over="questions", item="question", pipe=ask
    )
    run = pipe_run(dp.pipeline(batch), "many", {"questions": ["a", "b"]})
    interpreter = Interpreter(run, runtime=None)  # type: ignore[arg-type]  # only builds calls
    calls = [interpreter._call(f"many[{i}]", "ask", {"question": q}) for i, q in enumerate("ab")]
    options = _ActivityOptions()
    made = [options.of(call) for call in calls]
    assert made == [
        (activity_name(call), activity_options(call), pipe_on_the_wire(call.pipe))  # type: ignore[arg-type]
        for call in calls
    ]
    assert [kwargs["activity_id"] for _, kwargs, _ in made] == ["many[0]", "many[1]"]


def test_a_pipe_replaced_under_the_same_name_gets_its_own_options_and_wire_form() -> None:
    # The kept options belong to one pipe object: a run whose spec changed the pipe (a test, a
    # continue-as-new with another spec) must not send the old pipe's timeout or wire form.
    fast = dp.llm("ask", inputs={"question": str}, prompt="{{ question }}", timeout=30)
    slow = dp.llm("ask", inputs={"question": str}, prompt="Q: {{ question }}", timeout=90)
    options = _ActivityOptions()
    made = []
    for pipe in (fast, slow):
        run = pipe_run(dp.pipeline(pipe), "ask", {"question": "q"})
        call = Interpreter(run, runtime=None)._call("ask", "ask", {"question": "q"})  # type: ignore[arg-type]
        made.append((options.of(call), call))
    for (name, kwargs, wire), call in made:
        assert (name, kwargs, wire) == (
            activity_name(call),
            activity_options(call),
            pipe_on_the_wire(call.pipe),  # type: ignore[arg-type]
        )
    assert made[1][0][2] == {
        "timeout": 90.0,
        "model": made[1][1].pipe.model,
        "prompt": "Q: {{ question }}",
    }  # type: ignore[attr-defined]
