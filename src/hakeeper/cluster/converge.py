"""Start-up and convergence: what hakeeperd does so that every hierarchy runs once, and only where it is owned.

- :meth:`AntiEntropy.reconcile` (at start, once membership formed): each
  hierarchy in service here is kept only if the majority's record says this node
  owns it; nobody owns it -> claimed; another node -> taken out of service here.
- :meth:`AntiEntropy.converge` (every ``CONVERGE_EVERY`` heartbeat intervals):
  compares what every live node runs (their digests) with the ownership
  records; a duplicate stops everywhere but at the owner, and a hierarchy that
  runs nowhere although it should (an abandoned or failed takeover, a quorum
  loss) is claimed again, with back-off (:class:`Retries`). A live node that
  does not answer is unknown: nothing is concluded from its silence.

The rules are :func:`hakeeper.cluster.decide.converge`'s; this module acts on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from hakeeper.cluster import decide
from hakeeper.cluster.decide import Claim, Fix, Hierarchy
from hakeeper.cluster.placement import Ballot, Owner
from hakeeper.comm.paths import PathState
from hakeeper.db.settings import detection_budget

if TYPE_CHECKING:
    from hakeeper.cluster.failover import Failover

logger = logging.getLogger(__name__)

CONVERGE_EVERY = 5  # heartbeat intervals between two anti-entropy passes
RETRY_FIRST, RETRY_MOST, RETRY_TRIES = 1.0, 30.0, 8  # anti-entropy retries of one hierarchy: back-off, bound


class Retries:
    """Hierarchies to try again, with back-off: name -> (tries so far, next try on the monotonic clock)."""

    def __init__(self, blocked: dict[str, str]) -> None:
        self.blocked = blocked
        self.due_at: dict[str, tuple[int, float]] = {}

    def schedule(self, name: str) -> None:
        """One more try of ``name``, after a back-off; an ALERT once the tries are used up."""
        tries, _at = self.due_at.get(name, (0, 0.0))
        if tries >= RETRY_TRIES:
            self.blocked[name] = f"gave up after {tries} tries; waits for the administrator or a membership change"
            logger.error("ALERT: %s runs nowhere: %s", name, self.blocked[name])
            return
        pause = min(RETRY_MOST, RETRY_FIRST * 2**tries)
        self.due_at[name] = (tries + 1, time.monotonic() + pause)
        logger.warning("%s: next try in %g s (try %d of %d)", name, pause, tries + 1, RETRY_TRIES)

    def soon(self, name: str) -> None:
        """Try ``name`` at the next pass (quorum loss took it out of service: when quorum is back)."""
        self.due_at[name] = (0, time.monotonic())

    def done(self, name: str) -> None:
        self.due_at.pop(name, None)

    def running(self, name: str) -> None:
        """A try of ``name`` runs: none again until it ends."""
        tries, _ = self.due_at.get(name, (0, 0.0))
        self.due_at[name] = (tries, float("inf"))

    def unscheduled(self, name: str) -> bool:
        """No next try of ``name`` is set (none at all, or the one that just ran)."""
        return name not in self.due_at or self.due_at[name][1] == float("inf")

    def due(self, now: float) -> set[str]:
        return {n for n, (tries, at) in self.due_at.items() if at <= now and tries < RETRY_TRIES}

    def next_try(self, name: str) -> str | None:
        """When the anti-entropy pass tries ``name`` again, for ``hakeeper why``."""
        if name not in self.due_at:
            return None
        tries, at = self.due_at[name]
        if tries >= RETRY_TRIES:
            return f"gave up after {tries} tries"
        return f"try {tries} of {RETRY_TRIES} in {max(0.0, at - time.monotonic()):.1f} s"


class AntiEntropy:
    """Reconcile at start and the periodic anti-entropy pass of one node, acting through its :class:`Failover`."""

    def __init__(self, failover: Failover) -> None:
        self.failover = failover

    async def membership_formed(self) -> None:
        """Wait (bounded by the detection budget and a second) until every peer is ALIVE or DEAD."""
        f = self.failover
        settings = f.lcd.settings()
        peers = {n for n in f.view().nodes if n != f.me}
        deadline = time.monotonic() + detection_budget(settings) + 1.0
        while time.monotonic() < deadline:
            if all(f.membership().get(p, PathState.UNKNOWN) is not PathState.UNKNOWN for p in peers):
                return
            await asyncio.sleep(float(settings["heartbeat_interval"]))
        unknown = sorted(p for p in peers if f.membership().get(p, PathState.UNKNOWN) is PathState.UNKNOWN)
        logger.warning("membership not formed after %.1f s: %s still UNKNOWN",
                       detection_budget(settings) + 1.0, ", ".join(unknown))  # fmt: skip

    async def reconcile(self) -> None:
        """At start, after catching up and once membership formed: keep here only what this node owns.

        For each hierarchy in service here, the majority's record says who owns it
        (a claim that changes nothing): another node (it took it over while this
        one was away) -> taken out of service here; nobody (it was restored before
        ownership records, or by hand) -> claimed; unknown (no majority answered)
        -> left to the anti-entropy pass.
        """
        f = self.failover
        await self.membership_formed()
        found = f.hierarchies()
        here = f.runs_here(found)
        for h in [h for h in found if h.name in here]:
            outcome = await f.placement.claim(h.name, lambda current: current)
            owner = outcome.previous
            if not outcome.ok or owner is None:
                logger.warning("%s is in service here; who owns it is unknown (%s)", h.name, outcome.why)
                continue
            if owner.node == f.me:
                await f.box.run(f.box.claimed, h.name, owner.epoch)
            elif owner.node is None:
                result, why = await f.adopt(h)
                if not result:
                    logger.warning("%s: in service here and not claimed: %s", h.name, why)
            else:
                logger.error("ALERT: %s is in service here but owned by %s: taking it out of service here", h.name,
                             owner)  # fmt: skip
                await f.stop(h, f"owned by {owner}")

    async def forever(self) -> None:
        """The anti-entropy pass, every CONVERGE_EVERY heartbeat intervals, for as long as hakeeperd runs."""
        f = self.failover
        await f.caught_up.wait()
        while True:
            await asyncio.sleep(CONVERGE_EVERY * float(f.lcd.settings()["heartbeat_interval"]))
            try:
                await self.converge()
            except Exception:  # one bad pass must not end the next ones
                logger.exception("anti-entropy pass failed")

    async def converge(self) -> None:
        """Compare what the live nodes run with the ownership records: stop duplicates here, retry what runs nowhere."""
        f = self.failover
        if f.quorum.lost:
            return
        found = f.hierarchies()
        if not found:
            return
        views = await f.views()
        runs = {p: {str(k): int(v) for k, v in dict(a.get("runs") or {}).items()} for p, a in views.items()}
        runs[f.me] = f.runs_here(found)
        newest = {h.name: (f.box.slot(h.name).accepted, f.owner(h)) for h in found}
        for answer in views.values():  # the record of the highest ballot any voter knows (one may have missed it)
            for name, pair in dict(answer.get("records") or {}).items():
                with contextlib.suppress(ValueError, TypeError, IndexError, KeyError):
                    ballot, value = Ballot.from_json(pair[0]), Owner.from_json(pair[1])
                    if name in newest and ballot > newest[name][0]:
                        newest[name] = (ballot, value)
        records = {name: (value.epoch, value.node) for name, (_ballot, value) in newest.items()}
        due = f.retries.due(time.monotonic())
        repairs = decide.converge(
            f.view(), found, runs, records, unknown=f.unknown(views), departed=f.departed, retry=due,
            waiting=set(f.retries.due_at) - due, held=f.box.won(),
        )  # fmt: skip
        for r in repairs:
            h = r.hierarchy
            if f.busy(h) or records[h.name][1] in f.failing:
                continue  # a move or a removal of it runs already, or the failover from its dead owner
            if r.fix is Fix.STOP:
                logger.error("ALERT: %s", r.sentence)
                f.stop_soon(h, r.sentence.split(": ", 1)[1])
                continue
            logger.warning("%s", r.sentence)
            f.retries.running(h.name)
            f.spawn(self._retry(h, records[h.name][1]), f"retry {h.name}")

    async def _retry(self, h: Hierarchy, owner: str | None) -> None:
        """Claim and restore ``h`` (it runs nowhere); from a dead owner, as a failover does: confirmation, fencing."""
        f = self.failover
        failed = [owner] if owner and owner != f.me else []
        dead = owner if owner and owner != f.me and owner not in f.view().alive else None
        ready = dead is None or (await f.fencing.confirmed(dead, [h.name]) and await f.fencing.fence(dead, [h.name]))
        taken = ready and await f.take(h, Claim.RETRY, reason="retry", failed=failed)
        if not taken and f.retries.unscheduled(h.name):
            f.retries.schedule(h.name)
