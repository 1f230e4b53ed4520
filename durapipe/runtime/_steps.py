"""A worker's cap on the size of one run: the steps it may start, across all its child runs.

A run's size is a worker's resource, not a client's choice: a valid spec can fan out without bound
(30 nested two-branch parallels are 2^30 leaves; a batch over a list input of a million items), and
one such run would hold a worker's slots and the cluster for hours. So the worker's cap
(``DURAPIPE_MAX_RUN_STEPS``) is checked when the count is known, before what it counts starts: the
spec's steps when the run starts, a batch's items when the batch has read its list.

Each part of a run (a workflow) holds an allowance: the top-level run the worker's cap, a child run
its share, given by its parent like the budget (`PipeRun.steps_left`). A child's share is the steps
its parent counted for it, plus a loan of what its parent has free for batches the child may meet
(the free steps split among the children that may run at once, so that together they cannot take
more than the run has); when the child ends it tells how many steps it held (`RunResult`), and its
parent keeps those and takes back the rest of the loan. A child whose run cannot grow (it reaches
no batch or agent: its steps are all counted already) needs no loan: among the branches of a
parallel (since `EXACT_SHARES_PATCH`) it is lent none, and the free steps are split among the
branches that may grow only, so one large batch beside a few small fixed branches gets what they
leave, not a quarter of it.

An agent's run counts each of its turns and each tool call it makes as it goes (`AgentLoop`): its
size is not in the spec (up to ``max_turns`` model requests, and any number of tool calls each),
so like a batch's items it is counted when known, before the turn or the calls start.

A top-level run that may grow past `STEPS_ALWAYS_ALLOWED` (it reaches a batch or an agent) starts
with that many, the least any worker allows, and asks its worker for the cap only when it would
count more, or lend a share to a child run that may grow (`Steps.room`): most such runs (an
agent of a few turns, a batch of a few items) never ask. Runs started before `ASKS_WHEN_NEEDED`
ask when they start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from durapipe._errors import ErrorType, StepFailed
from durapipe.spec._size import RunSize

RUN_TOO_LARGE = ErrorType.RUN_TOO_LARGE
SETTING = "DURAPIPE_MAX_RUN_STEPS"
# Since this change an agent's turns and tool calls count against its run's steps; runs recorded
# before counted the agent as one step, whatever it did (asked only by agents whose run has a cap).
AGENT_STEPS_PATCH = "durapipe.agent-turn-steps"
# Since this change a nested agent's run leaves its own step to its parent, which counted it; runs
# recorded before counted it twice, once in each (asked only by nested agents under a cap).
NESTED_AGENT_STEP_PATCH = "durapipe.nested-agent-step"
# Since this change a parallel whose nested runs are some fixed (they cannot grow) and some not lends
# the fixed ones no share of its free steps, and splits them among the others only; runs recorded
# before split them evenly among all (asked only by such a parallel under a cap).
EXACT_SHARES_PATCH = "durapipe.exact-static-shares"
# Since this change a parallel lends a branch that is a batch over a list it already holds (its
# items cannot grow) exactly the steps its items need, set aside before the other branches split
# what is left; runs recorded before split the free steps evenly among all the branches that may
# grow, whatever each needed (asked only by such a parallel under a cap).
KNOWN_LISTS_PATCH = "durapipe.known-list-shares"
# From this `PipeRun.workflow_version` a top-level run asks its worker for the cap when it needs it
# (`Steps.room`); before, every run that might need it asked when it started (a local activity,
# its marker one more event in the history of every agent run and every run with a batch).
ASKS_WHEN_NEEDED = 5


class Steps:
    """The steps one part of a run may start, and those it holds.

    Args:
        limit: this part's allowance; None: no cap (a run recorded before the cap existed).
        size: the sizes of the spec's pipes.
        whole: whether the allowance is the worker's whole cap (the top-level run), for the
            refusal's wording.
    """

    __slots__ = (
        "asking", "exact", "held", "known", "lanes", "lent", "limit", "loans", "size", "whole"
    )  # fmt: skip

    def __init__(self, limit: int | None, size: RunSize, *, whole: bool = False) -> None:
        self.limit = limit
        self.size = size
        self.whole = whole
        self.held = 0  # counted for steps of this part (and its children's beyond their share)
        self.lent = 0  # lent to children running now
        self.loans = 0  # how many children hold a loan now
        # How many children of this part may run at once: each is lent a share of the free steps.
        self.lanes = 1
        # Whether a child that cannot grow is lent no loan (and is not one of the ``lanes``).
        self.exact = False
        # What each child run not lent yet needs exactly (by its path): a batch over a list its
        # parent already holds (since `KNOWN_LISTS_PATCH`). Set aside from what the others split.
        self.known: dict[str, int] = {}
        # A provisional allowance (`provisional`): how to ask the worker for its cap, then the
        # question in flight (parts of the run that need it meanwhile wait for the same answer).
        self.asking: Callable[[], Awaitable[int | None]] | asyncio.Future[int | None] | None = None

    def provisional(self, least: int, ask: Callable[[], Awaitable[int | None]]) -> None:
        """Allow ``least`` steps (the least any worker allows, the whole cap as far as the run
        knows) until more are needed: then `room` asks ``ask`` for the worker's cap, once."""
        self.limit, self.whole, self.asking = least, True, ask

    async def room(self, steps: int = 0, *, grows: bool = False) -> None:
        """Make the allowance final, if it is provisional and ``steps`` more would not fit in it,
        or a child run that ``grows`` is to be lent a share: the worker's cap, asked once. Call
        it right before `take` or `lend`, with no ``await`` between."""
        if self.asking is None:
            return
        if not grows and self.limit is not None and steps <= self.limit - self.held - self.lent:
            return
        if not isinstance(self.asking, asyncio.Future):
            self.asking = asyncio.ensure_future(self.asking())
        asking = self.asking
        limit = await asking
        if self.asking is asking:  # the first part back from the question settles the allowance
            self.limit, self.asking = limit, None

    async def start(self, pipe: str, path: str, kind: str, *, own_step: bool = True) -> None:
        """Count the steps this part starts before any batch's items (see `RunSize.run`);
        without ``own_step``, those inside its pipe only (a nested run's own step is its
        parent's, counted there).

        Raises:
            StepFailed: ``durapipe.RunTooLarge``, when they are more than the allowance.
        """
        steps = self.size.run(pipe) if own_step else self.size.inside(pipe)
        await self.count(steps, path, kind, f"pipe '{pipe}' would start")

    async def count(self, steps: int, path: str, kind: str, what: str) -> None:
        """`take`, once the allowance has room for ``steps`` or is final (see `room`)."""
        await self.room(steps)
        self.take(steps, path, kind, what)

    def take(self, steps: int, path: str, kind: str, what: str) -> None:
        """Count ``steps`` more, or refuse them (nothing of them has started).

        ``what`` opens the refusal's sentence: what would start them.

        Raises:
            StepFailed: ``durapipe.RunTooLarge``: they do not fit in what is left.
        """
        if self.limit is None:
            return
        left = self.limit - self.held - self.lent
        if steps <= left:
            self.held += steps
            return
        cap = "the steps this worker lets one run start"
        if self.whole:
            cap = f"the {self.limit:,} steps this worker lets one run start"
            room = (
                f"more than {cap}"
                if left == self.limit
                else f"more than the {left:,} left of {cap}"
            )
        else:
            room = f"more than the {left:,} this nested run has left of {cap}"
        raise StepFailed(
            path=path,
            kind=kind,
            cause_type=RUN_TOO_LARGE,
            cause=f"{what} {steps:,} {'step' if steps == 1 else 'steps'}, {room} ({SETTING}); "
            "make the run smaller, or raise the setting on the workers",
        )

    def lend(
        self, share: int, *, grows: bool = True, path: str = ""
    ) -> tuple[int | None, int | None]:
        """The allowance of a child run counted here as ``share`` steps, and the loan in it
        (None: no loan, for a child that cannot grow (``grows``) when `exact`); a child at
        ``path`` whose need is `known` is lent just that, when it is free."""
        if self.limit is None:
            return None, 0
        if self.exact and not grows:
            return share, None
        free = self.limit - self.held - self.lent
        need = self.known.pop(path, None) if self.known else None
        set_aside = sum(self.known.values())
        if need is not None and need <= free - set_aside:
            loan = need
        else:
            # What is free, split evenly among the lanes no child holds yet, less what the
            # children of known needs still to come are set aside.
            lanes = max(1, self.lanes - self.loans - len(self.known))
            loan = max(0, free - set_aside) // lanes
        self.lent += loan
        self.loans += 1
        return share + loan, loan

    def repay(self, share: int, loan: int | None, held: int | None) -> None:
        """A child lent ``loan`` has ended holding ``held`` steps (None: not known, it failed):
        keep what it held beyond its ``share``, and the rest of the loan is free again."""
        if self.limit is None or loan is None:  # lent no loan: it could hold only its share
            return
        self.lent -= loan
        self.loans -= 1
        self.held += loan if held is None else max(0, held - share)
