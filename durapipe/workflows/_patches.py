"""The workflow changes a run asks `workflow.patched` about, and those its version puts in force.

Each change to what a run's workflow records comes with a patch: a run recorded before the change
replays without its marker and takes the old path. A marker costs a run two history events (the
marker and Temporal's ``TemporalChangeVersion`` upsert), so a run's `PipeRun.workflow_version`
puts the changes its code always had in force without asking (`IN_FORCE`).
"""

from __future__ import annotations

from durapipe.runtime._calls import WORKFLOW_VERSION
from durapipe.runtime._controllers import CONCURRENT_CHUNKS_PATCH
from durapipe.runtime._steps import AGENT_STEPS_PATCH, NESTED_AGENT_STEP_PATCH
from durapipe.workflows._caps import RESUMED_SPEND_PATCH, RUN_STEPS_PATCH

# Runs recorded before TOTALS_EVERY upserted after every step; replaying them must do the same.
TOTALS_EVERY_PATCH = "durapipe.totals-every-2s"
# Runs since this change take their first totals from the client that started them
# (`start_totals`) and upsert none at the start; they upsert every TOTALS_EVERY as before.
TOTALS_FROM_START_PATCH = "durapipe.totals-from-start"
# A call that finishes before its cancellation reaches it (a provider answering as the user cancels)
# hands the workflow its result, and the SDK spends the cancellation on it: runs recorded before
# this change went on to their next steps. Since it, no step starts once the run is cancelled.
CANCEL_HOLDS_PATCH = "durapipe.cancel-holds"
# An agent's call that finishes before its cancellation reaches it may be the last of its turns
# before continue-as-new, where no step starts: the fresh run carried no cancellation and the agent
# went on. Since this change the run ends as cancelled instead of continuing as new.
CANCEL_ENDS_AGENT_PATCH = "durapipe.cancel-ends-agent"
# What a step paid for before it failed (a failed leaf's attempts, a failed child run's steps)
# counts in the run's totals and budget since this change; before it, only what succeeded counted.
# Asked only when a failure carries spend, so other runs' histories carry no marker.
FAILED_SPEND_PATCH = "durapipe.failed-spend"
# A call cancelled after it paid for an answer (its re-ask in flight) fails with type
# durapipe.Cancelled and its spend since this change (Temporal's SDK drops the details of an
# activity that ends as cancelled); the run then ends as cancelled with the spend counted. A
# workflow of before it failed the run with that failure, and replays so. Asked only when such a
# failure arrives, so other runs' histories carry no marker.
CANCELLED_SPEND_PATCH = "durapipe.cancelled-spend"
# A nested run cancelled after its steps paid for something ended as cancelled, which carries no
# details: its parent's totals missed what it spent. Since this change it fails with type
# durapipe.Cancelled and its step records, and its parent reads that as the cancellation it is,
# counting the spend. Asked only by such a run (nested, cancelled, having spent), so other runs'
# histories carry no marker; its parent asks nothing (only such a child fails so).
CANCELLED_RUN_SPEND_PATCH = "durapipe.cancelled-run-spend"
# Under a budget, an agent's turns and image steps are estimated before they run since this change,
# as llm steps always were (a local activity each); before it they were counted after.
ESTIMATES_PATCH = "durapipe.estimate-turns-and-images"
# A run of version 5 may ask its worker's step cap mid-run, right before it lends a share to a child
# run or starts a batch's items: paused while it asked, it started them anyway once answered. Since
# this change it holds them until resumed (asked only by a run paused when the answer arrives).
PAUSED_ASK_PATCH = "durapipe.paused-ask-holds"
# A run paused when it starts a child run (a batch's next chunk, once the chunk before it ended)
# signalled the pause to the child once it had started: the child's first steps could start before
# the signal reached it. Since this change the child's input says it starts paused (`PipeRun.paused`)
# and no signal follows (a resume sent while it was starting does). Asked only by a run that starts
# a child while paused, so other runs' histories carry no marker.
START_PAUSED_PATCH = "durapipe.start-paused"
# The changes a run's `PipeRun.workflow_version` puts in force without asking `workflow.patched`
# (a marker and a TemporalChangeVersion upsert per run). A change made later must still go through
# `workflow.patched` for these versions (or come with a new version).
_IN_FORCE_SINCE_1 = frozenset(
    {TOTALS_EVERY_PATCH, CONCURRENT_CHUNKS_PATCH, TOTALS_FROM_START_PATCH}
)
# Version 4: every change made since version 1 but one, `durapipe.max-run-usd`, whose marker is
# data rather than code (present only when the worker that started the run had a cap: a replay
# reads it there). An agent run of version 3 carried two markers, each with its upsert.
_IN_FORCE_SINCE_4 = _IN_FORCE_SINCE_1 | {
    RUN_STEPS_PATCH,
    AGENT_STEPS_PATCH,
    NESTED_AGENT_STEP_PATCH,
    RESUMED_SPEND_PATCH,
    CANCEL_HOLDS_PATCH,
    CANCEL_ENDS_AGENT_PATCH,
    FAILED_SPEND_PATCH,
    ESTIMATES_PATCH,
}
# Version 5 changed no patch: its runs ask the worker's step cap only when they need it (see
# `durapipe.runtime._steps.ASKS_WHEN_NEEDED`, read from the version itself).
IN_FORCE = {
    version: _IN_FORCE_SINCE_4 if version >= 4 else _IN_FORCE_SINCE_1
    for version in range(1, WORKFLOW_VERSION + 1)
}
# From this version a run's input says whether it upserts its totals (`PipeRun.searchable_totals`).
TOTALS_CHOSEN = 3
