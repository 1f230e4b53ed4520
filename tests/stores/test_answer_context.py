"""`keeping_answers`: the store a step keeps provider answers in is set for the step and no longer."""

from __future__ import annotations

from pathlib import Path

from durapipe.stores import SqliteCheckpoints
from durapipe.stores._answers import answer_store, keeping_answers


def test_the_store_is_set_within_the_block_and_what_was_there_comes_back(tmp_path: Path) -> None:
    outer = SqliteCheckpoints(tmp_path / "outer.sqlite")
    inner = SqliteCheckpoints(tmp_path / "inner.sqlite")
    assert answer_store() is None
    with keeping_answers(outer):
        assert answer_store() is outer
        with keeping_answers(inner):
            assert answer_store() is inner
        assert answer_store() is outer
        with keeping_answers(object()):  # keeps no answers: what was there stays
            assert answer_store() is outer
    assert answer_store() is None


def test_a_failing_step_does_not_leave_its_store_behind(tmp_path: Path) -> None:
    store = SqliteCheckpoints(tmp_path / "c.sqlite")
    try:
        with keeping_answers(store):
            raise RuntimeError("the provider failed")
    except RuntimeError:
        pass
    assert answer_store() is None
