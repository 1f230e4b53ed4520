"""The interpreter's count of finished steps stays exact: nothing changes a status or a record
around it.

`Interpreter.finished` is kept as records are kept and statuses set (`keep`, `set_status`,
`plan`, `_merge`), so the workflow's current details need not scan every record twice per step.
`tests/conftest.py` checks the count against a scan at every current-details line of the tests'
workflows; this module checks the code that could change records at all.
"""

from __future__ import annotations

import ast

from durapipe.runtime import StepRecord
from durapipe.runtime._interpret import Interpreter
from tests.conftest import ROOT

# Where step records of a run are made and changed: the runtime, the workflow, the local runner.
SOURCES = [
    *sorted((ROOT / "durapipe" / "runtime").glob("*.py")),
    *sorted((ROOT / "durapipe" / "workflows").glob("*.py")),
    ROOT / "durapipe" / "local.py",
]
# The only functions that may assign a status or change a run's records (class.function).
ALLOWED = {
    "Interpreter.__init__",
    "Interpreter.keep",
    "Interpreter.set_status",
    "Interpreter._merge",
}
# Calls that change an attribute or an item by name, whatever spells the object.
_SETTERS = {"setattr", "__setattr__", "__setitem__", "__delitem__"}


def changes(tree: ast.AST) -> list[tuple[str, int]]:
    """(class.function, line) of every status assignment and every change of a ``records``
    mapping: assignments, deletions, mutating calls, ``setattr``/``__setattr__``/``__setitem__``
    naming ``status`` or ``records``, and ``__dict__`` items of those names."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, function: str, owner: str) -> None:
        for child in ast.iter_child_nodes(node):
            inside, within = function, owner
            if isinstance(child, ast.ClassDef):
                within = child.name
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                inside = f"{owner}.{child.name}" if owner else child.name
            targets: list[ast.expr] = []
            if isinstance(child, ast.Assign):
                targets = list(child.targets)
            elif isinstance(child, ast.AugAssign | ast.AnnAssign):
                targets = [child.target]
            elif isinstance(child, ast.Delete):
                targets = list(child.targets)
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and part.attr in ("status", "records"):
                        found.append((inside, child.lineno))
                    if isinstance(part, ast.Subscript) and (
                        _records(part.value) or _dict_item(part)
                    ):
                        found.append((inside, child.lineno))
            if isinstance(child, ast.Call) and _changes(child):
                found.append((inside, child.lineno))
            visit(child, inside, within)

    visit(tree, "<module>", "")
    return sorted(set(found), key=lambda change: change[1])


def _changes(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if (
        name in ("update", "pop", "popitem", "setdefault", "clear", *_SETTERS)
        and isinstance(func, ast.Attribute)
        and _records(func.value)
    ):
        return True
    if (
        name in _SETTERS
    ):  # setattr(record, "status", ...), object.__setattr__(record, "status", ...)
        return any(
            isinstance(a, ast.Constant) and a.value in ("status", "records") for a in call.args
        )
    return False


def _dict_item(node: ast.Subscript) -> bool:
    """``x.__dict__["status"]`` (or ``"records"``)."""
    return (
        isinstance(node.value, ast.Attribute)
        and node.value.attr == "__dict__"
        and isinstance(node.slice, ast.Constant)
        and node.slice.value in ("status", "records")
    )


def _records(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "records") or (
        isinstance(node, ast.Name) and node.id == "records"
    )


def test_only_the_interpreters_own_methods_change_a_status_or_the_records() -> None:
    outside = [
        f"{path.relative_to(ROOT)}:{line} ({function})"
        for path in SOURCES
        for function, line in changes(ast.parse(path.read_text()))
        if function not in ALLOWED
    ]
    assert outside == []


def test_the_check_sees_each_kind_of_change() -> None:
    code = (
        "def f(interp, record, records):\n"
        "    record.status = 'skipped'\n"
        "    record.status, record.error = 'failed', 'x'\n"
        "    interp.records['a'] = record\n"
        "    interp.records.update({})\n"
        "    records.pop('a')\n"
        "    del interp.records['a']\n"
        "    interp.records = {}\n"
        "    setattr(record, 'status', 'failed')\n"
        "    object.__setattr__(record, 'status', 'failed')\n"
        "    record.__dict__['status'] = 'failed'\n"
        "    interp.records.__setitem__('a', record)\n"
        "class Interpreter:\n"
        "    def keep(self, record):\n"
        "        self.records[record.path] = record\n"
        "class Other:\n"
        "    def __init__(self, interp, records):\n"
        "        interp.records.update(records)\n"
    )
    found = changes(ast.parse(code))
    assert [line for _, line in found] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15, 18]
    # By class and function: another class's __init__ is not the interpreter's.
    assert [f for f, _ in found if f not in ALLOWED] == ["f"] * 11 + ["Other.__init__"]


def test_keeping_and_setting_statuses_count_finished_records() -> None:
    interp = Interpreter.__new__(Interpreter)  # only its records and count are used
    interp.records, interp.finished = {}, 0
    a, b = StepRecord(path="a", pipe="p", kind="llm"), StepRecord(path="b", pipe="p", kind="llm")
    loose = StepRecord(path="c", pipe="p", kind="llm")  # a batch item's record, not kept
    interp.keep(a)
    interp.keep(b)
    interp.set_status(a, "running")
    interp.set_status(a, "succeeded")
    interp.set_status(b, "skipped")
    interp.set_status(loose, "failed")
    assert (interp.finished, a.status, loose.status) == (2, "succeeded", "failed")
    interp.set_status(a, "failed")  # finished to finished
    interp.keep(StepRecord(path="b", pipe="p", kind="llm"))  # replaces the skipped one
    assert interp.finished == 1
    interp.keep(StepRecord(path="d", pipe="p", kind="llm", status="succeeded"))
    assert (
        interp.finished
        == sum(r.status in ("succeeded", "failed", "skipped") for r in interp.records.values())
        == 2
    )


def test_a_step_s_figures_are_set_as_pydantic_would_set_them() -> None:
    # `_assign` writes a record's fields in one go; it is what `setattr` does only while step
    # records validate no assignment and are not frozen.
    from durapipe.runtime._interpret import _assign

    assert not StepRecord.model_config.get("validate_assignment")
    assert not StepRecord.model_config.get("frozen")
    figures = {"attempts": 2, "model": "m", "input_tokens": 3, "cost_usd": 0.5, "cache_hit": True}
    by_setattr = StepRecord(path="s", pipe="p", kind="llm")
    for name, value in figures.items():
        setattr(by_setattr, name, value)
    assigned = StepRecord(path="s", pipe="p", kind="llm")
    _assign(assigned, **figures)
    assert assigned == by_setattr
    assert assigned.model_dump(exclude_unset=True) == by_setattr.model_dump(exclude_unset=True)


def test_a_status_is_set_as_pydantic_would_set_it() -> None:
    # `set_status` writes the field as `_assign` does (same condition: no validated assignment).
    interp = Interpreter.__new__(Interpreter)
    interp.records, interp.finished = {}, 0
    by_setattr = StepRecord(path="s", pipe="p", kind="llm")
    by_setattr.status = "running"
    by_status = StepRecord(path="s", pipe="p", kind="llm")
    interp.set_status(by_status, "running")
    assert by_status == by_setattr
    assert by_status.model_dump(exclude_unset=True) == by_setattr.model_dump(exclude_unset=True)
