"""The workflow makes a pipe's activity options once and reuses them for its later calls."""

from __future__ import annotations

import durapipe as dp
from durapipe.adapters import pipe_run
from durapipe.adapters._plan import activity_name, activity_options
from durapipe.runtime._interpret import Interpreter
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
    assert made == [(activity_name(call), activity_options(call)) for call in calls]
    assert [kwargs["activity_id"] for _, kwargs in made] == ["many[0]", "many[1]"]
