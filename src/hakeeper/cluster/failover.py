"""Failover, switchover and switchback: hakeeperd acting on the decisions of :mod:`hakeeper.cluster.decide`.

**One owner per hierarchy.** Who may run a hierarchy is its ownership record
(epoch, owner) in :mod:`hakeeper.cluster.placement`, changed only by a claim a
majority of the voters (every node, witnesses included) accepted. Every way a
hierarchy comes in service on a node — a failover, the cluster's start, a
takeover asked by a node where it failed, a switchover or switchback, an
anti-entropy retry — is :meth:`Failover._take`: re-check quorum, claim, wait
until the previous owner released it, was fenced, or its lease lapsed (DEAD for
``takeover_delay``), check that the claim still holds, restore. A node that
learns of a newer epoch owned by another node (in a claim's accept, in a peer's
digest) takes the hierarchy out of service at once.

When a peer is declared dead (every path DEAD), each survivor:

1. waits until it has caught up on configuration changes (``Daemon.caught_up``);
2. checks quorum; a node without it runs the quorum-loss action instead
   (``osu``: every resource out of service; ``fastkill`` / ``fastboot``: halt or
   reboot at once) and takes nothing over;
3. waits ``takeover_delay``, so that a peer on the losing side of a partition,
   whose detection may lag by a heartbeat interval, has stopped serving;
4. with ``witness_mode=remote_verify``, asks the other live nodes whether they
   see the node dead too, and pauses while one still sees it alive;
5. decides (:func:`decide.takeover`) who restores each hierarchy, fences the
   dead node if a ``fence_command`` is set (a failed fence blocks the takeover),
   and takes what falls to it.

A peer that does not answer is *unknown*, never "runs nothing": the claim, not
the answers, says who owns a hierarchy, and the anti-entropy pass
(:meth:`Failover.converge`, every few heartbeat intervals) treats a hierarchy
as running nowhere only when every live node answered. That pass also stops
duplicates and retries a hierarchy that runs nowhere although it should (an
abandoned or failed takeover), with back-off.

A hierarchy whose restore fails moves on to the next live node by priority
until none is left; LifeKeeper stops at the first. The same chain serves a
hierarchy whose local recovery failed (:meth:`Failover.resource_failed`).
Every decision is logged as one sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from hakeeper.cluster import decide, lease
from hakeeper.cluster.decide import Act, Claim, Fix, Hierarchy, View
from hakeeper.cluster.placement import Answer, Ballot, BallotBox, Owner, Placement, PlacementStore, Refuse, majority
from hakeeper.comm.paths import PathState
from hakeeper.comm.rpc import RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd, State
from hakeeper.db.settings import detection_budget, parse_hosts
from hakeeper.db.states import Init, Switchback
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument, NotFound, SystemCallFailed
from hakeeper.recovery.engine import Engine

logger = logging.getLogger(__name__)

Send = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]

VIEW_TIMEOUT = 2.0  # a live peer's answer about what it sees and runs
VOTE_TIMEOUT = 1.0  # a voter's answer to a claim's prepare or accept
MOVE_TIMEOUT = 900.0  # a restore on another node (LifeKeeper's REMOTETIMEOUT)
RELEASE_WAIT = 30.0  # a node an unconfirmed record names, asked to let a hierarchy go before a claim
RELEASE_TIMEOUT = 900.0  # the previous owner's remove, during a switchover (watched: its death ends the wait)
VERIFY_ROUNDS = 20  # remote_verify: how often to ask again, one heartbeat interval apart
CONVERGE_EVERY = 5  # heartbeat intervals between two anti-entropy passes
RETRY_FIRST, RETRY_MOST, RETRY_TRIES = 1.0, 30.0, 8  # anti-entropy retries of one hierarchy: back-off, bound
CONFIRM_FLAG = "confirmso!"  # + a node: a failover from that node waits for lk_confirmso (LifeKeeper's flag)
FENCE_TIMEOUT = 120.0
HALT = {"fastkill": ["systemctl", "poweroff", "--force", "--force"],
        "fastboot": ["systemctl", "reboot", "--force", "--force"]}  # fmt: skip


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
        self.quorum_lost = False
        #: Why a takeover did not happen, by hierarchy name (``hakeeper why`` shows it).
        self.blocked: dict[str, str] = {}
        #: Peers that said they are stopping (lkstop, SIGTERM): their silence moves nothing.
        self.departed: set[str] = set()
        #: Failovers waiting for lk_confirmso, by dead node.
        self.confirmations: dict[str, asyncio.Future[bool]] = {}
        #: When each peer was last declared DEAD (monotonic): its lease lapses takeover_delay later.
        self.dead_since: dict[str, float] = {}
        #: Hierarchies to try again (their restore failed): hierarchy -> (tries so far, next try, monotonic).
        self.retry: dict[str, tuple[int, float]] = {}
        self.box = BallotBox(lcd.path.parent)
        self.placement: PlacementStore = placement or Placement(
            self.me, self.box, _Voters(self), lambda: sorted({n.name for n in self.lcd.nodes()}), self._voters_needed
        )
        self._locks: dict[str, asyncio.Lock] = {}  # one move of a hierarchy at a time on this node
        self._stops: dict[str, asyncio.Task[bool]] = {}  # removals under way, by hierarchy
        self._retries: set[asyncio.Task[Any]] = set()  # anti-entropy retries and confirmations under way
        self._moving: set[str] = set()  # hierarchies being offered to other nodes (move_on)
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

    def owner(self, h: Hierarchy) -> Owner:
        """The ownership record as this node's voter last accepted it (a hint; claims read a majority)."""
        return self.placement.known(h.name)

    async def quorum(self) -> decide.Quorum:
        settings = self.lcd.settings()
        mode = str(settings["quorum_mode"])
        if mode != "tcp_remote":
            return decide.quorum(mode, self.view())
        hosts = parse_hosts(str(settings["quorum_hosts"]))
        timeout = float(settings["quorum_timeout"])
        reached = await asyncio.gather(*(_reaches(host, port, timeout) for host, port in hosts))
        return decide.quorum(mode, self.view(), hosts=len(hosts), hosts_reached=sum(reached))

    def _voters_needed(self, everyone: list[str]) -> int:
        """How many voters a claim needs: a majority of all; with quorum_mode tcp_remote or none, of the live ones.

        Without a majority of nodes as the quorum, the nodes a claimant reaches
        only order claims among themselves; the quorum hosts (or the
        administrator, with ``none``) decide which side acts, and fencing keeps
        the other from serving (required for two nodes with tcp_remote).
        """
        if str(self.lcd.settings()["quorum_mode"]) == "majority":
            return majority(len(everyone))
        return majority(len(self.view().alive & set(everyone)))

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

    def in_service(self, views: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
        found = {peer: [str(t) for t in answer.get("in_service", [])] for peer, answer in views.items()}
        found[self.me] = self.in_service_here()
        return found

    def quorum_advice(self) -> str | None:
        """What is wrong with the quorum setup for this cluster's size, if anything (logged at start, in why)."""
        settings = self.lcd.settings()
        mode = str(settings["quorum_mode"])
        if mode == "majority" and len(self.view().nodes) == 2:
            return (
                "two nodes with quorum_mode=majority: neither can outvote the other, so no failover happens; "
                "add a witness (hakeeper cluster join --witness), use quorum_mode=tcp_remote, or set "
                "quorum_mode=none to accept the risk of both serving at once"
            )
        if self._needs_fencing():
            return (
                "two nodes with quorum_mode=tcp_remote and no fence_command: with no third voter, nothing proves "
                "that the other node stopped, so no failover happens; set fence_command, or add a witness "
                "and use quorum_mode=majority"
            )
        return None

    # ------------------------------------------------------------------ membership events

    def noted(self, node: str, state: PathState) -> None:
        """A peer's liveness changed (called at once by hakeeperd, before node_dead / node_alive run)."""
        if state is PathState.DEAD:
            self.dead_since.setdefault(node, time.monotonic())
        else:
            self.dead_since.pop(node, None)

    async def node_dead(self, node: str) -> None:
        self.dead_since.setdefault(node, time.monotonic())
        await self.caught_up.wait()
        if node in self.departed:
            logger.info("%s stopped gracefully: nothing moves", node)
            return
        # Quorum first, at once: a node on the losing side of a partition must stop serving before the
        # others' takeover delay runs out.
        if not await self._have_quorum():
            return
        delay = float(self.lcd.settings()["takeover_delay"])
        await asyncio.sleep(delay)
        if self.membership().get(node) is not PathState.DEAD:
            logger.info("%s is back within the takeover delay (%g s): nothing moves", node, delay)
            return
        if not await self._confirmed(node):
            return
        if not await self._have_quorum():
            return
        views = await self._verified(node)
        if views is None:
            return
        decisions = decide.takeover(
            node, self.view(), self.hierarchies(), self.in_service(views), dead_paths=len(self.lcd.paths(node))
        )
        mine = [d for d in decisions if d.act is Act.RESTORE]
        for d in decisions:
            (logger.warning if d.act is not Act.ELSEWHERE else logger.info)("%s", d.sentence)
        if mine and self._needs_fencing():
            for d in mine:
                self.blocked[d.hierarchy.name] = (
                    "quorum_mode=tcp_remote with two nodes needs a fence_command: nothing else proves "
                    f"that {node} stopped"
                )
                logger.error("%s: takeover blocked: %s", d.hierarchy.name, self.blocked[d.hierarchy.name])
            return
        if mine and not await self._fence(node, [d.hierarchy.name for d in mine]):
            return
        await asyncio.gather(
            *(self._take(d.hierarchy, Claim.FAILOVER, reason=f"failover from {node}", failed=[node]) for d in mine)
        )

    def _needs_fencing(self) -> bool:
        settings = self.lcd.settings()
        return (
            str(settings["quorum_mode"]) == "tcp_remote"
            and len(self.view().nodes) == 2
            and not str(settings["fence_command"]).strip()
        )

    async def boot(self) -> None:
        """At start, once the peers are known: restore the hierarchies that should run and run nowhere.

        LifeKeeper's initialization: an AUTORES_ISP or INIT_ISP hierarchy in service
        on no live node is restored by its highest-priority live node (a cluster
        that boots together starts each once); INIT_OSU ones wait for the administrator.
        """
        settings = self.lcd.settings()
        # The hierarchies there were when hakeeperd started: those made since are the administrator's doing.
        start = [h.name for h in self.hierarchies() if self.lcd.resource(h.roots[0]).init is not Init.INIT_OSU]
        if not start:
            return
        await asyncio.sleep(float(settings["takeover_delay"]))
        q = await self.quorum()
        if not q.ok:
            logger.warning("no quorum at start (%s): nothing is brought in service", q.why)
            return
        views = await self.views()
        silent = self.unknown(views)
        if silent:
            logger.warning("at start: %s did not say what they run; the anti-entropy pass decides later",
                           ", ".join(silent))  # fmt: skip
            return
        found = self.hierarchies()
        owned = [h.name for h in found if self.owner(h).node == self.me]
        decisions = decide.at_start(self.view(), found, self.in_service(views), start=start, owned=owned)
        for d in decisions:
            if d.act is Act.RESTORE:
                logger.warning("%s", d.sentence)
        await asyncio.gather(
            *(self._take(d.hierarchy, Claim.START, reason="start") for d in decisions if d.act is Act.RESTORE)
        )

    async def membership_formed(self) -> None:
        """Wait (bounded by the detection budget and a second) until every peer is ALIVE or DEAD."""
        settings = self.lcd.settings()
        peers = {n for n in self.view().nodes if n != self.me}
        deadline = time.monotonic() + detection_budget(settings) + 1.0
        while time.monotonic() < deadline:
            if all(self.membership().get(p, PathState.UNKNOWN) is not PathState.UNKNOWN for p in peers):
                return
            await asyncio.sleep(float(settings["heartbeat_interval"]))
        unknown = sorted(p for p in peers if self.membership().get(p, PathState.UNKNOWN) is PathState.UNKNOWN)
        logger.warning("membership not formed after %.1f s: %s still UNKNOWN",
                       detection_budget(settings) + 1.0, ", ".join(unknown))  # fmt: skip

    async def _confirmed(self, dead: str) -> bool:
        """LifeKeeper's confirmso: with the flag ``confirmso!<dead>``, wait for ``lk_confirmso -y|-n -s <dead>``.

        Asked only where this node would take something over; after ``confirmso_timeout``
        the ``confirmso_default`` decides. The decision lock is not held meanwhile.
        """
        if not self.lcd.has_flag(f"{CONFIRM_FLAG}{dead}"):
            return True
        guess = decide.takeover(dead, self.view(), self.hierarchies(), {self.me: self.in_service_here()})
        names = [d.hierarchy.name for d in guess if d.act is Act.RESTORE]
        if not names:
            return True
        settings = self.lcd.settings()
        timeout, default = float(settings["confirmso_timeout"]), str(settings["confirmso_default"])
        waiting = asyncio.get_running_loop().create_future()
        self.confirmations[dead] = waiting
        logger.warning(
            "failover of %s from %s waits for confirmation: lk_confirmso -y|-n -s %s (after %g s: %s)",
            ", ".join(names), dead, dead, timeout, default,
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                yes: bool = await waiting
            why = f"{'confirmed' if yes else 'refused'} by lk_confirmso"
        except TimeoutError:
            yes = default == "proceed"
            why = f"not confirmed within {timeout:g} s (confirmso_default={default})"
        finally:
            self.confirmations.pop(dead, None)
        if not yes:
            for name in names:
                self.blocked[name] = f"failover from {dead} {why}"
        logger.warning("failover from %s %s", dead, why)
        return yes

    def confirm(self, dead: str, yes: bool) -> str:
        """``lk_confirmso -y|-n -s DEAD``: answer a failover that waits for confirmation."""
        waiting = self.confirmations.get(dead)
        if waiting is None or waiting.done():
            raise NotFound(f"no failover from {dead} waits for confirmation on {self.me}")
        waiting.set_result(yes)
        return f"failover from {dead} {'confirmed' if yes else 'refused'}"

    async def node_alive(self, node: str) -> None:
        self.departed.discard(node)
        self.dead_since.pop(node, None)
        await self.caught_up.wait()
        if self.quorum_lost:
            q = await self.quorum()
            if q.ok:
                self.quorum_lost = False
                logger.warning("quorum regained (%s); resources stay where they are", q.why)
        if self.quorum_lost:
            return
        found = [h for h in self.hierarchies() if h.switchback is Switchback.AUTOMATIC]
        if not found:
            return
        views = await self.views()
        in_service = self.in_service(views)
        for d in decide.switchback(self.me, self.view(), found, in_service):
            if d.act is Act.RESTORE:
                logger.warning("%s", d.sentence)
                held = decide.holders(d.hierarchy, self.view(), in_service)
                try:
                    await self._switch_here(d.hierarchy, reason="switchback", holders=held)
                except HakeeperError as exc:
                    logger.error("switchback of %s failed: %s", d.hierarchy.name, exc)

    async def _have_quorum(self) -> bool:
        q = await self.quorum()
        if q.ok:
            return True
        if not self.quorum_lost:
            self.quorum_lost = True
            await self._quorum_loss(q)
        else:
            logger.info("no quorum (%s): taking nothing over", q.why)
        return False

    async def _quorum_loss(self, q: decide.Quorum) -> None:
        settings = self.lcd.settings()
        action = str(settings["quorum_loss_action"])
        logger.error("quorum lost (%s): %s, taking nothing over", q.why, action)
        if action in HALT:
            proc = await asyncio.create_subprocess_exec(*HALT[action])
            await proc.wait()
            return
        running = self.runs_here()
        # The network face (virtual addresses) first, at once, then the rest: see hakeeper.cluster.lease.
        await lease.take_out_of_service(self.lcd, self.engine, reason=f"quorum lost ({q.why})")
        for name in running:  # when quorum is back, the anti-entropy pass brings back what nobody took over
            self.retry[name] = (0, time.monotonic())

    async def _verified(self, dead: str) -> dict[str, dict[str, Any]] | None:
        """The live peers' views, once none of them sees ``dead`` alive (remote_verify); None to stand down."""
        verify = self.lcd.settings()["witness_mode"] == "remote_verify"
        interval = float(self.lcd.settings()["heartbeat_interval"])
        for round_ in range(VERIFY_ROUNDS):
            views = await self.views(dead)
            seeing = sorted(p for p, a in views.items() if a.get("sees") == PathState.ALIVE.value)
            step = decide.verify(seeing, on=verify, round_=round_, rounds=VERIFY_ROUNDS)
            if step is decide.Verify.PROCEED:
                return views
            if step is decide.Verify.ABANDON:
                break
            logger.warning("PAUSING takeover from %s: %s still see(s) it alive", dead, ", ".join(seeing))
            await asyncio.sleep(interval)
            if self.membership().get(dead) is not PathState.DEAD:
                logger.info("%s is back: takeover cancelled", dead)
                return None
        logger.error("takeover from %s abandoned: %s still see(s) it alive", dead, ", ".join(seeing))
        return None

    async def _fence(self, node: str, names: list[str]) -> bool:
        command = str(self.lcd.settings()["fence_command"]).strip()
        if not command:
            return True
        argv = [word.replace("{node}", node) for word in shlex.split(command)]
        env = dict(os.environ, HAKEEPER_FENCE_NODE=node)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        except OSError as exc:
            return self._fence_failed(node, names, f"{argv[0]}: {exc.strerror or exc}")
        try:
            async with asyncio.timeout(FENCE_TIMEOUT):
                output, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return self._fence_failed(node, names, f"{argv[0]} took more than {FENCE_TIMEOUT:g} s")
        text = output.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0:
            detail = f": {text[-1]}" if text else ""
            return self._fence_failed(node, names, f"{argv[0]} exited {proc.returncode}{detail}")
        logger.warning("fenced %s with %s", node, argv[0])
        return True

    def _fence_failed(self, node: str, names: list[str], why: str) -> bool:
        reason = f"fencing {node} failed ({why}); takeover blocked"
        for name in names:
            self.blocked[name] = reason
        logger.error("%s: %s", ", ".join(names), reason)
        return False

    # ------------------------------------------------------------------ taking a hierarchy: claim, wait, restore

    def _lock(self, h: Hierarchy) -> asyncio.Lock:
        return self._locks.setdefault(h.name, asyncio.Lock())

    async def _take(
        self, h: Hierarchy, claim: Claim, *, reason: str, failed: Iterable[str] = (), allowed: Iterable[str] = ()
    ) -> bool:
        """Claim ``h``, restore it here; when the restore fails, move on to the next live nodes. True: it runs here."""
        async with self._lock(h):
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
        q = await self.quorum()
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
            q = await self.quorum()
            waiting = None if q.ok else f"no quorum ({q.why})"
        if waiting is None and self.owner(h).epoch > epoch:
            waiting = f"superseded by {self.owner(h)}"
        if waiting is not None:
            self.blocked[h.name] = waiting
            if self.owner(h).node == self.me:
                self._schedule_retry(h)  # ours, and out of service: the anti-entropy pass tries again
            return REFUSED, waiting, previous
        ok, why = await self._restore_here(h, reason)
        if not ok:
            self.box.let_go(h.name)
            return FAILED, why, previous
        if self.owner(h).epoch > epoch:  # claimed by another node while the restore ran
            self._stop_soon(h, f"superseded by {self.owner(h)}")
            return REFUSED, f"superseded by {self.owner(h)} while restoring", previous
        self.blocked.pop(h.name, None)
        self.retry.pop(h.name, None)
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
                                VOTE_TIMEOUT + RELEASE_WAIT)  # fmt: skip
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

        task = asyncio.create_task(self.placement.claim(h.name, change), name=f"confirm {h.name}")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

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
                        if failure is None:
                            return None
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

    async def _restore_here(self, h: Hierarchy, reason: str) -> tuple[bool, str]:
        for root in h.roots:
            report = await self.engine.restore(root, reason=reason)
            if not report.ok:
                return False, report.summary()
        return True, ""

    def _stop_soon(self, h: Hierarchy, reason: str) -> asyncio.Task[bool]:
        """Take ``h`` out of service here (one removal at a time per hierarchy; a second caller joins the first)."""
        task = self._stops.get(h.name)
        if task is None or task.done():
            task = asyncio.create_task(self._remove(h, reason), name=f"stop {h.name}")
            self._stops[h.name] = task
        return task

    async def _stop(self, h: Hierarchy, reason: str) -> bool:
        return await asyncio.shield(self._stop_soon(h, reason))

    async def _remove(self, h: Hierarchy, reason: str) -> bool:
        report = await self.engine.remove_all_of(set(h.members), reason=reason, target=h.name)
        if not report.ok:
            logger.error("ALERT: %s: taking it out of service here failed: %s", h.name, report.summary())
            return False
        self.box.let_go(h.name)
        return True

    def _schedule_retry(self, h: Hierarchy) -> None:
        tries, _at = self.retry.get(h.name, (0, 0.0))
        if tries >= RETRY_TRIES:
            self.blocked[h.name] = f"gave up after {tries} tries; waits for the administrator or a membership change"
            logger.error("ALERT: %s runs nowhere: %s", h.name, self.blocked[h.name])
            return
        pause = min(RETRY_MOST, RETRY_FIRST * 2**tries)
        self.retry[h.name] = (tries + 1, time.monotonic() + pause)
        logger.warning("%s: next try in %g s (try %d of %d)", h.name, pause, tries + 1, RETRY_TRIES)

    def next_try(self, name: str) -> str | None:
        """When the anti-entropy pass tries ``name`` again, for ``hakeeper why``."""
        if name not in self.retry:
            return None
        tries, at = self.retry[name]
        if tries >= RETRY_TRIES:
            return f"gave up after {tries} tries"
        return f"try {tries} of {RETRY_TRIES} in {max(0.0, at - time.monotonic()):.1f} s"

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
            self.retry.pop(h.name, None)
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
            self._schedule_retry(h)

    async def resource_failed(self, tag: str, reason: str) -> None:
        """Local recovery of ``tag`` failed (LocalRecovery's failover request): move its whole hierarchy."""
        await self.caught_up.wait()
        h = self.hierarchy_of(tag)
        if h is None:
            logger.error("ALERT: %s is out of service (OSF) and is extended to no other node: %s", tag, reason)
            return
        async with self._lock(h):
            q = await self.quorum()
            if not q.ok:
                logger.error("ALERT: %s failed here and there is no quorum (%s) to move it: %s", h.name, q.why, reason)
                return
            if not await self._stop(h, f"failover of {h.name}: {reason}"):
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
        views = await self.views()
        held = decide.holders(h, self.view(), self.in_service(views))
        if (
            held == [self.me]
            and not self.unknown(views)
            and self.owner(h).node == self.me
            and all(self.lcd.resource(t).state is State.ISP for t in h.members)
        ):
            return f"{h.name} is in service here already"
        logger.warning("%s: switchover to %s requested", h.name, self.me)
        await self._switch_here(h, reason="switchover", holders=held)
        return f"{h.name} in service on {self.me}"

    # ------------------------------------------------------------------ start-up and convergence

    async def reconcile(self) -> None:
        """At start, after catching up and once membership formed: keep here only what this node owns.

        For each hierarchy in service here, the majority's record says who owns it
        (a claim that changes nothing): another node (it took it over while this
        one was away) -> taken out of service here; nobody (it was restored before
        ownership records, or by hand) -> claimed; unknown (no majority answered)
        -> left to the anti-entropy pass.
        """
        await self.membership_formed()
        found = self.hierarchies()
        here = self.runs_here(found)
        for h in [h for h in found if h.name in here]:
            outcome = await self.placement.claim(h.name, lambda current: current)
            owner = outcome.previous
            if not outcome.ok or owner is None:
                logger.warning("%s is in service here; who owns it is unknown (%s)", h.name, outcome.why)
                continue
            if owner.node == self.me:
                await self.box.run(self.box.claimed, h.name, owner.epoch)
            elif owner.node is None:
                async with self._lock(h):
                    result, why, _ = await self._claim_and_restore(h, Claim.ADOPT, reason="in service at start")
                if result != RESTORED:
                    logger.warning("%s: in service here and not claimed: %s", h.name, why)
            else:
                logger.error("ALERT: %s is in service here but owned by %s: taking it out of service here", h.name,
                             owner)  # fmt: skip
                await self._stop(h, f"owned by {owner}")

    async def converge_forever(self) -> None:
        """The anti-entropy pass, every CONVERGE_EVERY heartbeat intervals, for as long as hakeeperd runs."""
        await self.caught_up.wait()
        while True:
            await asyncio.sleep(CONVERGE_EVERY * float(self.lcd.settings()["heartbeat_interval"]))
            try:
                await self.converge()
            except Exception:  # one bad pass must not end the next ones
                logger.exception("anti-entropy pass failed")

    async def converge(self) -> None:
        """Compare what the live nodes run with the ownership records: stop duplicates here, retry what runs nowhere."""
        if self.quorum_lost:
            return
        found = self.hierarchies()
        if not found:
            return
        views = await self.views()
        runs = {p: {str(k): int(v) for k, v in dict(a.get("runs") or {}).items()} for p, a in views.items()}
        runs[self.me] = self.runs_here(found)
        newest = {h.name: (self.box.slot(h.name).accepted, self.owner(h)) for h in found}
        for answer in views.values():  # the record of the highest ballot any voter knows (one may have missed it)
            for name, pair in dict(answer.get("records") or {}).items():
                with contextlib.suppress(ValueError, TypeError, IndexError, KeyError):
                    ballot, value = Ballot.from_json(pair[0]), Owner.from_json(pair[1])
                    if name in newest and ballot > newest[name][0]:
                        newest[name] = (ballot, value)
        records = {name: (value.epoch, value.node) for name, (_ballot, value) in newest.items()}
        now = time.monotonic()
        due = {n for n, (tries, at) in self.retry.items() if at <= now and tries < RETRY_TRIES}
        repairs = decide.converge(
            self.view(), found, runs, records, unknown=self.unknown(views), departed=self.departed, retry=due,
            waiting=set(self.retry) - due, held=self.box.won(),
        )  # fmt: skip
        for r in repairs:
            h = r.hierarchy
            busy = self._lock(h).locked() or h.name in self._moving
            if busy or (h.name in self._stops and not self._stops[h.name].done()):
                continue  # a move or a removal of it runs already
            if r.fix is Fix.STOP:
                logger.error("ALERT: %s", r.sentence)
                self._stop_soon(h, r.sentence.split(": ", 1)[1])
                continue
            logger.warning("%s", r.sentence)
            tries, _ = self.retry.get(h.name, (0, 0.0))
            self.retry[h.name] = (tries, float("inf"))  # not again until this try ends
            task = asyncio.create_task(self._retry(h, records[h.name][1]), name=f"retry {h.name}")
            self._retries.add(task)
            task.add_done_callback(self._retries.discard)

    async def _retry(self, h: Hierarchy, owner: str | None) -> None:
        """Claim and restore ``h`` (it runs nowhere); from a dead owner, as a failover does: confirmation, fencing."""
        failed = [owner] if owner and owner != self.me else []
        dead = owner if owner and owner != self.me and owner not in self.view().alive else None
        ready = dead is None or (await self._confirmed(dead) and await self._fence(dead, [h.name]))
        taken = ready and await self._take(h, Claim.RETRY, reason="retry", failed=failed)
        if not taken and (h.name not in self.retry or self.retry[h.name][1] == float("inf")):
            self._schedule_retry(h)

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
            if await self._stop(h, "lkstop: switch over"):
                await self.move_on(h, failed=[self.me], reason=f"{self.me} stops (shutdown strategy: switch over)")
            else:
                logger.error("%s stays here: taking it out of service failed", h.name)

    # ------------------------------------------------------------------ what peers ask

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

    async def on_ballot_prepare(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        key, ballot = _key(args), Ballot.from_json(args.get("ballot"))
        answer: Answer = await self.box.run(self.box.prepare, key, ballot)
        return answer.as_json()

    async def on_ballot_accept(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        key, ballot, value = _key(args), Ballot.from_json(args.get("ballot")), Owner.from_json(args.get("value"))
        check = tuple(str(n) for n in args.get("check") or [])
        answer = await self.accept(key, ballot, value, check=check)
        return answer.as_json()

    async def accept(self, key: str, ballot: Ballot, value: Owner, *, check: tuple[str, ...]) -> Answer:
        """This node as a voter: check the leases it is asked to, accept, stop an older copy here."""
        veto = None
        for node in check:
            veto = veto or await self.lease_veto(node)
        if veto is not None:
            logger.warning("%s: vetoed %s's claim: %s", key, value.node or "nobody", veto)
            return Answer(False, ballot, veto=veto)
        answer: Answer = await self.box.run(self.box.accept, key, ballot, value)
        if answer.ok:
            self.superseded(key, value)
        return answer

    async def lease_veto(self, owner: str | None) -> str | None:
        """Why this voter will not let ``owner``'s hierarchy be taken from it; None once its lease lapsed here.

        The lease lapses when this node has seen the owner DEAD for
        ``takeover_delay``: a node that a majority of voters saw dead that long has
        lost its quorum and run its quorum-loss action (or been fenced). The answer
        waits for that (bounded); an owner ALIVE or UNKNOWN here keeps its lease.
        """
        if owner is None:
            return None
        if owner == self.me:
            return f"{self.me} owns it and is alive"
        delay = float(self.lcd.settings()["takeover_delay"])
        interval = float(self.lcd.settings()["heartbeat_interval"])
        for _ in range(int(delay / interval) + 3):  # bounded: takeover_delay and a little more
            state = self.membership().get(owner, PathState.UNKNOWN)
            if state is not PathState.DEAD:
                return f"{self.me} sees {owner} {state.value}"
            since = self.dead_since.setdefault(owner, time.monotonic())
            left = since + delay - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(left, interval))
        return f"{owner} has not been DEAD for takeover_delay ({delay:g} s) here yet"

    def peer_runs(self, node: str, runs: dict[str, int]) -> None:
        """A peer's heartbeats say what it runs: one it runs under a newer epoch than here stops here at once."""
        here = self.runs_here()
        for h in self.hierarchies():
            theirs, mine = runs.get(h.name), here.get(h.name)
            if theirs is None or mine is None or theirs <= mine:
                continue
            logger.error("ALERT: %s: in service on %s under epoch %d (its heartbeats say), here under epoch %d: "
                         "taking it out of service here", h.name, node, theirs, mine)  # fmt: skip
            self._stop_soon(h, f"in service on {node} under epoch {theirs}")

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
        self._stop_soon(h, f"claimed by {value.node or 'nobody'} (epoch {value.epoch})")

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
        reason = f"{args.get('reason', 'switchover')} to {peer.node}"
        if not await self._stop(h, reason):
            raise SystemCallFailed(f"taking {h.name} out of service on {self.me} failed")
        return {}


RESTORED, REFUSED, FAILED = "restored", "refused", "failed"


class _Voters:
    """The voters of :class:`Placement`: this node's ballot box directly, the peers' through their hakeeperd."""

    def __init__(self, failover: Failover) -> None:
        self.failover = failover

    def _reachable(self, voter: str) -> None:
        if self.failover.membership().get(voter) is PathState.DEAD:
            raise CommunicationFailed(f"{voter} is DEAD")  # do not wait for a voter known to be silent

    async def prepare(self, voter: str, key: str, ballot: Ballot) -> Answer:
        f = self.failover
        if voter == f.me:
            answer: Answer = await f.box.run(f.box.prepare, key, ballot)
            return answer
        self._reachable(voter)
        data = await f.send(voter, "ballot_prepare", {"key": key, "ballot": ballot.as_json()}, VOTE_TIMEOUT)
        return Answer.from_json(data)

    async def accept(self, voter: str, key: str, ballot: Ballot, value: Owner, *, check: tuple[str, ...]) -> Answer:
        f = self.failover
        if voter == f.me:
            return await f.accept(key, ballot, value, check=check)
        self._reachable(voter)
        args = {"key": key, "ballot": ballot.as_json(), "value": value.as_json(), "check": list(check)}
        timeout = VOTE_TIMEOUT + float(f.lcd.settings()["takeover_delay"])  # a voter may wait for the lease
        return Answer.from_json(await f.send(voter, "ballot_accept", args, timeout))


def _same(epoch: int, me: str) -> Callable[[Owner], Owner]:
    """A change that writes the record again as it is, if it is still ``me``'s under ``epoch``."""

    def change(current: Owner) -> Owner:
        if (current.epoch, current.node) != (epoch, me):
            raise Refuse(f"superseded by {current}")
        return current

    return change


def _key(args: dict[str, Any]) -> str:
    key = args.get("key")
    if not isinstance(key, str) or not key:
        raise IllegalArgument("a ballot names its hierarchy")
    return key


def hierarchies_in(lcd: Lcd) -> list[Hierarchy]:
    """The LCD's extended hierarchies, each with the switchback of its first root."""
    switchbacks = {r.tag: r.switchback for r in lcd.resources()}
    return decide.hierarchies(lcd.edges(), lcd.equivalencies(), switchbacks)


def hierarchy_of(lcd: Lcd, tag: str) -> Hierarchy | None:
    """The extended hierarchy ``tag`` belongs to, if any."""
    return next((h for h in hierarchies_in(lcd) if tag in h.members), None)


async def _reaches(host: str, port: int, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
