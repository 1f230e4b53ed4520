"""The bounded sandbox templates and condition expressions run in.

A template arrives in a spec, and a spec can come from any client of the namespace, so rendering one
must not stall or exhaust a worker. On top of Jinja's immutable sandbox:

- every loop step, call, attribute or item lookup and intercepted operator spends one unit of an
  operation budget (deterministic, so a workflow can use it: condition expressions render there);
- ``range`` holds at most `MAX_RANGE` numbers; ``*``, ``**``, ``%`` and the padding, joining,
  indenting and replacing functions refuse to grow a value by more than `MAX_VALUE` before they
  build it;
- output is produced piece by piece (``generate``) and stops past `MAX_OUTPUT` characters;
- what a render builds is counted too, since bounding each operation's growth does not bound what
  operations make together (``[doc] * 10**5`` holds one document, ``|join`` of it 10**5 of them):
  text written into a macro, a ``call``, ``filter`` or ``set`` block and every value a call,
  filter or operator makes spend from `MAX_BUILT` characters, and the operations that flatten
  their operands into text (``~``, ``+``, ``%``, joining, formatting, string filters) are measured
  before they build (at most `MAX_OUTPUT` characters each); a format width may not come from an
  argument;
- an optional wall-clock budget (activities only: workflows must stay deterministic).

Each refusal is a `TemplateError` with one sentence.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import operator
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import jinja2
import jinja2.lexer
import jinja2.nodes
import jinja2.runtime
import jinja2.sandbox

MAX_RANGE = 10_000  # numbers in one range()
MAX_VALUE = 1_000_000  # characters or items one operation may add to what it was given
MAX_OUTPUT = 32 * 1024 * 1024  # characters one render may produce (prompts may hold documents)
MAX_OPERATIONS = 200_000  # loop steps, calls, lookups and operators per render
MAX_POWER_BITS = 4096  # the largest integer `**` may build
# Tokens (names, operators, values, tags; literal text is one however long) a template or
# expression may hold. Parsing and compiling one cost ~70 us a token, before any render bound
# applies (a condition compiles inside its workflow): a 1.4 MB list literal took 27 s.
MAX_TOKENS = 10_000
# Nodes within each other in a parsed template (a bracket, an operator, a filter, a block): Jinja
# walks its trees recursively, several Python frames a level, so a few hundred levels overflow
# the recursion a workflow thread has. Written templates nest a handful.
MAX_NESTING = 64
MAX_BUILT = 2 * MAX_OUTPUT  # characters (or items) one render's operations and blocks may build
_COUNTED = "durapipe_counted"  # the filter every for-loop's iterable goes through
_WRITTEN = "durapipe_written"  # the filter every piece of written text goes through
_JOINED = "durapipe_joined"  # what `a ~ b` becomes: measured before it joins
# Filters that return their input's items or a number, never text made of them: a container they
# make is counted after (its items), not measured before.
_NOT_FLATTENING = frozenset(
    {
        *("abs", "attr", "batch", "count", "d", "default", "dictsort", "first", "float"),
        *("groupby", "int", "items", "last", "length", "list", "map", "max", "min", "reject"),
        *("rejectattr", "reverse", "round", "select", "selectattr", "slice", "sort", "sum"),
        *("unique", "wordcount", _COUNTED),
    }
)


class TemplateError(ValueError):
    """A template does not parse, uses an undefined name, went past a bound, or tried to escape."""


class _Budget:
    """What one render may still spend."""

    def __init__(self, operations: int, seconds: float | None) -> None:
        self.operations = operations
        self.built = MAX_BUILT
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def spend(self, units: int = 1) -> None:
        self.operations -= units
        if self.operations < 0:
            raise TemplateError(
                f"template went past {MAX_OPERATIONS} operations (loop steps, calls, lookups); "
                "it may not do that much work"
            )
        # Reading the clock every operation would double the cost of a render; every 256 is enough.
        if self.operations % 256 == 0:
            self.in_time()

    def in_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TemplateError("template went past its render time budget")

    def build(self, size: int, what: str) -> None:
        if size > MAX_OUTPUT:
            raise TemplateError(f"{what} would build {size} characters, more than {MAX_OUTPUT}")
        self.built -= size
        if self.built < 0:
            raise TemplateError(
                f"template would build more than {MAX_BUILT} characters in all; "
                "it may not make that much text"
            )


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "durapipe_template_budget", default=None
)


def _spend(units: int = 1) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.spend(units)


def _build(size: int, what: str) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.build(size, what)


def _text_size(values: Iterable[Any]) -> int:
    """At most how many characters the text of ``values`` holds (joined, formatted, as JSON),
    counted until it passes `MAX_OUTPUT`: a list may hold one large value many times over."""
    total = 0
    stack = list(values)
    budget = _budget.get()
    walked = 0
    while stack and total <= MAX_OUTPUT:
        item = stack.pop()
        walked += 1
        if budget is not None and walked % 65536 == 0:
            budget.in_time()  # a list of a million items takes a while
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack += item
        elif isinstance(item, int):
            total += 2 + item.bit_length() // 3
        else:
            total += 24
    return total


def _items(value: Any) -> int:
    """How many items a container made holds (a value returned as it was is not built again)."""
    return len(value) if isinstance(value, list | tuple | dict | set | frozenset) else 0


def _listed(value: Any) -> Any:
    """``value``, an iterator made a list, so that what it holds can be measured."""
    return list(value) if isinstance(value, Iterator) and not isinstance(value, str) else value


def _too_big(size: float, what: str) -> None:
    if size > MAX_VALUE:
        raise TemplateError(f"{what} would add {int(size)} items, more than {MAX_VALUE}")


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise TemplateError(f"range() of {len(numbers)} numbers; a template may use {MAX_RANGE}")
    return numbers


def _counted(values: Iterable[Any]) -> Iterator[Any]:
    for value in values:
        _spend()
        yield value


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple | dict) else 1


def _check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
            _too_big(len(seq) * (max(times, 1) - 1), "'*'")


def _check_power(base: Any, exponent: Any) -> None:
    ints = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0
    if ints and exponent * math.log2(abs(base)) > MAX_POWER_BITS:
        raise TemplateError(f"'**' would build a number of more than {MAX_POWER_BITS} bits")


_WIDTH = re.compile(r"[%:][^%:{}]*?(\d{7,}|\*)")  # a %-format or format-spec width of 7+ digits


_WIDTHS = re.compile(r"[%:][^%:{}]*?(\d+)")  # every number a format's specs hold


def _check_format(spec: Any) -> None:
    if isinstance(spec, str) and _WIDTH.search(spec):
        raise TemplateError(f"a format width larger than {MAX_VALUE} (or '*') is not allowed")


def _check_nested_width(spec: str) -> None:
    """Refuse ``'{:{}}'.format(x, 10**9)``: a width read from an argument is not seen before."""
    try:
        fields = list(string.Formatter().parse(spec))
    except ValueError:
        return  # str.format refuses it itself
    if any(field_spec and "{" in field_spec for _, _, field_spec, _ in fields):
        raise TemplateError("a format width may not come from an argument ('{:{}}')")


def _format_size(spec: str, args: Iterable[Any]) -> int:
    """At most how many characters formatting ``args`` into ``spec`` makes (widths included)."""
    widths = sum(int(width) for width in _WIDTHS.findall(spec))
    return len(spec) + widths + _text_size(args)


def _growth(name: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    """How many characters a known amplifying string function would add to its input (else 0).

    Growth, not size: ``doc|replace('\n', ' ')`` on a long document is fine; ``replace('', long)``
    or ``indent(10**6)`` is not.
    """
    values = [*args, *kwargs.values()]
    text = target if isinstance(target, str) else ""
    width = max([v for v in values if isinstance(v, int)], default=0)
    longest = max([len(v) for v in values if isinstance(v, str)], default=0)
    if name in ("ljust", "rjust", "center", "zfill"):
        return width - len(text)
    if name == "expandtabs":
        return text.count("\t") * width
    if name == "indent":
        return (text.count("\n") + 1) * max(width, longest)
    if name == "wordwrap":
        return (len(text) // max(width, 1) + 1) * longest
    if name == "replace" and len(values) >= 2 and isinstance(values[0], str):
        old, new = values[0], str(values[1])
        hits = len(text) + 1 if not old else text.count(old)
        return hits * (len(new) - len(old))
    if name == "join":
        items = values[0] if isinstance(target, str) and values else target
        separator = target if isinstance(target, str) else (values[0] if values else "")
        return (len(items) if hasattr(items, "__len__") else 0) * len(str(separator))
    return 0


def check_nesting(
    tree: jinja2.nodes.Node, name: str | None = None, filename: str | None = None
) -> None:
    """Refuse a parsed template or expression nested past `MAX_NESTING` (walked without recursion).

    Raises:
        jinja2.TemplateSyntaxError: it nests too deeply.
    """
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise jinja2.TemplateSyntaxError(TOO_DEEP, node.lineno or 1, name, filename)
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())


TOO_DEEP = "it nests too deeply (brackets, operators, filters or blocks within each other)"


@contextlib.contextmanager
def _nested(name: str | None, filename: str | None) -> Iterator[None]:
    """A syntax error for a template nested past what Python reads: a hundred brackets (or a few
    hundred filters or operators) within each other overflow the parser's, the code generator's
    or Python's compiler's recursion, which is no error of the worker's."""
    try:
        yield
    except (RecursionError, SyntaxError):  # SyntaxError: Python's "too many nested parentheses"
        raise jinja2.TemplateSyntaxError(TOO_DEEP, 1, name, filename) from None


