"""The local-recovery ladder as pure functions: what to do about a failure, and after each rung.

:class:`hakeeper.events.local.LocalRecovery` carries these out; they decide
nothing by themselves about time or state, so tests can walk the whole ladder
without processes:

1. a configuration error waits for the administrator (moving the hierarchy
   would meet the same configuration elsewhere);
2. a hard failure, local recovery turned off, or the attempts used up in the
   window: escalate (the resource goes OSF, the cluster moves the hierarchy);
3. otherwise the kit's ``recover`` action if it has one, else remove and
   restore of the resource and what is above it;
4. after a rung that failed: a configuration error waits for the administrator,
   anything else escalates.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hakeeper.kits.base import Policy


class Rung(enum.Enum):
    WAIT_FOR_ADMIN = "wait for the administrator"
    ESCALATE = "escalate"
    RECOVER = "the kit's recover action"
    REMOVE_RESTORE = "remove and restore"
    DONE = "recovered"


@dataclass(frozen=True)
class Step:
    rung: Rung
    why: str = ""  # what to add to the failure's message in the log and the state's reason


def first_step(policy: Policy, *, local_recover: bool, may_try: bool, has_recover: bool, limits: str) -> Step:
    """The first rung for a failure of ``policy`` (``limits``: how the attempts were counted, for the reason)."""
    if policy is Policy.CONFIG:
        return Step(Rung.WAIT_FOR_ADMIN)
    if policy is Policy.HARD:
        return Step(Rung.ESCALATE, " (this node cannot run it)")
    if not local_recover:
        return Step(Rung.ESCALATE, " (local recovery is off)")
    if not may_try:
        return Step(Rung.ESCALATE, f" (local recovery tried {limits})")
    return Step(Rung.RECOVER if has_recover else Rung.REMOVE_RESTORE)


def after(ok: bool, policy: Policy | None, what: str) -> Step:
    """After a rung: done, or waiting for the administrator (a configuration error), or escalate."""
    if ok:
        return Step(Rung.DONE)
    return Step(Rung.WAIT_FOR_ADMIN if policy is Policy.CONFIG else Rung.ESCALATE, f"; {what}")
