"""hakeeperd: the node daemon, first form — monitoring, events, local recovery, and the commands.

One asyncio process per node. It owns the LCD (commands sent to its Unix
socket are run by it, so it is the only writer), runs the quickCheck
scheduler, receives events, and runs local recovery. Its long-running services
(the quickCheck scheduler, the heartbeat and guard links, the message listener,
the catch-up and anti-entropy loops) run under a :class:`~hakeeper.supervise.Supervisor`
that restarts a dead one or, for those the node cannot live without, ends
hakeeperd (see hakeeper.supervise for which and why).

It shuts down in stages on SIGTERM or ``lkstop``: stop accepting commands, let
running work finish within ``drain_timeout`` then cancel it, take resources out
of service only when asked to (``lkstop`` without ``-f``), close the LCD. After a
fatal failure it exits with :data:`FATAL_EXIT` in another order (``_die``): stop
acting, let the guard take this node's resources out of service, and only then
let its heartbeats stop, so that the peers take over from a node that serves
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import pwd
import signal
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hakeeper.cluster import decide, lease
from hakeeper.cluster.configsync import ConfigSync, thread_replicator
from hakeeper.cluster.credentials import Credentials
from hakeeper.cluster.extend import Adopter
from hakeeper.cluster.failover import Failover
from hakeeper.cluster.update import Reviser
from hakeeper.comm.identity import identity_exists, load_identity
from hakeeper.comm.link import HeartbeatLink
from hakeeper.comm.paths import PathState
from hakeeper.comm.rpc import RemoteError, RpcServer, call, drop_kept
from hakeeper.comm.tls import Peer, Refusal
from hakeeper.control import MAX_REQUEST, Answer, decode_request, socket_path
from hakeeper.db import Lcd, Resource, State
from hakeeper.db.aio import Threaded
from hakeeper.db.mirrors import MIRROR_CHANGES
from hakeeper.db.model import as_reason
from hakeeper.db.settings import SHUTDOWN_STRATEGIES, daemon_busy_timeout
from hakeeper.db.states import Init
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument, SystemCallFailed
from hakeeper.events.alarm import Event, run_handlers
from hakeeper.events.local import Limits, LocalRecovery
from hakeeper.events.monitor import Monitor
from hakeeper.guard import GuardLink, take_down
from hakeeper.kits.base import KitContext, Result
from hakeeper.kits.registry import Kits, register_kits
from hakeeper.layout import PID_NAME, ensure_state_dir
from hakeeper.notify import Notifier
from hakeeper.recovery import plan
from hakeeper.recovery.engine import DEFAULT_MAX_PARALLEL, Engine
from hakeeper.recovery.engine import call as kit_call
from hakeeper.replication.control import MirrorControls, NoReplication
from hakeeper.replication.handoff import Handoff
from hakeeper.replication.supervisor import ReplicationProcesses, Wanted
from hakeeper.supervise import FATAL, FAULTS_ENV, RESTART, Failure, Service, Supervisor

logger = logging.getLogger(__name__)

T = TypeVar("T")

CATCH_UP_EVERY = 5.0  # besides at once when a node comes back
STAGE_REPORT, STAGE_REPORTS = 10.0, 60  # a stop stage that takes long says so every 10 s (10 minutes at most)
SYNC_TIMEOUT = 30.0  # a participant's answer to prepare / commit / abort
REMOTE_TIMEOUT = 900.0  # LifeKeeper's REMOTETIMEOUT: a command on another node may take this long
FATAL_EXIT = 70  # EX_SOFTWARE (sysexits.h): a service hakeeperd cannot live without failed
FATAL_STOP = 5.0  # on a fatal exit: how long the services and running work may take to end once cancelled
FATAL_GUARD_WAIT = 120.0  # ... and the guard's remove actions; past it the heartbeats stop all the same


@dataclass(frozen=True)
class Config:
    root: Path
    recover_attempts: int = 3
    recover_window: float = 300.0
    monitor_refresh: float = 1.0
    max_parallel: int = DEFAULT_MAX_PARALLEL
    drain_timeout: float = 30.0


Dispatch = Callable[["Daemon", str, list[str], str], Awaitable[Answer]]


class Daemon:
    """The services of one node, and the loop that runs them."""

    def __init__(self, config: Config, dispatch: Dispatch) -> None:
        self.config = config
        #: systemd's notify socket and watchdog (Type=notify), taken out of the environment the children inherit.
        self.notifier = Notifier.from_environ()
        self.root = ensure_state_dir(config.root)
        self.dispatch = dispatch
        self.lcd = Lcd.open(self.root, actor="hakeeperd", verify=True)  # a damaged LCD is refused at start
        #: The LCD off the event loop: a writer thread (group commit) and a reader thread (see hakeeper.db.aio).
        #: ``self.lcd`` stays for the loop's cheap reads (settings, paths, nodes), which WAL never makes wait.
        self.db = Threaded(self.lcd, busy_timeout=daemon_busy_timeout(self.lcd.settings()))
        try:
            self.db.start()
        except BaseException:
            self.lcd.close()
            raise
        self.lcd.forbid_writes()  # every write goes through self.db, off the loop
        self.node = self.lcd.local_node
        self.kits = Kits(KitContext(self.root, self.node))
        self.engine = Engine(self.lcd, self.kits, max_parallel=config.max_parallel, db=self.db)
        #: Set once this node has asked every reachable peer for the changes it missed (see _join_in).
        self.caught_up = asyncio.Event()
        self.failover = Failover(self.lcd, self.engine, self._send, lambda: self.membership, self.caught_up)
        self.recovery = LocalRecovery(
            self.engine,
            limits=Limits(config.recover_attempts, config.recover_window),
            failover=self.failover.resource_failed,
            refusal=self.failover.quorum.refusal,
        )
        self.monitor = Monitor(self.engine, self.on_check_failure, refresh=config.monitor_refresh)
        self.membership: dict[str, PathState] = {}
        self.identity = load_identity(self.root) if identity_exists(self.root) else None
        #: The heartbeat process tells the guard to cut when the node hears no majority and this loop is frozen.
        self._cut_r, self._cut_w = os.pipe() if self.identity else (-1, -1)
        self.heartbeats = (
            HeartbeatLink(
                self.root,
                self.lcd,
                self.on_node,
                guard_fd=self._cut_w,
                runs=self.failover.runs_here,
                on_runs=self.failover.peer_runs,
                face=lease.Face(self.lcd),
                on_cut=self.failover.quorum.direct_cuts.heard,
            )
            if self.identity
            else None
        )
        self.sync = ConfigSync(self.lcd, self._send, self._membership_of, self._config_changed, db=self.db)
        #: The revocation list (checked in every handshake), renewals, expiry warnings: a cluster's only.
        self.credentials = (
            Credentials(self.root, self.identity, self._send, self._peers) if self.identity is not None else None
        )
        if self.credentials is not None:
            self.credentials.changed = drop_kept  # connections kept to a node just revoked go
        self.adopter = Adopter(self.lcd, self.kits, db=self.db)
        #: The replication processes of the mirrored volumes of this node (a cluster's only: the data
        #: connections use its certificates); hakeeper mirror's verbs reach them through mirror_controls.
        self.replication = ReplicationProcesses(self.root, self._mirrored_here) if self.identity else None
        self.mirror_controls: MirrorControls = self.replication or NoReplication()
        self.reviser = Reviser(self.lcd, self.kits, db=self.db)
        handlers = {
            "run": self._rpc_run,
            "prepare": self.sync.on_prepare,
            "commit": self.sync.on_commit,
            "abort": self.sync.on_abort,
            "catch_up": self.sync.on_catch_up,
            **self.failover.handlers(),
            "adopt": self.adopter.on_adopt,
            "unadopt": self.adopter.on_unadopt,
            "stage_revision": self.reviser.on_stage,
            "settle_revision": self.reviser.on_settle,
            **(self.credentials.handlers() if self.credentials else {}),
            **Handoff(self.db, self.node, self.mirror_controls).handlers(),  # hakeeper mirror switchover
        }
        self.rpc = (
            RpcServer(self.identity, handlers, revoked=self.credentials.refusal)
            if self.identity and self.credentials
            else None
        )
        #: In a cluster, the guard stops this node serving if hakeeperd dies or hangs (see hakeeper.guard).
        self.guard = (
            GuardLink(self.root, lambda: float(self.lcd.settings()["guard_timeout"]), cut_fd=self._cut_r)
            if self.identity
            else None
        )
        #: The long-running services (see _services and hakeeper.supervise); a fatal failure stops hakeeperd.
        self.services = Supervisor(lambda _failure: self._stopping.set(), faults=os.environ.get(FAULTS_ENV) == "1")
        self._stopping = asyncio.Event()
        self._take_out_of_service = False
        self._work: set[asyncio.Task[Any]] = set()
        self._clients: set[asyncio.Task[Any]] = set()  # commands from the control socket under way
        self._pid_file: int | None = None

    # ------------------------------------------------------------------ work

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start tracked background work (the daemon drains it at shutdown)."""
        task = asyncio.create_task(coro, name=name)
        self._work.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._work.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    def _services(self) -> list[Service]:
        """The long-running services of this node, each with its policy when it dies (why: hakeeper.supervise)."""
        services = [Service("lcd-writer", self.db.watch, FATAL), Service("monitor", self.monitor.run, RESTART)]
        if self.notifier.watchdog_timeout is not None:  # under systemd with WatchdogSec=
            services.append(Service("watchdog", lambda: self.notifier.watchdog(self._status), RESTART))
        if self.guard is not None:
            services.append(Service("guard", self.guard.run, FATAL))
        if self.heartbeats is not None:
            services.append(Service("heartbeats", self.heartbeats.run, FATAL))
        if self.replication is not None:
            services.append(Service("replication", self.replication.run, RESTART))
        if self.credentials is not None:  # a warning a day before the certificate expires: nothing depends on it
            services.append(Service("certificate expiry", self.credentials.watch_expiry, RESTART))
        if self.rpc is not None:
            rpc = self.rpc
            services += [
                Service("messages", lambda: self._listen_for_messages(rpc), RESTART),
                Service("catch-up", self._catch_up, RESTART),
                Service("anti-entropy", self.failover.anti.forever, RESTART),
            ]
        return services

    async def _listen_for_messages(self, rpc: RpcServer) -> None:
        """Keep a message listener at the local address of every path (paths may change)."""
        try:
            while True:
                settings, paths = await self.db.read(lambda lcd: (lcd.settings(), lcd.paths()))
                port = int(settings["comm_port"])
                await rpc.listen({(p.local, port) for p in paths})
                await asyncio.sleep(self.config.monitor_refresh)
        finally:
            rpc.close()

    async def _catch_up(self) -> None:
        """Now and then, tell every node the committed changes it has not confirmed.

        Nodes that are not ALIVE are tried too, quietly: one that missed a change
        of heartbeat timing stays DEAD to the others until it is told.
        """
        while True:
            await asyncio.sleep(CATCH_UP_EVERY)
            for node in sorted({n.name for n in await self.db.read(Lcd.nodes)} - {self.node}):
                if await self.db.read(functools.partial(Lcd.outbox, node=node)):
                    await self.sync.redeliver(node, quiet=self.membership.get(node) is not PathState.ALIVE)
            if self.credentials is not None:
                await self.credentials.retry()

    async def _join_in(self) -> None:
        """At start, before taking part in any decision: ask every peer for the changes this node missed."""
        peers = sorted({n.name for n in self.lcd.nodes()} - {self.node})
        results = await asyncio.gather(*(self._pull(node, quiet=True) for node in peers))
        heard = [node for node, ok in zip(peers, results, strict=True) if ok]
        missing = [node for node in peers if node not in heard]
        unreachable = f"; not reachable: {', '.join(missing)}" if missing else ""
        logger.info("caught up with %s%s", ", ".join(heard) or "no peer", unreachable)
        if self.credentials is not None:
            await self.credentials.exchange_all()
        advice = self.failover.quorum.advice()
        if advice:
            logger.warning("%s", advice)
        try:
            await self.failover.anti.reconcile()
        finally:
            self.caught_up.set()
        await self.failover.boot()

    async def _load_kits(self) -> None:
        """Import the kits of this node's resources at start, not in the first takeover that needs one.

        Importing a kit can take longer than the rest of its restore: the IP kit's pyroute2 takes ~0.15 s.
        The application and type of a kit installed since the LCD last looked are registered too.
        """
        await self.db.write(lambda lcd: register_kits(lcd, self.root))
        for app, rtype in sorted({(r.app, r.type) for r in await self.db.read(Lcd.resources)}):
            self.kits.find(app, rtype)

    async def _reconcile(self) -> None:
        """Before monitoring starts: what the LCD says is in service here must really run here (after a crash, a boot).

        Each resource recorded in service is asked by its quickCheck; one that
        does not run is marked OSU. Then whatever is ISP above a resource not in
        service goes out of service too, even if its own check said running: a
        check that reaches a switchable address may have been answered by the
        node that serves it now (docs/kits.md), and a parent never stays ISP
        over a child that is not.
        """
        claimed = [r for r in await self.db.read(Lcd.resources) if r.state.in_service]
        said_running: set[str] = set()

        async def check(resource: Resource) -> None:
            try:
                result = await kit_call(self.engine.kit_of(resource), "quick_check", resource)
            except HakeeperError as exc:
                result = Result.failed(str(exc))
            if result.ok:
                said_running.add(resource.tag)
                logger.info("%s is %s and runs", resource.tag, resource.state.name)
                return
            why = result.message or (result.health.value if result.health else "not running")
            why = as_reason(f"not running when hakeeperd started ({why})")
            await self.engine.mark(resource.tag, State.OSU, why)  # -> OSU

        await asyncio.gather(*(check(r) for r in claimed))
        summaries, edges = await self.db.read(lambda lcd: (lcd.summaries(), lcd.edges()))
        states = {tag: state for tag, _id, state, _reason in summaries}
        above = plan.parents_to_stop(edges, states)
        for tag, below in sorted(above.items()):
            if tag in said_running:
                logger.warning(
                    "%s: its quickCheck said running, but %s below it is not running here; "
                    "a quickCheck must check this node's own instance (see docs/kits.md)", tag, below,
                )  # fmt: skip
        if above:
            why = "not running when hakeeperd started: {} below it is not running here"
            reasons = {tag: why.format(below) for tag, below in above.items()}
            await self.engine.correct(reasons=reasons)

    def _lone_at_start(self) -> list[decide.Decision]:
        """Which hierarchies extended to no other node come in service at start (AUTORES_ISP, INIT_ISP).

        Read once, before any command could add one (those are the administrator's doing).
        An extended hierarchy waits for quorum and its ownership record (``Failover.boot``);
        one that no other node has cannot run anywhere else, so it waits for nothing, as
        LifeKeeper brings a single-node hierarchy in service when it starts.
        """
        resources = {r.tag: r for r in self.lcd.resources()}
        found = decide.lone(self.lcd.edges(), resources, self.lcd.equivalencies(), self.node)
        start = [h.name for h in found if resources[h.roots[0]].init is not Init.INIT_OSU]
        running = [tag for tag, r in resources.items() if r.state.in_service]
        return decide.lone_at_start(self.node, found, running, start=start)

    async def _start_lone(self, decisions: list[decide.Decision]) -> None:
        for d in decisions:
            logger.warning("%s", d.sentence)
            for root in d.hierarchy.roots:
                report = await self.engine.restore(root, reason="start")
                if not report.ok:  # no other node to try: it waits for the administrator
                    logger.error("%s: restore at start failed: %s", d.hierarchy.name, report.summary())
                    break

    async def _pull(self, node: str, *, quiet: bool = False) -> bool:
        try:
            async with asyncio.timeout(SYNC_TIMEOUT):
                await self.sync.catch_up_from(node)
        except (HakeeperError, TimeoutError) as exc:
            (logger.debug if quiet else logger.warning)("catch-up from %s: %s", node, exc)
            return False
        return True

    async def _mirrored_here(self) -> Wanted:
        """The mirrored volumes this node belongs to, each with what its process reads at start: the definition,
        the paths to the mirror's other nodes and the ports (a change restarts the process)."""

        def read(r: Lcd) -> Wanted:
            port, paths = r.settings()["comm_port"], r.paths()
            return {
                m.volume: (m, port, tuple(p for p in paths if p.node in m.nodes))
                for m in r.mirrors()
                if self.node in m.nodes
            }

        return await self.db.read(read)

    def _config_changed(self, op: str) -> None:
        if op in MIRROR_CHANGES and self.replication is not None:
            self.replication.changed()  # start, stop or restart the volume's replication process now
        if op != "set_settings":
            return
        self.db.set_busy_timeout(daemon_busy_timeout(self.lcd.settings()))  # guard_timeout may have changed
        if self.heartbeats is not None:
            self.heartbeats.reconfigure()  # the new timing at once, not at the next refresh
        if op == "set_settings" and self.guard is not None:
            self.guard.reconfigure()  # a new guard_timeout at once, not at the next feed (up to a quarter later)

    async def _rpc_run(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Another node asks this one to run a command (``-d NODE`` and lcdremexec there)."""
        command, argv = args.get("command"), args.get("argv")
        if not isinstance(command, str) or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
            raise IllegalArgument("a run request needs a command and its argv")
        if command.startswith("_") or command in ("lkstart", "lkstop"):
            raise IllegalArgument(f"{command} cannot be run from another node")
        target = destination(argv)
        if target not in (None, self.node):
            raise IllegalArgument(f"this is node {self.node}, not {target}: requests are not passed on")
        answer = await self.dispatch(self, command, argv, f"{args.get('user', '?')}@{peer.node}")
        return {"code": answer.code, "out": answer.out, "err": answer.err}

    async def run_remote(self, node: str, command: str, argv: list[str], actor: str) -> Answer:
        """Run a command on another node of the cluster, over its paths in priority order."""
        if self.identity is None:
            raise CommunicationFailed("this node has no cluster identity (see: hakeeper cluster init / join)")
        paths = self.lcd.paths(node)
        port = int(self.lcd.settings()["comm_port"])
        request = {"command": command, "argv": argv, "user": actor}
        try:
            result = await call(self.identity, paths, port, "run", request, timeout=REMOTE_TIMEOUT,
                                revoked=self._refusal)  # fmt: skip
        except RemoteError as exc:
            return Answer(exc.code, err=f"{command}: {exc}\n")
        return Answer(int(result["code"]), str(result.get("out", "")), str(result.get("err", "")))

    async def request(self, node: str, op: str, args: dict[str, Any], *, timeout: float) -> Any:
        """Send ``op`` to ``node``'s hakeeperd and return its result (RemoteError when it refuses)."""
        return await self._send(node, op, args, timeout)

    async def _send(self, node: str, op: str, args: dict[str, Any], timeout: float = SYNC_TIMEOUT) -> Any:
        if self.identity is None:
            raise CommunicationFailed("this node has no cluster identity (see: hakeeper cluster init / join)")
        port = int(self.lcd.settings()["comm_port"])
        return await call(self.identity, self.lcd.paths(node), port, op, args, timeout=timeout, revoked=self._refusal)

    @property
    def _refusal(self) -> Refusal | None:
        return self.credentials.refusal if self.credentials is not None else None

    def _peers(self) -> list[str]:
        return sorted({n.name for n in self.lcd.nodes()} - {self.node})

    async def revoked_here(self) -> str:
        """``hakeeper cluster revoke`` ran here: the list is read again and told to every peer."""
        if self.credentials is None:
            raise CommunicationFailed("this node has no cluster identity (see: hakeeper cluster init / join)")
        return await self.credentials.revoked_here()

    async def renewed_here(self) -> str:
        """``hakeeper cluster renew`` replaced this node's certificate: new connections show the new one."""
        if self.credentials is None or self.rpc is None:
            raise CommunicationFailed("this node has no cluster identity (see: hakeeper cluster init / join)")
        self.identity = await self.credentials.reload_identity()
        self.rpc.reload_certificate()
        cert = self.identity.certificate
        logger.info("this node's certificate was renewed (serial %x, valid until %s): new connections show it",
                    cert.serial_number, f"{cert.not_valid_after_utc:%Y-%m-%d}")  # fmt: skip
        return f"hakeeperd shows the new certificate from its next connection on (serial {cert.serial_number:x})"

    def _membership_of(self, node: str) -> PathState:
        return self.membership.get(node, PathState.UNKNOWN)

    def check_reachable(self, node: str) -> None:
        """Raise CommunicationFailed when ``node`` cannot be asked anything: no identity here, or DEAD."""
        if self.identity is None:
            raise CommunicationFailed("this node has no cluster identity (see: hakeeper cluster init / join)")
        if self._membership_of(node) is PathState.DEAD:
            raise CommunicationFailed(f"{node} cannot be reached (all paths DEAD)")

    def replicator_for(self, actor: str) -> Callable[[Lcd], Any]:
        """How a command run in a worker thread replicates its configuration changes (see configsync)."""
        loop = asyncio.get_running_loop()
        return lambda lcd: thread_replicator(self.sync, loop, lcd, actor)

    async def change_replicated(self, actor: str, change: Callable[[Lcd], T]) -> T:
        """Make a configuration change in a worker thread, replicated to the nodes it concerns (see configsync)."""
        replicator = self.replicator_for(actor)

        def work() -> T:
            with Lcd.open(self.root, actor=actor) as lcd:
                lcd.replicator = replicator(lcd)
                return change(lcd)

        return await asyncio.to_thread(work)

    def on_node(self, node: str, state: PathState) -> None:
        """A peer's liveness changed (all paths DEAD, or one ALIVE again): catch up, fail over, switch back."""
        self.membership[node] = state
        self.failover.noted(node, state)
        if state is PathState.ALIVE and self.identity is not None:
            self.spawn(self._pull(node), f"catch-up from {node}")  # it asks us likewise
            if self.credentials is not None:
                self.spawn(self.credentials.exchange(node, quiet=True), f"revocations with {node}")
            self.spawn(self.failover.node_alive(node), f"{node} alive")
        elif state is PathState.DEAD:
            self.spawn(self.failover.node_dead(node), f"{node} dead")

    def on_check_failure(self, resource: Resource, result: Result, ticket: int) -> None:
        """A quickCheck that started at ``ticket`` failed: local recovery judges whether it still counts."""
        message = f"quickCheck: {result.message or (result.health.value if result.health else 'failed')}"
        self.spawn(
            self.recovery.failed(resource.tag, message, result.policy, ticket=ticket), f"recovery of {resource.tag}"
        )

    async def send_event(self, event: Event) -> str:
        """Accept an event: run its handlers and, for a resource in service here, local recovery."""
        logger.warning("event %s", event.describe())
        told = dataclasses.replace(event, advisory=event.tag in self.engine.busy)  # handlers get -A then
        self.spawn(run_handlers(self.root, told, self.node), f"handlers of {event.describe()}")
        if event.system not in ("", self.node):
            return f"event {event.describe()}: it happened on {event.system}, not here; handlers only"
        known = {r.tag: r for r in await self.db.read(lambda lcd: lcd.resources(tag=event.tag))}
        resource = known.get(event.tag)
        if resource is None:
            return f"event {event.describe()}: no resource {event.tag!r} here; handlers only"
        if resource.state is not State.ISP:
            return f"event {event.describe()}: {event.tag} is {resource.state.name}; no recovery"
        busy = await self.engine.stale(event.tag, self.engine.ticket())
        if busy is not None:  # a restore, remove or recovery runs on it: the event speaks of that
            return f"event {event.describe()}: {event.tag}: {busy}; no recovery"
        self.spawn(self.recovery.failed(event.tag, f"{event.cls}/{event.event}"), f"recovery of {event.tag}")
        return f"event {event.describe()}: local recovery of {event.tag} started"

    def stop(self, *, take_out_of_service: bool = False) -> None:
        self._take_out_of_service = self._take_out_of_service or take_out_of_service
        self._stopping.set()

    # ------------------------------------------------------------------ the control socket

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._clients.add(me)
        try:
            actor = _peer_user(writer)
            try:
                line = await reader.readline()
                command, argv, _extra = decode_request(line)
            except (ValueError, asyncio.LimitOverrunError) as exc:
                logger.warning("control socket: malformed request from %s refused: %s", actor, exc)
                answer = Answer(2, err=f"hakeeperd: malformed request: {exc}\n")
            else:
                answer = await self.dispatch(self, command, argv, actor)
            writer.write(answer.encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # one bad client must not take the server down
            logger.exception("control socket: request failed")
        finally:
            self._clients.discard(me)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # ------------------------------------------------------------------ life cycle

    def _lock(self) -> None:
        path = self.root / PID_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode().strip() or "?"
            os.close(fd)
            raise SystemCallFailed(f"hakeeperd runs already on {self.root} (pid {other})") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._pid_file = fd

    async def run(self) -> int:
        """Serve until stopped; returns the exit code."""
        self._lock()
        sock = socket_path(self.root)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()  # we hold the lock: any socket file left is stale
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self._client, path=str(sock), limit=MAX_REQUEST)
        finally:
            os.umask(old_umask)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        await self._load_kits()
        await self._reconcile()
        if self.services.faults:
            logger.warning("fault injection is on (%s=1, for tests): '_fault SERVICE' makes a service fail", FAULTS_ENV)
        lone = self._lone_at_start()
        async with self.services:  # every service has ended when this block ends
            for service in self._services():
                self.services.start(service)
            if lone:
                self.spawn(self._start_lone(lone), "start of hierarchies extended to no other node")
            if self.rpc is not None:
                self.spawn(self._join_in(), "catch-up at start")
            else:
                self.caught_up.set()
            logger.info("hakeeperd serving node %s on %s", self.node, sock)
            self.spawn(self._ready(), "readiness to systemd")
            try:
                await self._stopping.wait()
            finally:
                failure = self.services.failure
                if failure is None:
                    await self._shutdown(server)
                else:
                    await self._die(server, failure)
        await self.db.aclose()  # what is queued is written first
        self._close()
        if failure is not None:
            logger.critical("hakeeperd stopped (exit %d): %s", FATAL_EXIT, failure.describe())
            return FATAL_EXIT
        logger.info("hakeeperd stopped")
        return 0

    async def _ready(self) -> None:
        """Tell systemd that this node serves (READY=1), once it has caught up with its peers."""
        await self.caught_up.wait()
        self.notifier.ready(self._status())

    def _status(self) -> str:
        """systemd's one-line status of this node (``systemctl status hakeeperd``)."""
        if self._stopping.is_set():
            return "stopping"
        if self.identity is None:
            return f"serving {self.node} (no cluster)"
        peers = sorted({n.name for n in self.lcd.nodes()} - {self.node})
        alive = [p for p in peers if self.membership.get(p) is PathState.ALIVE]
        heard = f"; not heard: {', '.join(sorted(set(peers) - set(alive)))}" if len(alive) < len(peers) else ""
        return f"serving {self.node}: {len(alive)} of {len(peers)} peers alive{heard}"

    async def _shutdown(self, server: asyncio.Server) -> None:
        logger.info("hakeeperd stopping: no new commands")
        self.notifier.stopping("stopping" + (": taking this node's resources out of service"
                                             if self._take_out_of_service else ""))  # fmt: skip
        server.close()  # stage 1: stop accepting
        self.services.wind_down()  # a service that ends now is not restarted
        if self.guard is not None:  # a stop on purpose: the guard must not take anything out of service
            await self.guard.stand_down()
        if self.identity is not None:  # the peers hear it from us, not from our heartbeats stopping
            switch_over = self._take_out_of_service and self.lcd.shutdown_strategy == SHUTDOWN_STRATEGIES[1]
            await self.failover.leaving(switch_over=switch_over)
        if self.replication is not None:  # the volumes' processes first: a mounted volume may hold them a while
            await self._watched("stopping the replication processes", self.replication.stop_all())
        await self._watched("stopping the services", self.services.cancel())
        if self._work:  # stage 2: let running work finish, then cancel it
            logger.info("waiting up to %g s for %d running task(s)", self.config.drain_timeout, len(self._work))
            _, late = await asyncio.wait(set(self._work), timeout=self.config.drain_timeout)
            for task in late:
                logger.warning("cancelling %s at shutdown", task.get_name())
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._take_out_of_service:  # stage 3 (lkstop): take every hierarchy out of service
            await self._watched("taking every hierarchy out of service", self.remove_all())
        else:
            in_service = [r.tag for r in self.lcd.resources() if r.state.in_service]
            if in_service:
                logger.info("leaving in service: %s", ", ".join(in_service))

    async def _die(self, server: asyncio.Server, failure: Failure) -> None:
        """A service hakeeperd cannot live without failed: stop acting, let the guard act, then fall silent.

        The order keeps a hierarchy off two nodes without a race: this node's
        resources are out of service (by the guard, as after a crash, or here when
        no guard can) before its heartbeats stop and the peers take over. The
        peers are not told that this node leaves, as ``lkstop`` tells them: they
        must take over. A service or task that does not end within FATAL_STOP
        once cancelled does not hold the exit up.
        """
        logger.critical("hakeeperd exits: %s", failure.describe())
        self.notifier.status(f"failed: {failure.describe()}")
        server.close()
        self.services.wind_down()
        acting = [name for name in self.services.names if name not in ("guard", "heartbeats")]
        late = await self.services.cancel(*acting, timeout=FATAL_STOP)
        work = self._work | self._clients | self.failover.under_way()  # no action of ours may race the guard's
        for task in work:
            task.cancel()
        if work:
            _, stuck = await asyncio.wait(work, timeout=FATAL_STOP)
            late += sorted(t.get_name() for t in stuck)
        if late:
            logger.critical("still running %g s after they were cancelled: %s", FATAL_STOP, ", ".join(late))
        await self.services.cancel("guard", timeout=FATAL_STOP)  # the guard process runs on: released below
        await self._hand_over()
        late = await self.services.cancel(timeout=FATAL_STOP)  # the heartbeats: the peers take over now
        if self.heartbeats is not None:
            await self.heartbeats.stop()  # when it was the link that failed, its process ran on until now
        if late:
            logger.critical("hakeeperd exits at once (exit %d): %s did not end", FATAL_EXIT, ", ".join(late))
            logging.shutdown()
            os._exit(FATAL_EXIT)

    async def _hand_over(self) -> None:
        """Have the guard act as on hakeeperd's death, and wait until it is done; do it here when no guard can."""
        if self.guard is None:
            logger.critical("no guard on a node without a cluster: what is in service here stays so")
            return
        logger.critical("the guard takes this node's resources out of service before its heartbeats stop")
        if await self.guard.release(FATAL_GUARD_WAIT):
            return
        logger.critical("no guard to do it: hakeeperd takes this node's resources out of service itself")
        # Without the writer thread (its death may be the failure), the states are written from the loop, alone now.
        engine = self.engine if self.db.alive else Engine(self.lcd, self.kits)
        try:
            async with asyncio.timeout(FATAL_GUARD_WAIT):
                await take_down(self.lcd, lambda: engine, "failed")
        except Exception:  # the heartbeats must stop all the same
            logger.critical("taking this node's resources out of service failed", exc_info=True)

    def _close(self) -> None:
        self.failover.close()
        drop_kept()  # the connections kept to the peers
        self.lcd.close()  # stage 4
        self.notifier.close()
        with contextlib.suppress(FileNotFoundError):
            socket_path(self.root).unlink()
        if self._pid_file is not None:
            os.close(self._pid_file)

    async def _watched(self, stage: str, work: Awaitable[Any]) -> None:
        """Await ``work``; while it takes long, say every STAGE_REPORT seconds what else runs (a stop that hangs
        must say where)."""
        task = asyncio.ensure_future(work)
        for _ in range(STAGE_REPORTS):  # bounded: after that, wait without reporting
            done, _ = await asyncio.wait({task}, timeout=STAGE_REPORT)
            if done:
                break
            others = sorted(t.get_name() for t in asyncio.all_tasks() if t is not task and not t.done())
            owner = self.engine.held_by or "nobody"
            logger.warning("hakeeperd stopping: still %s after %g s; the engine is held by %s; running: %s",
                           stage, STAGE_REPORT, owner, ", ".join(others))  # fmt: skip
        await task

    async def remove_all(self) -> None:
        """Take every resource in service out of service, parents first, in one engine run."""
        report = await self.engine.remove_everything(reason="lkstop")
        if not report.ok:
            logger.error("lkstop: %s", report.summary())


def destination(argv: list[str]) -> str | None:
    """The node a command line names with ``-d NODE`` (or ``-dNODE``), if any."""
    for i, word in enumerate(argv):
        if word == "--":
            return None
        if word == "-d" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("-d") and len(word) > 2:
            return word[2:]
    return None


def _peer_user(writer: asyncio.StreamWriter) -> str:
    """The user at the other end of the control socket, from SO_PEERCRED."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
    except (OSError, AttributeError):
        return "unknown"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def serve(config: Config, dispatch: Dispatch) -> int:
    """Run hakeeperd in the foreground until it is stopped."""

    async def main() -> int:
        daemon = Daemon(config, dispatch)
        return await daemon.run()

    try:
        return asyncio.run(main())
    except HakeeperError as exc:
        logger.error("%s", exc)
        return exc.exit_code
