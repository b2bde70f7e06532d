"""What a survivor does when a peer is declared dead: from the detection to the takeover of what falls to it.

Each survivor, when every path to a peer is DEAD (:meth:`Failover.node_dead`):

1. waits until it has caught up on configuration changes;
2. checks quorum; a node without it runs the quorum-loss action instead and
   takes nothing over;
3. lets the peer's **lease** run out: nothing is restored before
   ``takeover_delay`` has passed since this node declared the peer dead, so
   that a peer on the losing side of a partition, whose detection may lag by
   a heartbeat interval, has stopped serving (:mod:`hakeeper.cluster.lease`).
   With ``witness_mode=remote_verify`` the other live nodes are asked *during*
   that wait whether they see the peer dead too, again every heartbeat interval
   while one still sees it alive; past the delay, that pauses the takeover
   (``PAUSING takeover …``) for up to ``VERIFY_ROUNDS`` intervals, then
   abandons it. Asking during the delay rather than after it costs no safety:
   the answer is only a witness, and what keeps two nodes from serving is the
   claim, whose voters each check the lease themselves when they accept
   (:class:`hakeeper.cluster.voter.Voter`); a peer that comes back within the
   delay moves nothing;
4. waits for ``lk_confirmso`` when the flag asks for it (the peers are asked
   again afterwards if that took longer than an interval);
5. decides (:func:`decide.takeover`) who restores each hierarchy, fences the
   dead node if a ``fence_command`` is set (a failed fence blocks the takeover),
   and takes what falls to it (:meth:`Failover.take`), as a failover from the
   dead node.

Every step is one log line; the log reads as the takeover's history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from hakeeper.cluster import decide
from hakeeper.cluster.decide import Act, Claim
from hakeeper.comm.paths import PathState
from hakeeper.db.settings import detection_budget

if TYPE_CHECKING:
    from hakeeper.cluster.failover import Failover

logger = logging.getLogger(__name__)

DECIDE_ROUNDS = 3  # a failover decision taken again because it aged (fencing took long): how often at most
VERIFY_ROUNDS = 20  # remote_verify past the takeover delay: how often to ask again, one heartbeat interval apart

Views = dict[str, dict[str, Any]]


async def take_over_from(f: Failover, node: str) -> None:
    """Take over what falls to this node from ``node``, declared dead (see the module's text)."""
    since = f.dead_since.setdefault(node, time.monotonic())
    await f.caught_up.wait()
    if node in f.departed:
        logger.info("%s stopped gracefully: nothing moves", node)
        return
    # Quorum first, at once: a node on the losing side of a partition must stop serving before the
    # others' takeover delay runs out.
    if not await f.quorum.held():
        return
    delay = float(f.lcd.settings()["takeover_delay"])
    views = await verified(f, node, lapse=since + delay)
    if views is None:
        return
    asked = time.monotonic()
    if not await confirmed(f, node):
        return
    if time.monotonic() - asked > float(f.lcd.settings()["heartbeat_interval"]):  # lk_confirmso took a while
        views = await verified(f, node, lapse=time.monotonic())
        if views is None:
            return
    if not await f.quorum.held():
        return
    fenced = False
    for _ in range(DECIDE_ROUNDS):  # bounded: a decision whose snapshot aged during fencing is taken again
        snap = f.snapshot(views)
        decisions = decide.takeover(
            node, snap.view, snap.hierarchies, snap.in_service, dead_paths=len(f.lcd.paths(node))
        )
        mine = [d for d in decisions if d.act is Act.RESTORE]
        for d in decisions:
            (logger.warning if d.act is not Act.ELSEWHERE else logger.info)("%s", d.sentence)
        if mine and f.fencing.required(len(snap.view.nodes)):
            for d in mine:
                f.blocked[d.hierarchy.name] = (
                    "quorum_mode=tcp_remote with two nodes needs a fence_command: nothing else proves "
                    f"that {node} stopped"
                )
                logger.error("%s: takeover blocked: %s", d.hierarchy.name, f.blocked[d.hierarchy.name])
            return
        if mine and not fenced:
            if not await f.fencing.fence(node, [d.hierarchy.name for d in mine]):
                return
            fenced = True
        if not mine or snap.fresh(time.monotonic(), detection_budget(f.lcd.settings())):
            break
        logger.info("the decision on %s's hierarchies is %.1f s old: taken again", node,
                    time.monotonic() - snap.taken)  # fmt: skip
        if not await f.quorum.held() or f.membership().get(node) is not PathState.DEAD:
            return
        views = await f.views()
    else:
        logger.error("no fresh decision on %s's hierarchies after %d tries: nothing taken over", node,
                     DECIDE_ROUNDS)  # fmt: skip
        return
    await asyncio.gather(
        *(f.take(d.hierarchy, Claim.FAILOVER, reason=f"failover from {node}", failed=[node]) for d in mine)
    )


async def confirmed(f: Failover, dead: str) -> bool:
    """Whether a failover from ``dead`` may go on (confirmso, see :class:`Fencing`), for what falls here."""
    guess = decide.takeover(dead, f.view(), f.hierarchies(), {f.me: f.in_service_here()})
    return await f.fencing.confirmed(dead, [d.hierarchy.name for d in guess if d.act is Act.RESTORE])


async def verified(f: Failover, dead: str, *, lapse: float) -> Views | None:
    """The live peers' views, once none of them sees ``dead`` alive (remote_verify) and ``lapse`` has passed.

    ``lapse`` (monotonic) is when ``dead``'s lease lapses here: ``takeover_delay``
    after this node declared it dead. The peers are asked from the start, again
    every heartbeat interval while one of them still sees ``dead`` alive (its
    detection may lag this node's by a millisecond or two, or it may still hear
    it); only past ``lapse`` does that pause the takeover, ``VERIFY_ROUNDS``
    times at most. None to stand down: ``dead`` is back, or a peer kept seeing it.
    The views returned may be up to ``takeover_delay`` old: a decision taken from
    them is acted on only through a claim, which reads the records afresh.
    """
    settings = f.lcd.settings()
    verify = settings["witness_mode"] == "remote_verify"
    interval, delay = float(settings["heartbeat_interval"]), float(settings["takeover_delay"])
    paused = 0
    seeing: list[str] = []
    for _ in range(int(delay / interval) + VERIFY_ROUNDS + 2):  # bounded: the delay's rounds, then VERIFY_ROUNDS
        views = await f.views(dead)
        seeing = sorted(p for p, a in views.items() if a.get("sees") == PathState.ALIVE.value)
        early = time.monotonic() < lapse
        step = decide.verify(seeing, on=verify, round_=paused, rounds=VERIFY_ROUNDS)
        if step is decide.Verify.PROCEED:
            if early:
                await asyncio.sleep(lapse - time.monotonic())
            if f.membership().get(dead) is not PathState.DEAD:
                logger.info("%s is back within the takeover delay (%g s): nothing moves", dead, delay)
                return None
            return views
        if step is decide.Verify.ABANDON:
            break
        if not early:
            paused += 1
            logger.warning("PAUSING takeover from %s: %s still see(s) it alive", dead, ", ".join(seeing))
        left = lapse - time.monotonic()
        await asyncio.sleep(min(interval, left) if left > 0 else interval)  # asked again at the lapse at the latest
        if f.membership().get(dead) is not PathState.DEAD:
            if time.monotonic() < lapse:
                logger.info("%s is back within the takeover delay (%g s): nothing moves", dead, delay)
            else:
                logger.info("%s is back: takeover cancelled", dead)
            return None
    logger.error("takeover from %s abandoned: %s still see(s) it alive", dead, ", ".join(seeing))
    return None
