"""Failover, switchover and switchback: hakeeperd acting on the decisions of :mod:`hakeeper.cluster.decide`.

When a peer is declared dead (every path DEAD), each survivor:

1. waits until it has caught up on configuration changes (``Daemon.caught_up``);
2. checks quorum; a node without it runs the quorum-loss action instead
   (``osu``: every resource out of service; ``fastkill`` / ``fastboot``: halt or
   reboot at once) and takes nothing over;
3. waits ``takeover_delay``, so that a peer on the losing side of a partition,
   whose detection may lag by a heartbeat interval, has stopped serving;
4. with ``witness_mode=remote_verify``, asks the other live nodes whether they
   see the node dead too, and pauses while one still sees it alive;
5. learns from the same answers where each hierarchy is in service, decides
   (:func:`decide.takeover`), fences the dead node if a ``fence_command`` is
   set (a failed fence blocks the takeover), and restores what falls to it.

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
from collections.abc import Awaitable, Callable
from typing import Any

from hakeeper.cluster import decide, lease
from hakeeper.cluster.decide import Act, Hierarchy, View
from hakeeper.comm.paths import PathState
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd, State
from hakeeper.db.settings import detection_budget, parse_hosts
from hakeeper.db.states import Init, Switchback
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument, NotFound, SystemCallFailed
from hakeeper.recovery.engine import Engine

logger = logging.getLogger(__name__)

Send = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]

VIEW_TIMEOUT = 2.0  # a live peer's answer about what it sees and runs
MOVE_TIMEOUT = 900.0  # a restore on another node (LifeKeeper's REMOTETIMEOUT)
VERIFY_ROUNDS = 20  # remote_verify: how often to ask again, one heartbeat interval apart
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
        self._decide = asyncio.Lock()  # one decision at a time on this node

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

    async def quorum(self) -> decide.Quorum:
        settings = self.lcd.settings()
        mode = str(settings["quorum_mode"])
        if mode != "tcp_remote":
            return decide.quorum(mode, self.view())
        hosts = parse_hosts(str(settings["quorum_hosts"]))
        timeout = float(settings["quorum_timeout"])
        reached = await asyncio.gather(*(_reaches(host, port, timeout) for host, port in hosts))
        return decide.quorum(mode, self.view(), hosts=len(hosts), hosts_reached=sum(reached))

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
        """Ask every live peer what it runs (and how it sees ``about``); peers that do not answer are left out."""
        answers = await self._each_live_peer("view", {"about": about}, "{peer} did not say what it runs")
        return {p: a for p, a in answers.items() if isinstance(a, dict)}

    def in_service(self, views: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
        found = {peer: [str(t) for t in answer.get("in_service", [])] for peer, answer in views.items()}
        found[self.me] = self.in_service_here()
        return found

    def quorum_advice(self) -> str | None:
        """What is wrong with the quorum setup for this cluster's size, if anything (logged at start, in why)."""
        mode = str(self.lcd.settings()["quorum_mode"])
        if mode == "majority" and len(self.view().nodes) == 2:
            return (
                "two nodes with quorum_mode=majority: neither can outvote the other, so no failover happens; "
                "add a witness (hakeeper cluster join --witness), use quorum_mode=tcp_remote, or set "
                "quorum_mode=none to accept the risk of both serving at once"
            )
        return None

    # ------------------------------------------------------------------ membership events

    async def node_dead(self, node: str) -> None:
        await self.caught_up.wait()
        if node in self.departed:
            logger.info("%s stopped gracefully: nothing moves", node)
            return
        # Quorum first, at once and outside the decision lock: a node on the losing side of a
        # partition must stop serving before the others' takeover delay runs out.
        if not await self._have_quorum():
            return
        delay = float(self.lcd.settings()["takeover_delay"])
        await asyncio.sleep(delay)
        if self.membership().get(node) is not PathState.DEAD:
            logger.info("%s is back within the takeover delay (%g s): nothing moves", node, delay)
            return
        if not await self._confirmed(node):
            return
        async with self._decide:
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
            if mine and not await self._fence(node, [d.hierarchy.name for d in mine]):
                return
            for d in mine:
                self.blocked.pop(d.hierarchy.name, None)
                await self._restore_or_move_on(d.hierarchy, failed=[node], reason=f"failover from {node}")

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
        peers = {n for n in self.view().nodes if n != self.me}
        deadline = time.monotonic() + detection_budget(settings) + 1.0
        while time.monotonic() < deadline:  # bounded: until every peer is ALIVE or DEAD
            if all(self.membership().get(p, PathState.UNKNOWN) is not PathState.UNKNOWN for p in peers):
                break
            await asyncio.sleep(float(settings["heartbeat_interval"]))
        await asyncio.sleep(float(settings["takeover_delay"]))
        found = self.hierarchies()
        async with self._decide:
            q = await self.quorum()
            if not q.ok:
                logger.warning("no quorum at start (%s): nothing is brought in service", q.why)
                return
            views = await self.views()
            for d in decide.at_start(self.view(), found, self.in_service(views), start=start):
                if d.act is Act.RESTORE:
                    logger.warning("%s", d.sentence)
                    await self._restore_or_move_on(d.hierarchy, failed=[], reason="start")

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
        await self.caught_up.wait()
        async with self._decide:
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
            for d in decide.switchback(self.me, self.view(), found, self.in_service(views)):
                if d.act is Act.RESTORE:
                    logger.warning("%s", d.sentence)
                    try:
                        await self._move_here(d.hierarchy, views, reason="switchback")
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
        # The network face (virtual addresses) first, at once, then the rest: see hakeeper.cluster.lease.
        await lease.take_out_of_service(self.lcd, self.engine, reason=f"quorum lost ({q.why})")

    async def _verified(self, dead: str) -> dict[str, dict[str, Any]] | None:
        """The live peers' views, once none of them sees ``dead`` alive (remote_verify); None to stand down."""
        verify = self.lcd.settings()["witness_mode"] == "remote_verify"
        interval = float(self.lcd.settings()["heartbeat_interval"])
        for _ in range(VERIFY_ROUNDS):
            views = await self.views(dead)
            seeing = sorted(p for p, a in views.items() if a.get("sees") == PathState.ALIVE.value)
            if not verify or not seeing:
                return views
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

    # ------------------------------------------------------------------ moving hierarchies

    async def _restore_here(self, h: Hierarchy, reason: str) -> tuple[bool, str]:
        for root in h.roots:
            report = await self.engine.restore(root, reason=reason)
            if not report.ok:
                return False, report.summary()
        return True, ""

    async def _restore_or_move_on(self, h: Hierarchy, *, failed: list[str], reason: str) -> None:
        ok, why = await self._restore_here(h, reason)
        if ok:
            logger.warning("%s in service on %s (%s)", h.name, self.me, reason)
            return
        logger.error("%s: restore on %s failed: %s", h.name, self.me, why)
        await self.move_on(h, failed=[*failed, self.me], reason=f"{reason}; restore failed on {self.me}")

    async def move_on(self, h: Hierarchy, *, failed: list[str], reason: str) -> bool:
        """Ask the next live nodes by priority, in turn, to restore ``h``; False when none could."""
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
            return True
        self.blocked[h.name] = f"no live node left to run it (tried {', '.join(tried)})"
        logger.error("ALERT: %s is out of service: no live node left to run it (tried %s)", h.name, ", ".join(tried))
        return False

    async def resource_failed(self, tag: str, reason: str) -> None:
        """Local recovery of ``tag`` failed (LocalRecovery's failover request): move its whole hierarchy."""
        await self.caught_up.wait()
        h = self.hierarchy_of(tag)
        if h is None:
            logger.error("ALERT: %s is out of service (OSF) and is extended to no other node: %s", tag, reason)
            return
        async with self._decide:
            q = await self.quorum()
            if not q.ok:
                logger.error("ALERT: %s failed here and there is no quorum (%s) to move it: %s", h.name, q.why, reason)
                return
            down = await self.engine.remove_all_of(set(h.members), reason=f"failover of {h.name}: {reason}",
                                                   target=h.name)  # fmt: skip
            if not down.ok:
                logger.error("ALERT: %s cannot move: taking it out of service here failed: %s", h.name, down.summary())
                return
            await self.move_on(h, failed=[self.me], reason=f"{tag} failed on {self.me}: {reason}")

    async def _move_here(self, h: Hierarchy, views: dict[str, dict[str, Any]], *, reason: str) -> None:
        """Switchover or switchback: the holder takes ``h`` out of service, then this node restores it."""
        held = decide.holders(h, self.view(), self.in_service(views))
        holder = next((n for n in held if n != self.me), None)
        if holder is not None:
            try:
                await self.send(holder, "release", {"roots": list(h.roots), "reason": reason}, MOVE_TIMEOUT)
            except (HakeeperError, TimeoutError) as exc:
                raise CommunicationFailed(f"{h.name}: {holder} did not take it out of service: {exc}") from None
        ok, why = await self._restore_here(h, f"{reason} from {holder or 'nowhere'}")
        if ok:
            logger.warning("%s in service on %s (%s from %s)", h.name, self.me, reason, holder or "nowhere")
            return
        logger.error("%s: restore on %s failed: %s", h.name, self.me, why)
        back = [holder] if holder else []
        if not back or not await self.move_on(h, failed=[n for n in h.priorities if n not in back], reason=why):
            raise SystemCallFailed(f"{h.name}: restore on {self.me} failed: {why}")
        raise SystemCallFailed(f"{h.name}: restore on {self.me} failed ({why}); back in service on {holder}")

    async def switchover(self, tag: str) -> str:
        """Move ``tag``'s hierarchy here: remove it where it runs, then restore it here."""
        await self.caught_up.wait()
        h = self.hierarchy_of(tag)
        if h is None:
            raise NotFound(f"{tag!r} is not part of a hierarchy extended to another node")
        async with self._decide:
            views = await self.views()
            held = decide.holders(h, self.view(), self.in_service(views))
            if held == [self.me] and all(self.lcd.resource(t).state is State.ISP for t in h.members):
                return f"{h.name} is in service here already"
            logger.warning("%s: switchover to %s requested", h.name, self.me)
            await self._move_here(h, views, reason="switchover")
            return f"{h.name} in service on {self.me}"

    async def reconcile(self) -> None:
        """At start, after catching up: a hierarchy in service here and on a live peer is taken out of service here.

        The peer took it over while this node was away (its hakeeperd dead, its
        paths cut); it is the one the cluster chose, so this copy goes.
        """
        here = set(self.in_service_here())
        if not here:
            return
        views = await self.views()
        in_service = self.in_service(views)
        for h in [h for h in self.hierarchies() if h.members & here]:
            others = [n for n in decide.holders(h, self.view(), in_service) if n != self.me]
            if not others:
                continue
            logger.error("ALERT: %s is in service on %s too: taking it out of service here", h.name, others[0])
            await self.engine.remove_all_of(set(h.members), reason=f"in service on {others[0]}", target=h.name)

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
        here = set(self.in_service_here())
        for h in [h for h in self.hierarchies() if h.members & here]:
            down = await self.engine.remove_all_of(set(h.members), reason="lkstop: switch over", target=h.name)
            if down.ok:
                await self.move_on(h, failed=[self.me], reason=f"{self.me} stops (shutdown strategy: switch over)")
            else:
                logger.error("%s stays here: taking it out of service failed: %s", h.name, down.summary())

    # ------------------------------------------------------------------ what peers ask

    async def on_leaving(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        self.departed.add(peer.node)
        logger.info("%s says it is stopping: its silence will move nothing", peer.node)
        return {}

    async def on_view(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        about = args.get("about")
        sees = self.membership().get(str(about), PathState.UNKNOWN).value if about else None
        return {"in_service": self.in_service_here(), "sees": sees}

    def _roots(self, args: dict[str, Any]) -> Hierarchy:
        roots = args.get("roots")
        if not isinstance(roots, list) or not roots:
            raise IllegalArgument("a takeover or release names the roots of a hierarchy")
        h = self.hierarchy_of(str(roots[0]))
        if h is None:
            raise NotFound(f"{roots[0]!r} is not part of an extended hierarchy on {self.me}")
        return h

    async def on_takeover(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        h = self._roots(args)
        q = await self.quorum()
        if not q.ok:
            raise CommunicationFailed(f"{self.me} has no quorum ({q.why})")
        reason = str(args.get("reason", f"failover from {peer.node}"))
        ok, why = await self._restore_here(h, reason)
        if not ok:
            raise SystemCallFailed(f"restore on {self.me} failed: {why}")
        self.blocked.pop(h.name, None)
        return {}

    async def on_release(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        h = self._roots(args)
        reason = f"{args.get('reason', 'switchover')} to {peer.node}"
        report = await self.engine.remove_all_of(set(h.members), reason=reason, target=h.name)
        if not report.ok:
            raise SystemCallFailed(report.summary())
        return {}


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
