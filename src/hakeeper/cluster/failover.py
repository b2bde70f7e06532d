"""Failover, switchover and switchback: hakeeperd acting on the decisions of :mod:`hakeeper.cluster.decide`.

**One owner per hierarchy.** Who may run a hierarchy is its ownership record
(epoch, owner) in :mod:`hakeeper.cluster.placement`, changed only by a claim a
majority of the voters (every node, witnesses included) accepted. Every way a
hierarchy comes in service on a node — a failover, the cluster's start, a
takeover asked by a node where it failed, a switchover or switchback, an
anti-entropy retry — is :meth:`Failover.take`: re-check quorum, claim, wait
until the previous owner released it, was fenced, or its lease lapsed (DEAD for
``takeover_delay``), check that the claim still holds, restore. A node that
learns of a newer epoch owned by another node (in a claim's accept, in a peer's
digest) takes the hierarchy out of service at once.

When a peer is declared dead (every path DEAD), each survivor checks quorum,
lets the dead node's lease run out (``takeover_delay``, with ``remote_verify``
asked meanwhile), fences it if a ``fence_command`` is set, and takes what falls
to it: :mod:`~hakeeper.cluster.survivor`.

A peer that does not answer is *unknown*, never "runs nothing": the claim, not
the answers, says who owns a hierarchy, and the anti-entropy pass
(:mod:`hakeeper.cluster.converge`, every few heartbeat intervals) treats a
hierarchy as running nowhere only when every live node answered. That pass also
stops duplicates and retries a hierarchy that runs nowhere although it should
(an abandoned or failed takeover), with back-off.

The parts, each in its own module: what a survivor does when a peer dies
(:mod:`~hakeeper.cluster.survivor`), this node as a voter of the ownership
records (:mod:`~hakeeper.cluster.voter`), confirmation and fencing of dead nodes
(:mod:`~hakeeper.cluster.fencing`), quorum and the quorum-loss action
(:mod:`~hakeeper.cluster.quorum`), start-up reconcile and the anti-entropy pass
(:mod:`~hakeeper.cluster.converge`); this module takes and moves hierarchies.

A hierarchy whose restore fails moves on to the next live node by priority
until none is left; LifeKeeper stops at the first. The same chain serves a
hierarchy whose local recovery failed (:meth:`Failover.resource_failed`).
Every decision is logged as one sentence.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

from hakeeper.cluster import decide, survivor, voter
from hakeeper.cluster.converge import AntiEntropy, Retries
from hakeeper.cluster.decide import Act, Claim, Hierarchy, View
from hakeeper.cluster.fencing import Fencing
from hakeeper.cluster.placement import BallotBox, Owner, Placement, PlacementStore, Refuse
from hakeeper.cluster.quorum import QuorumWatch
from hakeeper.cluster.voter import PeerVoters, Voter
from hakeeper.comm.paths import PathState
from hakeeper.comm.rpc import RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd, State
from hakeeper.db.states import Init, Switchback
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument, NotFound, SystemCallFailed
from hakeeper.kits.base import Takeover, taking_over
from hakeeper.recovery.engine import Engine

logger = logging.getLogger(__name__)

Send = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]

VIEW_TIMEOUT = 2.0  # a live peer's answer about what it sees and runs
MOVE_TIMEOUT = 900.0  # a restore on another node (LifeKeeper's REMOTETIMEOUT)
RELEASE_WAIT = 30.0  # a node an unconfirmed record names, asked to let a hierarchy go before a claim
RELEASE_TIMEOUT = 900.0  # the previous owner's remove, during a switchover (watched: its death ends the wait)
BOOT_WAIT = 60.0  # at start, how long to wait for quorum and every live peer's answer before giving up


class Failover:
    def __init__(
        self,
        lcd: Lcd,
        engine: Engine,
        send: Send,
        membership: Callable[[], dict[str, PathState]],
        caught_up: asyncio.Event,
        *,
        placement: PlacementStore | None = None,
    ) -> None:
        self.lcd = lcd
        self.engine = engine
        self.send = send
        self.membership = membership
        self.caught_up = caught_up
        self.me = lcd.local_node
        #: Why a takeover did not happen, by hierarchy name (``hakeeper why`` shows it).
        self.blocked: dict[str, str] = {}
        #: Peers that said they are stopping (lkstop, SIGTERM): their silence moves nothing.
        self.departed: set[str] = set()
        #: When each peer was last declared DEAD (monotonic): its lease lapses takeover_delay later.
        self.dead_since: dict[str, float] = {}
        #: Hierarchies to try again (their restore failed, quorum was lost), with back-off.
        self.retries = Retries(self.blocked)
        self.fencing = Fencing(lcd, self.blocked)
        self.quorum = QuorumWatch(
            lcd, engine, self.view, fencing=self.fencing, retries=self.retries, runs_here=self.runs_here
        )
        self.box = BallotBox(lcd.path.parent)
        self.voter = Voter(lcd, self.box, membership, self.dead_since, self.superseded)
        self.placement: PlacementStore = placement or Placement(
            self.me, self.box, PeerVoters(self.voter, send), lambda: sorted({n.name for n in self.lcd.nodes()}),
            self.quorum.voters_needed,
        )  # fmt: skip
        self.anti = AntiEntropy(self)
        self._locks: dict[str, asyncio.Lock] = {}  # one move of a hierarchy at a time on this node
        self._stops: dict[str, asyncio.Task[bool]] = {}  # removals under way, by hierarchy
        self._tasks: set[asyncio.Task[Any]] = set()  # anti-entropy retries and record confirmations under way
        self._moving: set[str] = set()  # hierarchies being offered to other nodes (move_on)
        #: Dead nodes whose failover runs here (node_dead): the anti-entropy pass leaves their hierarchies to it.
        self.failing: collections.Counter[str] = collections.Counter()
        self._runs: tuple[tuple[int, frozenset[tuple[str, int]]], dict[str, int]] | None = None  # see runs_here

    def close(self) -> None:
        self.box.close()

    # ------------------------------------------------------------------ what this node knows

    def view(self) -> View:
        alive = [n for n, s in self.membership().items() if s is PathState.ALIVE]
        return View.of(self.me, (n.name for n in self.lcd.nodes()), alive)

    def hierarchies(self) -> list[Hierarchy]:
        return hierarchies_in(self.lcd)

    def hierarchy_of(self, tag: str) -> Hierarchy | None:
        return hierarchy_of(self.lcd, tag)

    def in_service_here(self) -> list[str]:
        return sorted(tag for tag, _id, state, _reason in self.lcd.summaries() if state.in_service)

    def runs_here(self, found: Iterable[Hierarchy] | None = None) -> dict[str, int]:
        """The hierarchies in service here (any member), with the epoch this node holds them under (0: none).

        Asked every heartbeat interval (the heartbeats' digest): the answer is kept until the LCD changes (its
        change-log sequence, which every state change moves) or the held epochs do.
        """
        held = self.box.held()
        key = (self.lcd.last_seq(), frozenset(held.items()))
        if found is None and self._runs is not None and self._runs[0] == key:
            return dict(self._runs[1])
        here = set(self.in_service_here())
        runs = {h.name: held.get(h.name, 0) for h in (found or self.hierarchies()) if h.members & here}
        if found is None:
            self._runs = (key, runs)
        return dict(runs)

    def serving(self, h: Hierarchy) -> bool:
        """``h`` is in service here, every member, under the claim this node's voter knows as the newest."""
        owner = self.owner(h)
        return (
            owner.node == self.me
            and self.box.held().get(h.name) == owner.epoch
            and all(self.lcd.resource(t).state is State.ISP for t in h.members)
        )

    def owner(self, h: Hierarchy) -> Owner:
        """The ownership record as this node's voter last accepted it (a hint; claims read a majority)."""
        return self.placement.known(h.name)

    async def _each_live_peer(self, op: str, args: dict[str, Any], failing: str) -> dict[str, Any]:
        """Send ``op`` to every live peer at once; their answers (those that failed: logged with ``failing``)."""
        peers = sorted(self.view().alive - {self.me})

        async def one(peer: str) -> Any:
            try:
                return await self.send(peer, op, args, VIEW_TIMEOUT)
            except (HakeeperError, TimeoutError) as exc:
                logger.warning("%s: %s", failing.format(peer=peer), exc)
                return None

        answers = await asyncio.gather(*(one(p) for p in peers))
        return {p: a for p, a in zip(peers, answers, strict=True) if a is not None}

    async def views(self, about: str | None = None) -> dict[str, dict[str, Any]]:
        """Ask every live peer what it runs (and how it sees ``about``); peers that do not answer are left out.

        Left out means unknown, not "runs nothing": see :meth:`unknown`.
        """
        answers = await self._each_live_peer("view", {"about": about}, "{peer} did not say what it runs")
        return {p: a for p, a in answers.items() if isinstance(a, dict)}

    def unknown(self, views: dict[str, dict[str, Any]]) -> list[str]:
        """The live peers that did not answer: what they run is unknown."""
        return sorted(self.view().alive - {self.me} - set(views))

    def snapshot(self, views: dict[str, dict[str, Any]]) -> decide.Snapshot:
        """One decision's inputs, read now: the view, the hierarchies, what the peers' ``views`` say they run."""
        return decide.Snapshot.of(
            time.monotonic(), self.view(), self.hierarchies(), self.in_service(views), self.unknown(views)
        )

    def in_service(self, views: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
        found = {peer: [str(t) for t in answer.get("in_service", [])] for peer, answer in views.items()}
        found[self.me] = self.in_service_here()
        return found

    # ------------------------------------------------------------------ membership events

    def noted(self, node: str, state: PathState) -> None:
        """A peer's liveness changed (called at once by hakeeperd, before node_dead / node_alive run)."""
        if state is PathState.DEAD:
            self.dead_since.setdefault(node, time.monotonic())
        else:
            self.dead_since.pop(node, None)

    async def node_dead(self, node: str) -> None:
        """Take over what falls to this node from ``node``, declared dead (see :mod:`~hakeeper.cluster.survivor`)."""
        self.failing[node] += 1
        try:
            await survivor.take_over_from(self, node)
        finally:
            self.failing[node] -= 1
            if self.failing[node] <= 0:
                del self.failing[node]

    async def boot(self) -> None:
        """At start, once the peers are known: restore the hierarchies that should run and run nowhere.

        LifeKeeper's initialization: an AUTORES_ISP or INIT_ISP hierarchy in service
        on no live node is restored by its highest-priority live node (a cluster
        that boots together starts each once); INIT_OSU ones wait for the administrator.
        """
        settings = self.lcd.settings()
        # The hierarchies there were when hakeeperd started: those made since are the administrator's doing.
        # Those extended to no other node started already (decide.lone_at_start): nobody else can run them.
        start = [
            h.name
            for h in self.hierarchies()
            if set(h.priorities) - {self.me} and self.lcd.resource(h.roots[0]).init is not Init.INIT_OSU
        ]
        if not start:
            return
        await asyncio.sleep(float(settings["takeover_delay"]))
        # The peers' heartbeats may start seconds after their hakeeperd (a busy machine): wait, bounded,
        # for quorum and an answer from every live peer, or a hierarchy meant to start would never start.
        interval = float(settings["heartbeat_interval"])
        for _ in range(int(BOOT_WAIT / interval) + 1):
            q = await self.quorum.now()
            snap = self.snapshot(await self.views()) if q.ok else None
            if snap is not None and not snap.unknown:
                break
            await asyncio.sleep(interval)
        else:
            why = (
                f"no quorum ({q.why})"
                if snap is None
                else f"{', '.join(sorted(snap.unknown))} did not say what they run"
            )
            logger.warning("at start: %s after %g s: nothing is brought in service", why, BOOT_WAIT)
            return
        owned = [h.name for h in snap.hierarchies if self.owner(h).node == self.me]
        decisions = decide.at_start(snap.view, snap.hierarchies, snap.in_service, start=start, owned=owned)
        for d in decisions:
            if d.act is Act.RESTORE:
                logger.warning("%s", d.sentence)
        await asyncio.gather(
            *(self.take(d.hierarchy, Claim.START, reason="start") for d in decisions if d.act is Act.RESTORE)
        )

    async def node_alive(self, node: str) -> None:
        self.departed.discard(node)
        self.dead_since.pop(node, None)
        await self.caught_up.wait()
        if not await self.quorum.regained():
            return
        if not any(h.switchback is Switchback.AUTOMATIC for h in self.hierarchies()):
            return
        snap = self.snapshot(await self.views())
        found = [h for h in snap.hierarchies if h.switchback is Switchback.AUTOMATIC]
        for d in decide.switchback(self.me, snap.view, found, snap.in_service):
            if d.act is Act.RESTORE:
                logger.warning("%s", d.sentence)
                held = decide.holders(d.hierarchy, snap.view, snap.in_service)
                try:
                    await self._switch_here(d.hierarchy, reason="switchback", holders=held)
                except HakeeperError as exc:
                    logger.error("switchback of %s failed: %s", d.hierarchy.name, exc)

    # ------------------------------------------------------------------ taking a hierarchy: claim, wait, restore

    def _lock(self, h: Hierarchy) -> asyncio.Lock:
        return self._locks.setdefault(h.name, asyncio.Lock())

    async def take(
        self, h: Hierarchy, claim: Claim, *, reason: str, failed: Iterable[str] = (), allowed: Iterable[str] = ()
    ) -> bool:
        """Claim ``h``, restore it here; when the restore fails, move on to the next live nodes. True: it runs here."""
        async with self._lock(h):
            if self.serving(h):  # another way in got there first (an anti-entropy retry, a takeover asked for)
                logger.info("%s: in service here under this node's claim already (%s)", h.name, reason)
                return True
            result, why, _previous = await self._claim_and_restore(h, claim, reason=reason, allowed=allowed)
        if result == RESTORED:
            logger.warning("%s in service on %s (%s)", h.name, self.me, reason)
            return True
        if result == REFUSED:
            logger.warning("%s: not restored here: %s", h.name, why)
            return False
        logger.error("%s: restore on %s failed: %s", h.name, self.me, why)
        await self.move_on(h, failed=[*failed, self.me], reason=f"{reason}; restore failed on {self.me}")
        return False

    async def _claim_and_restore(
        self, h: Hierarchy, claim: Claim, *, reason: str, allowed: Iterable[str] = (), holders: Iterable[str] = ()
    ) -> tuple[str, str, str | None]:
        """The one way a hierarchy comes in service here: (RESTORED | REFUSED | FAILED, why, previous owner).

        Re-checks before acting: quorum now (not when the decision was taken), the
        claim at a majority, the previous owner out of it, the claim still ours.
        ``holders``: other nodes seen running it, which must release it too (a
        copy restored by hand, before ownership records, or under an older epoch).
        """
        q = await self.quorum.now()
        if not q.ok:
            return REFUSED, f"no quorum ({q.why})", None
        view = self.view()
        permitted = set(allowed)

        def change(current: Owner) -> Owner:
            why = decide.may_claim(current.node, claim, view, allowed=permitted)
            if why is not None:
                raise Refuse(why)
            return Owner(current.epoch + 1, self.me, decide.contenders(current.node, current.previous, self.me))

        def needs_lease(current: Owner) -> tuple[str, ...]:  # voters check that those who did not ask lost it
            if claim is Claim.SWITCHOVER:
                return ()
            return tuple(n for n in decide.contenders(current.node, current.previous, self.me) if n not in permitted)

        asked = time.monotonic()
        outcome = await self.placement.claim(h.name, change, lease=needs_lease)
        if not outcome.ok and outcome.previous is not None and await self._released(h, outcome.previous, permitted):
            outcome = await self.placement.claim(h.name, change, lease=needs_lease)  # once more, without their veto
        took = time.monotonic() - asked
        if not outcome.ok or outcome.now is None or outcome.previous is None:
            self.blocked[h.name] = f"not claimed: {outcome.why}"
            return REFUSED, f"not claimed: {outcome.why}", None
        epoch, previous = outcome.now.epoch, outcome.previous.node
        rivals = outcome.now.previous
        permitted |= set(needs_lease(outcome.previous))  # the voters saw their leases lapse
        await self.box.run(self.box.claimed, h.name, epoch)  # one fsync, off the event loop
        logger.info("%s: claimed by %s under epoch %d in %.3f s (previous owner %s)", h.name, self.me, epoch, took,
                    outcome.previous)  # fmt: skip
        self._confirm_soon(h, outcome.now)
        waiting = None
        for node in dict.fromkeys([*rivals, *holders]):
            waiting = waiting or await self._previous_gone(h, node, epoch, released=permitted)
        if waiting is None:
            q = await self.quorum.now()
            waiting = None if q.ok else f"no quorum ({q.why})"
        if waiting is None and self.owner(h).epoch > epoch:
            waiting = f"superseded by {self.owner(h)}"
        if waiting is not None:
            self.blocked[h.name] = waiting
            if self.owner(h).node == self.me:
                self.retries.schedule(h.name)  # ours, and out of service: the anti-entropy pass tries again
            return REFUSED, waiting, previous
        gone = None
        if claim is Claim.FAILOVER:  # every node it could run on before lost its lease at a majority of the voters
            proof = "whose lease lapsed at a majority of the voters"
            before = decide.contenders(outcome.previous.node, outcome.previous.previous, self.me)
            gone = Takeover(tuple(sorted({*before, *rivals})), proof)
        ok, why = await self._restore_here(h, reason, gone)
        if not ok:
            self.box.let_go(h.name)
            return FAILED, why, previous
        if self.owner(h).epoch > epoch:  # claimed by another node while the restore ran
            self.stop_soon(h, f"superseded by {self.owner(h)}")
            return REFUSED, f"superseded by {self.owner(h)} while restoring", previous
        self.blocked.pop(h.name, None)
        self.retries.done(h.name)
        return RESTORED, "", previous

    async def _released(self, h: Hierarchy, current: Owner, permitted: set[str]) -> bool:
        """A claim was vetoed: ask the live nodes an unconfirmed record names (not its owner) to let ``h`` go.

        They may run it, for all the voters know; each that answers has taken it
        out of service and is added to ``permitted``. True when one was.
        """
        rivals = [n for n in current.previous if n not in permitted and n != current.node]
        alive = [n for n in rivals if self.membership().get(n) is PathState.ALIVE]
        added = False
        for node in alive:
            try:
                await self.send(node, "release", {"roots": list(h.roots), "reason": f"claimed by {self.me}"},
                                voter.VOTE_TIMEOUT + RELEASE_WAIT)  # fmt: skip
            except (HakeeperError, TimeoutError) as exc:
                logger.info("%s: %s did not let it go: %s", h.name, node, exc)
                continue
            permitted.add(node)
            added = True
        return added

    def _confirm_soon(self, h: Hierarchy, won: Owner) -> None:
        """Write the record again without ``previous`` once the claim held (off the critical path)."""
        if not won.previous:
            return

        def change(current: Owner) -> Owner:
            _same(won.epoch, self.me)(current)  # refuses unless the record is still this claim's
            return Owner(won.epoch, won.node)

        self.spawn(self.placement.claim(h.name, change), f"confirm {h.name}")

    async def _previous_gone(self, h: Hierarchy, previous: str | None, epoch: int, *, released: set[str]) -> str | None:
        """Wait until the previous owner is out of ``h``: released it, or its lease lapsed. None, or why not.

        The lease of a node that is DEAD lapses ``takeover_delay`` after it was
        declared dead: by then, a node cut off from the majority has run its
        quorum-loss action. A live owner is asked to release; if it dies meanwhile,
        its lease decides (a switchover becomes a failover). A peer that neither
        answers nor dies is unknown: the wait goes on, bounded.
        """
        if previous is None or previous == self.me or previous in released:
            return None
        settings = self.lcd.settings()
        delay, interval = float(settings["takeover_delay"]), float(settings["heartbeat_interval"])
        deadline = time.monotonic() + RELEASE_TIMEOUT
        release: asyncio.Future[Any] | None = None
        try:
            while time.monotonic() < deadline:
                if self.owner(h).epoch > epoch:
                    return f"superseded by {self.owner(h)}"
                now = time.monotonic()
                state = self.membership().get(previous, PathState.UNKNOWN)
                if state is PathState.DEAD:
                    lapse = self.dead_since.setdefault(previous, now) + delay
                    if now < lapse:
                        await asyncio.sleep(lapse - now)
                        continue
                    # DEAD to this node; the voters must agree (it may still hear a majority): a lease check.
                    confirmed = await self.placement.claim(h.name, _same(epoch, self.me), lease=lambda _c: (previous,))
                    if confirmed.ok:
                        logger.info("%s: %s DEAD for takeover_delay (%g s): lease lapsed", h.name, previous, delay)
                        return None
                    logger.info("%s: %s's lease holds for the voters: %s", h.name, previous, confirmed.why)
                    await asyncio.sleep(interval)
                    continue
                if release is None and state is PathState.ALIVE:
                    args = {"roots": list(h.roots), "epoch": epoch, "reason": f"claimed by {self.me}"}
                    release = asyncio.ensure_future(self.send(previous, "release", args, RELEASE_TIMEOUT))
                if release is not None:
                    await asyncio.wait({release}, timeout=interval)
                    if release.done():
                        failure = release.exception()
                        if failure is None:  # the release answers for that node only: is the claim still ours?
                            return await self._still_ours(h, epoch, f"after {previous} released it")
                        if isinstance(failure, RemoteError):
                            return f"{previous} could not take it out of service: {failure}"
                        release = None  # unreachable for now: ask again
                        await asyncio.sleep(interval)
                else:
                    await asyncio.sleep(interval)
            return f"{previous} neither released it nor was declared dead within {RELEASE_TIMEOUT:g} s"
        finally:
            if release is not None and not release.done():
                release.cancel()
                with contextlib.suppress(BaseException):
                    await release

    async def _still_ours(self, h: Hierarchy, epoch: int, when: str) -> str | None:
        """None if this node's claim under ``epoch`` is still the record at a majority of the voters; else why not.

        A later claim may have won at a majority that a released node was not part
        of (two switchovers, each with a link cut): this node's own voter may not
        know it, and restoring now would serve beside the later claimant.
        """
        confirmed = await self.placement.claim(h.name, _same(epoch, self.me))
        return None if confirmed.ok else f"not confirmed {when}: {confirmed.why}"

    async def _restore_here(self, h: Hierarchy, reason: str, gone: Takeover | None = None) -> tuple[bool, str]:
        """Restore ``h`` here; ``gone``: taken from nodes proven out of it (the IP kit skips its probe then)."""
        with taking_over(gone):
            for root in h.roots:
                report = await self.engine.restore(root, reason=reason)
                if not report.ok:
                    return False, report.summary()
        return True, ""

    def stop_soon(self, h: Hierarchy, reason: str) -> asyncio.Task[bool]:
        """Take ``h`` out of service here (one removal at a time per hierarchy; a second caller joins the first)."""
        task = self._stops.get(h.name)
        if task is None or task.done():
            task = asyncio.create_task(self._remove(h, reason), name=f"stop {h.name}")
            self._stops[h.name] = task
        return task

    async def stop(self, h: Hierarchy, reason: str) -> bool:
        return await asyncio.shield(self.stop_soon(h, reason))

    async def _remove(self, h: Hierarchy, reason: str) -> bool:
        report = await self.engine.remove_all_of(set(h.members), reason=reason, target=h.name)
        if not report.ok:
            logger.error("ALERT: %s: taking it out of service here failed: %s", h.name, report.summary())
            return False
        self.box.let_go(h.name)
        return True

    async def move_on(self, h: Hierarchy, *, failed: list[str], reason: str) -> bool:
        """Ask the next live nodes by priority, in turn, to take ``h``; False when none could."""
        self._moving.add(h.name)
        try:
            return await self._move_on(h, failed=failed, reason=reason)
        finally:
            self._moving.discard(h.name)

    async def _move_on(self, h: Hierarchy, *, failed: list[str], reason: str) -> bool:
        tried = list(failed)
        for node in decide.next_nodes(h, self.view(), failed=tried):
            logger.warning("%s: %s; trying %s (priority %d)", h.name, reason, node, h.priorities[node])
            try:
                await self.send(node, "takeover", {"roots": list(h.roots), "reason": reason, "tried": tried},
                                MOVE_TIMEOUT)  # fmt: skip
            except (HakeeperError, TimeoutError) as exc:
                logger.error("%s: %s could not take it: %s", h.name, node, exc)
                tried.append(node)
                continue
            logger.warning("%s in service on %s", h.name, node)
            self.retries.done(h.name)
            return True
        self.blocked[h.name] = f"no live node left to run it (tried {', '.join(tried)})"
        logger.error("ALERT: %s is out of service: no live node left to run it (tried %s)", h.name, ", ".join(tried))
        await self._keep_for_retry(h, tried)
        return False

    async def _keep_for_retry(self, h: Hierarchy, tried: list[str]) -> None:
        """Every node failed: claim ``h`` back (not restoring it) so that this node's anti-entropy retries it."""
        permitted = set(tried)

        def change(current: Owner) -> Owner:
            if current.node not in permitted | {self.me}:
                raise Refuse(f"{current.node} owns it now")
            return Owner(current.epoch + 1, self.me)

        outcome = await self.placement.claim(h.name, change)
        if outcome.ok and outcome.now is not None:
            self.box.won_at(h.name, outcome.now.epoch)
            self.retries.schedule(h.name)

    async def resource_failed(self, tag: str, reason: str) -> None:
        """Local recovery of ``tag`` failed (LocalRecovery's failover request): move its whole hierarchy."""
        await self.caught_up.wait()
        h = self.hierarchy_of(tag)
        if h is None:
            logger.error("ALERT: %s is out of service (OSF) and is extended to no other node: %s", tag, reason)
            return
        async with self._lock(h):
            q = await self.quorum.now()
            if not q.ok:
                logger.error("ALERT: %s failed here and there is no quorum (%s) to move it: %s", h.name, q.why, reason)
                return
            if not await self.stop(h, f"failover of {h.name}: {reason}"):
                logger.error("ALERT: %s cannot move: taking it out of service here failed", h.name)
                return
        await self.move_on(h, failed=[self.me], reason=f"{tag} failed on {self.me}: {reason}")

    async def _switch_here(self, h: Hierarchy, *, reason: str, holders: Iterable[str] = ()) -> None:
        """Switchover or switchback: claim ``h``, the previous owner releases it, this node restores it."""
        async with self._lock(h):
            result, why, previous = await self._claim_and_restore(
                h, Claim.SWITCHOVER, reason=reason, holders=[n for n in holders if n != self.me]
            )
        holder = previous if previous not in (None, self.me) else None
        if result == RESTORED:
            logger.warning("%s in service on %s (%s from %s)", h.name, self.me, reason, holder or "nowhere")
            return
        if result == REFUSED:
            raise CommunicationFailed(f"{h.name}: {why}")
        logger.error("%s: restore on %s failed: %s", h.name, self.me, why)
        if not holder or not await self.move_on(h, failed=decide.after_failed_switch(h, holder), reason=why):
            raise SystemCallFailed(f"{h.name}: restore on {self.me} failed: {why}")
        raise SystemCallFailed(f"{h.name}: restore on {self.me} failed ({why}); back in service on {holder}")

    async def switchover(self, tag: str) -> str:
        """Move ``tag``'s hierarchy here: claim it, the node that runs it takes it out of service, restore it here."""
        await self.caught_up.wait()
        h = self.hierarchy_of(tag)
        if h is None:
            raise NotFound(f"{tag!r} is not part of a hierarchy extended to another node")
        snap = self.snapshot(await self.views())
        held = decide.holders(h, snap.view, snap.in_service)
        if (
            held == [self.me]
            and not snap.unknown
            and self.owner(h).node == self.me
            and all(self.lcd.resource(t).state is State.ISP for t in h.members)
        ):
            return f"{h.name} is in service here already"
        logger.warning("%s: switchover to %s requested", h.name, self.me)
        await self._switch_here(h, reason="switchover", holders=held)
        return f"{h.name} in service on {self.me}"

    # ------------------------------------------------------------------ for start-up and convergence

    async def adopt(self, h: Hierarchy) -> tuple[bool, str]:
        """Claim ``h``, in service here and owned by nobody (restored by hand, or before ownership records)."""
        async with self._lock(h):
            result, why, _ = await self._claim_and_restore(h, Claim.ADOPT, reason="in service at start")
        return result == RESTORED, why

    def busy(self, h: Hierarchy) -> bool:
        """A move, a takeover or a removal of ``h`` runs on this node."""
        stopping = h.name in self._stops and not self._stops[h.name].done()
        return self._lock(h).locked() or h.name in self._moving or stopping

    def spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        """Run ``work`` beside the caller, kept referenced until it ends."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def under_way(self) -> set[asyncio.Task[Any]]:
        """The tasks started here that still run: anti-entropy retries, record confirmations, removals."""
        return {task for task in (*self._tasks, *self._stops.values()) if not task.done()}

    async def leaving(self, *, switch_over: bool) -> None:
        """This node stops (lkstop, SIGTERM): move its hierarchies if asked, and tell the peers not to fail over.

        The peers are told first, so that its silence, once its heartbeats stop,
        moves nothing; with ``switch_over`` (shutdown strategy "Switch Over
        Resources") each hierarchy in service here is then taken out of service
        and handed to the next live node by priority.
        """
        await self._each_live_peer("leaving", {}, "could not tell {peer} that this node stops")
        if not switch_over:
            return
        found = self.hierarchies()
        here = self.runs_here(found)
        for h in [h for h in found if h.name in here]:
            if await self.stop(h, "lkstop: switch over"):
                await self.move_on(h, failed=[self.me], reason=f"{self.me} stops (shutdown strategy: switch over)")
            else:
                logger.error("%s stays here: taking it out of service failed", h.name)

    # ------------------------------------------------------------------ what peers ask

    def handlers(self) -> dict[str, Callable[[Peer, dict[str, Any]], Awaitable[dict[str, Any]]]]:
        """What peers may ask of this node's failover, by RPC operation."""
        return {
            "view": self.on_view,
            "takeover": self.on_takeover,
            "release": self.on_release,
            "ballot_prepare": self.voter.on_ballot_prepare,
            "ballot_accept": self.voter.on_ballot_accept,
            "leaving": self.on_leaving,
        }

    async def on_leaving(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        self.departed.add(peer.node)
        logger.info("%s says it is stopping: its silence will move nothing", peer.node)
        return {}

    async def on_view(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        about = args.get("about")
        sees = self.membership().get(str(about), PathState.UNKNOWN).value if about else None
        slots = {h.name: self.box.slot(h.name) for h in self.hierarchies()}
        records = {name: [slot.accepted.as_json(), slot.value.as_json()] for name, slot in slots.items()}
        return {"in_service": self.in_service_here(), "sees": sees, "runs": self.runs_here(), "records": records}

    def peer_runs(self, node: str, runs: dict[str, int]) -> None:
        """A peer's heartbeats say what it runs: one it runs under a newer epoch than here stops here at once."""
        here = self.runs_here()
        for h in self.hierarchies():
            theirs, mine = runs.get(h.name), here.get(h.name)
            if theirs is None or mine is None or theirs <= mine:
                continue
            logger.error("ALERT: %s: in service on %s under epoch %d (its heartbeats say), here under epoch %d: "
                         "taking it out of service here", h.name, node, theirs, mine)  # fmt: skip
            self.stop_soon(h, f"in service on {node} under epoch {theirs}")

    def superseded(self, key: str, value: Owner) -> None:
        """This node's voter accepted ``value``: if it runs ``key`` under an older epoch, it stops at once."""
        held = self.box.held().get(key)
        if value.node == self.me or held is None or value.epoch <= held:
            return
        h = next((h for h in self.hierarchies() if h.name == key), None)
        if h is None or not h.members & set(self.in_service_here()):
            self.box.let_go(key)
            return
        logger.warning("%s: claimed by %s (epoch %d), held here under epoch %d: taking it out of service here",
                       key, value.node or "nobody", value.epoch, held)  # fmt: skip
        self.stop_soon(h, f"claimed by {value.node or 'nobody'} (epoch {value.epoch})")

    def _roots(self, args: dict[str, Any]) -> Hierarchy:
        roots = args.get("roots")
        if not isinstance(roots, list) or not roots:
            raise IllegalArgument("a takeover or release names the roots of a hierarchy")
        h = self.hierarchy_of(str(roots[0]))
        if h is None:
            raise NotFound(f"{roots[0]!r} is not part of an extended hierarchy on {self.me}")
        return h

    async def on_takeover(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """A node where ``h`` failed (or that stops) asks this one to take it: claim from it, restore here."""
        h = self._roots(args)
        tried = [str(n) for n in args.get("tried") or []] + [peer.node]
        reason = str(args.get("reason", f"failover from {peer.node}"))
        async with self._lock(h):
            result, why, _ = await self._claim_and_restore(h, Claim.TAKEOVER, reason=reason, allowed=tried)
        if result == REFUSED:
            raise CommunicationFailed(f"{self.me} did not take {h.name}: {why}")
        if result == FAILED:
            raise SystemCallFailed(f"restore on {self.me} failed: {why}")
        self.blocked.pop(h.name, None)
        return {}

    async def on_release(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """A node claimed ``h`` (switchover, switchback): take it out of service here, then answer."""
        h = self._roots(args)
        epoch = int(args.get("epoch") or 0)
        held = self.box.held().get(h.name, 0)
        if epoch and held > epoch:
            raise IllegalArgument(f"{h.name} is held here under epoch {held}, newer than {peer.node}'s {epoch}")
        current = self.owner(h)
        if epoch and current.epoch > epoch and current.node != peer.node:  # a later claim won: not for it to take
            raise IllegalArgument(f"{h.name} is claimed by {current.node} under epoch {current.epoch}, "
                                  f"newer than {peer.node}'s {epoch}")  # fmt: skip
        reason = f"{args.get('reason', 'switchover')} to {peer.node}"
        if not await self.stop(h, reason):
            raise SystemCallFailed(f"taking {h.name} out of service on {self.me} failed")
        return {}


RESTORED, REFUSED, FAILED = "restored", "refused", "failed"


def _same(epoch: int, me: str) -> Callable[[Owner], Owner]:
    """A change that writes the record again as it is, if it is still ``me``'s under ``epoch``."""

    def change(current: Owner) -> Owner:
        if (current.epoch, current.node) != (epoch, me):
            raise Refuse(f"superseded by {current}")
        return current

    return change


def hierarchies_in(lcd: Lcd) -> list[Hierarchy]:
    """The LCD's extended hierarchies, each with the switchback of its first root."""
    switchbacks = {r.tag: r.switchback for r in lcd.resources()}
    return decide.hierarchies(lcd.edges(), lcd.equivalencies(), switchbacks)


def hierarchy_of(lcd: Lcd, tag: str) -> Hierarchy | None:
    """The extended hierarchy ``tag`` belongs to, if any."""
    return next((h for h in hierarchies_in(lcd) if tag in h.members), None)
