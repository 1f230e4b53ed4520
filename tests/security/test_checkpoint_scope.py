"""Issue 15, item 6: a new run that reuses a run id does not get the earlier run's answers."""

from __future__ import annotations

import uuid
from pathlib import Path

import durapipe as dp
from durapipe.runtime import LlmCall
from durapipe.stores._checkpoints import checkpoint_key
from durapipe.testing import FakeProvider
from tests.chain import expected_output, paid_by_step, write_chain


async def test_a_new_run_with_a_reused_id_calls_the_provider_again(
    temporal_address: str, task_queue: str, tmp_path: Path
) -> None:
    async with FakeProvider() as fake:
        pipeline = dp.load(write_chain(tmp_path / "chain.yaml", fake.base_url, steps=2))
        run_id = f"reused-{uuid.uuid4().hex[:8]}"
        client = await dp.connect(temporal_address, pipeline=pipeline)
        results = []
        async with dp.build_worker(client, task_queue=task_queue):
            for _ in range(2):
                results.append(
                    await dp.run(
                        client,
                        pipeline,
                        "chain",
                        {"topic": "otters"},
                        run_id=run_id,
                        task_queue=task_queue,
                    )
                )
    first, second = results
    assert first.output == second.output == expected_output("otters", steps=2)
    assert paid_by_step(fake.calls) == {"s1": 2, "s2": 2}  # the second run paid its own calls
    assert [s.cache_hit for s in second.steps] == [False, False]
    assert second.usage.input_tokens == first.usage.input_tokens > 0


def test_the_key_depends_on_namespace_and_run_scope() -> None:
    pipe = dp.spec.LlmPipe(model="openai/x", prompt="hi")
    call = LlmCall(run_id="r", scope="a", path="p", pipe_name="p", pipe=pipe)
    keys = {
        checkpoint_key(call, namespace="one"),
        checkpoint_key(call, namespace="two"),
        checkpoint_key(call.model_copy(update={"scope": "b"}), namespace="one"),
    }
    assert len(keys) == 3
    assert checkpoint_key(call, namespace="one") == checkpoint_key(call, namespace="one")