class BoundedEnvironment(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with operation, size and output bounds (see the module)."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def _tokenize(
        self, source: str, name: str | None, filename: str | None = None, state: str | None = None
    ) -> jinja2.lexer.TokenStream:
        """``source``'s tokens, refused past `MAX_TOKENS` before any is parsed (every parse of a
        template or an expression starts here)."""
        tokens = self.lexer.tokeniter(source, name, filename, state)
        read = (kind for _, kind, _ in tokens if kind != "whitespace")
        for count, _ in enumerate(read, start=1):
            if count > MAX_TOKENS:
                raise jinja2.TemplateSyntaxError(
                    f"it holds more than {MAX_TOKENS:,} tokens (names, operators, values, tags), "
                    "more than a template or expression is read with",
                    1,
                    name,
                    filename,
                )
        return super()._tokenize(source, name, filename, state)

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        with _nested(name, filename):
            tree = super()._parse(source, name, filename)
        check_nesting(tree, name, filename)
        return tree

    def _compile(self, source: str, filename: str) -> Any:
        with _nested(None, filename):
            return super()._compile(source, filename)

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        """``left op right``, refused when it would build something too large."""
        _spend()
        if op == "*":
            _check_repeat(left, right)
            value = left * right
            _build(_size(value), "'*'")
            return value
        if op == "**":
            _check_power(left, right)
            return left**right
        if op == "%":
            _check_format(left)
            if isinstance(left, str):
                _build(_format_size(left, [right]), "'%'")
            return left % right
        if isinstance(left, str | list | tuple):
            _build(_size(left) + _size(right), "'+'")
        return operator.add(left, right)

    def call(
        __self,
        __context: jinja2.runtime.Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Call ``__obj`` in the sandbox, refusing calls that would build too much."""
        _spend()
        name = getattr(__obj, "__name__", "")
        # Jinja wraps str.format in a function of its own: the string is the wrapped method's self.
        method = getattr(__obj, "__wrapped__", __obj)
        target = getattr(method, "__self__", None)
        args = tuple(_listed(arg) for arg in args)
        if name in ("format", "format_map") and isinstance(target, str):
            _check_format(target)
            _check_nested_width(target)
            _build(_format_size(target, [*args, *kwargs.values()]), f"'{name}'")
        elif isinstance(target, str):
            # A string's methods make text of the string and their arguments (`sep.join(xs)`).
            _build(_text_size([target, *args, *kwargs.values()]), f"'{name}'")
        _too_big(_growth(name, target, args, kwargs), f"'{name}'")
        value = super().call(__context, __obj, *args, **kwargs)
        if not isinstance(target, str):
            _build(_items(value), f"'{name}'")
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        """An attribute lookup, counted."""
        _spend()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """An item lookup, counted (a slice is a copy: built)."""
        _spend()
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            _build(_size(value), "a slice")
        return value

    def _generate(
        self,
        source: jinja2.nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Every compile goes here, templates' and condition expressions' (which `_parse` misses).
        # Every loop's iterable goes through the counting filter, so nested loops over inputs
        # (which range's cap does not see) spend the operation budget too.
        for loop in source.find_all(jinja2.nodes.For):
            loop.iter = _through(_COUNTED, loop.iter)
        # Text written into a macro's or a block's buffer is joined there, unseen by `generate`
        # (which bounds the rest).
        buffered = {
            id(output): output
            for block in source.find_all(_BUFFERED)
            for output in block.find_all(jinja2.nodes.Output)
        }
        for output in buffered.values():
            output.nodes = [_through(_WRITTEN, _constant(node)) for node in output.nodes]
        for concat in list(source.find_all(jinja2.nodes.Concat)):
            # `str_join((joined,))`: the one string `joined` already is.
            concat.nodes = [_through(_JOINED, jinja2.nodes.List(concat.nodes))]
        with _nested(name, filename):
            return super()._generate(source, name, filename, defer_init)


def _constant(node: jinja2.nodes.Node) -> jinja2.nodes.Node:
    if isinstance(node, jinja2.nodes.TemplateData):
        return jinja2.nodes.Const(node.data)
    return node


def _through(filter_name: str, node: jinja2.nodes.Node) -> jinja2.nodes.Filter:
    return jinja2.nodes.Filter(node, filter_name, [], [], None, None)


@jinja2.pass_context  # never folded at compile time, where no budget is spent
def _written(context: jinja2.runtime.Context, value: Any) -> Any:
    _build(len(value) if isinstance(value, str) else _text_size([value]), "writing")
    return value


@jinja2.pass_context
def _joined(context: jinja2.runtime.Context, values: list[Any]) -> str:
    _build(_text_size(values), "'~'")
    return "".join(map(str, values))


# The nodes whose body Jinja writes into a buffer of its own, then joins into one value.
_BUFFERED = (
    jinja2.nodes.Macro,
    jinja2.nodes.CallBlock,
    jinja2.nodes.FilterBlock,
    jinja2.nodes.AssignBlock,
)
# What Jinja passes to filters that ask for it: not the filter's own arguments.
_PASSED = (jinja2.runtime.Context, jinja2.Environment, jinja2.nodes.EvalContext)


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    flattens = name not in _NOT_FLATTENING

    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _spend()
        args = tuple(_listed(arg) for arg in args)
        values = [a for a in args if not isinstance(a, _PASSED)]
        if values:
            _too_big(_growth(name, values[0], tuple(values[1:]), kwargs), f"'{name}'")
            if name == "format":
                _check_format(values[0])
            if flattens and name == "format" and isinstance(values[0], str):
                _build(_format_size(values[0], [*values[1:], *kwargs.values()]), f"'{name}'")
            elif flattens:
                _build(_text_size([*values, *kwargs.values()]), f"'{name}'")
        value = function(*args, **kwargs)
        if not flattens:
            _build(_items(value), f"'{name}'")
        return value

    return bounded


def environment() -> BoundedEnvironment:
    """A new bounded environment: no globals but a capped ``range``, no loader, strict undefined."""
    env = BoundedEnvironment(
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False, loader=None
    )
    # Only what templates need: no `lipsum` (it draws random numbers, and condition expressions run
    # inside workflows, which must replay to the same value), no `cycler`/`joiner` objects to poke at.
    env.globals.clear()
    env.globals["range"] = _range
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters[_COUNTED] = _counted
    env.filters[_WRITTEN] = _written
    env.filters[_JOINED] = _joined
    return env


def bounded_render(template: jinja2.Template, values: dict[str, Any], seconds: float | None) -> str:
    """Render ``template`` piece by piece within the operation, output and time budgets.

    Raises:
        TemplateError: the render went past a bound.
        Exception: whatever else the template raised (the caller words it).
    """
    token = _budget.set(_Budget(MAX_OPERATIONS, seconds))
    try:
        parts: list[str] = []
        produced = 0
        for part in template.generate(values):
            produced += len(part)
            if produced > MAX_OUTPUT:
                raise TemplateError(f"template output went past {MAX_OUTPUT} characters")
            _spend()
            parts.append(part)
        return "".join(parts)
    finally:
        _budget.reset(token)


def bounded_call(function: Callable[[], Any], seconds: float | None = None) -> Any:
    """``function()`` (a compiled expression) within the operation and time budgets."""
    token = _budget.set(_Budget(MAX_OPERATIONS, seconds))
    try:
        value = function()
    finally:
        _budget.reset(token)
    _too_big(_size(value), "the expression")
    return value
