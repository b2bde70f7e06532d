"""Configuration changes on every node of a hierarchy or on none: a two-phase commit.

A change to a resource that is extended to other nodes (its info and
settings, its dependencies, its equivalencies, its removal) concerns every node
named in its equivalencies. The node where the change is made (the
coordinator) first checks it locally, then asks each of those nodes to
*prepare* it — apply it in a transaction and roll it back, so that it is known
to apply there — and only when every one of them said yes does it commit it
locally and then on each of them. When one cannot be reached or refuses,
the change is refused with the reason and no LCD changes. LifeKeeper also needs
every server of a hierarchy up to change it.

Each request carries the coordinator's change-log sequence number, recorded in
the participant's change log with the change ("root@node1 via node1#42").

Catch-up: the coordinator writes what each participant must be told into its
``outbox``, in the same transaction as the change itself, and deletes a row
only when that node confirmed the commit. A node that failed between prepare
and commit (or whose confirmation was lost) is told again as soon as its paths
come back (``redeliver``); it applies each change once, whatever the number of
deliveries (its ``applied`` table). A node also *asks* for what it missed
(``catch_up``): when its daemon starts, before it takes part in any decision,
and whenever a peer's paths come back.

Cluster-wide settings (``hakeeper settings``) concern every node. Unlike a
hierarchy change they do not need every node up: a node that is away (all
paths DEAD, or not answering) is not asked to prepare, gets the change in the
outbox, and applies it when it is back, before its heartbeats agree with the
others again. Changing ``comm_port`` still needs every node, because a node
that missed it could not be reached to be told. Not here yet: a lock that
keeps two coordinators from preparing conflicting changes at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hakeeper.comm.paths import PathState
from hakeeper.comm.rpc import RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd
from hakeeper.db.aio import Access, Inline
from hakeeper.db.mirrors import MIRROR_CHANGES, mirror_nodes
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument, error_for

logger = logging.getLogger(__name__)

#: Changes that concern every node a resource is extended to. Runtime state
#: (set_state) is each node's own; creating a resource is local until it is extended
#: (``create_resources`` too: it is how the node a hierarchy is extended to takes it in).
REPLICATED = frozenset(
    {
        "set_info",
        "set_switchback",
        "set_init",
        "set_check_interval",
        "set_local_recover",
        "create_dependency",
        "remove_dependency",
        "create_equivalency",
        "remove_equivalency",
        "create_equivalencies",
        "remove_equivalencies",
        "remove_resources",
        "apply",  # hakeeper apply: one change of several steps, each naming the nodes it concerns
        *MIRROR_CHANGES,  # a mirrored volume's definition: every node of the mirror (hakeeper.db.mirrors)
    }
)

#: Changes that concern every node of the cluster, whatever the hierarchies. ``register_node``
#: (``cluster join``) makes a node known, with paths to it, on every member: a member that is
#: away learns it when it is back, as for settings.
CLUSTER_WIDE = frozenset({"set_settings", "register_node"})

Send = Callable[[str, str, dict[str, Any]], Awaitable[Any]]


def involved_tags(op: str, args: dict[str, Any]) -> set[str]:
    tags = {str(args[k]) for k in ("tag", "parent", "child") if args.get(k)}
    return tags | {str(t) for t in args.get("tags", [])}


def participants(lcd: Lcd, op: str, args: dict[str, Any]) -> list[str]:
    """The other nodes a change concerns: those in the equivalencies of the resources it touches, or all."""
    if op in CLUSTER_WIDE:  # a node being registered is not told of itself: it writes its own LCD
        return sorted(n.name for n in lcd.nodes() if n.name not in (lcd.local_node, args.get("node")))
    if op not in REPLICATED:
        return []
    if op in MIRROR_CHANGES:  # the change names them: the source, the targets there were, the new one
        return sorted(mirror_nodes(op, args) - {lcd.local_node})
    if op == "apply":  # each step names the nodes it concerned when it was made (hakeeper.db.bulk)
        named = {str(n) for step in args.get("steps", []) if isinstance(step, dict) for n in step.get("nodes", [])}
        return sorted(named - {lcd.local_node})
    nodes = {e.node for tag in involved_tags(op, args) for e in lcd.equivalencies(tag=tag)}
    if op in ("create_equivalency", "create_equivalencies"):  # the new node too
        nodes.add(str(args["other_node"]))
    nodes.discard(lcd.local_node)
    return sorted(nodes)


def needs_every_node(op: str, args: dict[str, Any]) -> bool:
    """Whether a change is refused while one of its nodes is away (else the node catches up later)."""
    if op in CLUSTER_WIDE:
        return "comm_port" in args.get("assignments", {})
    return True


@dataclass
class Transaction:
    id: str
    op: str
    args: dict[str, Any]
    nodes: list[str]
    actor: str
    seq: int
    prepared: list[str] = field(default_factory=list)
    away: list[str] = field(default_factory=list)  # told later: they catch up when they are back

    @property
    def message(self) -> dict[str, Any]:
        """The commit: everything a participant needs to apply the change, even after a restart."""
        return {"txid": self.id, "op": self.op, "args": self.args, "actor": self.actor, "seq": self.seq}


class ConfigSync:
    """Both sides of the two-phase commit, for one node."""

    def __init__(
        self,
        lcd: Lcd,
        send: Send,
        membership: Callable[[str], PathState],
        changed: Callable[[str], None] = lambda op: None,
        *,
        db: Access | None = None,
    ) -> None:
        self.lcd = lcd  # the daemon's own connection (participant side)
        self.db: Access = db if db is not None else Inline(lcd)  # hakeeperd's: the LCD off its event loop
        self.send = send
        self.membership = membership
        self.changed = changed  # told the op of each change committed here, by this node or another
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- coordinator

    async def prepare(self, nodes: list[str], op: str, args: dict[str, Any], actor: str, seq: int) -> Transaction:
        txn = Transaction(f"{self.lcd.local_node}-{time.time_ns()}-{next(self._ids)}", op, args, nodes, actor, seq)
        every = needs_every_node(op, args)
        down = [n for n in nodes if self.membership(n) is PathState.DEAD]
        if down and every:
            what = "a change to the comm port" if op in CLUSTER_WIDE else "a change to a hierarchy"
            raise CommunicationFailed(
                f"{op} refused: {', '.join(down)} cannot be reached (all paths DEAD); "
                f"{what} needs every node it concerns; nothing was changed"
            )
        txn.away = list(down)
        request = {"txid": txn.id, "op": op, "args": args, "actor": actor, "seq": seq}
        for node in [n for n in nodes if n not in down]:
            try:
                await self.send(node, "prepare", request)
            except RemoteError as exc:
                await self._abort(txn)
                # A mirror's node judges what only it can see, its backing store: its refusal is about the
                # input (exit 7, 5...), as extend gives a kit's refusal there; others say "the node refused" (9).
                code = exc.code if op in MIRROR_CHANGES else CommunicationFailed.exit_code
                raise error_for(code, f"{op} refused by node {node}: {exc}; nothing was changed") from None
            except HakeeperError as exc:
                if every:
                    await self._abort(txn)
                    raise CommunicationFailed(f"{op} refused by node {node}: {exc}; nothing was changed") from None
                logger.info("%s: node %s away: %s", op, node, exc)
                txn.away.append(node)
                continue
            txn.prepared.append(node)
        if txn.away:
            logger.warning("%s: %s away; told when back", op, ", ".join(sorted(txn.away)))
        return txn

    async def finish(self, txn: Transaction, committed: bool) -> None:
        if not committed:
            await self._abort(txn)
            return
        self.changed(txn.op)
        for node in txn.prepared:
            await self._deliver(node, txn.id, txn.message)

    async def _deliver(self, node: str, txid: str, message: dict[str, Any], *, quiet: bool = False) -> bool:
        try:
            await self.send(node, "commit", message)
        except HakeeperError as exc:
            log = logger.debug if quiet else logger.error
            log("%s committed here, not yet on %s: %s (told again when it is back)", message["op"], node, exc)
            return False
        await self.db.write(lambda lcd: lcd.delivered(txid, node))
        return True

    async def redeliver(self, node: str, *, quiet: bool = False) -> int:
        """Tell ``node`` the committed changes it has not confirmed, oldest first; returns how many it took.

        ``quiet``: a node that is away is tried now and then; its failures are not news.
        """
        sent = 0
        for txid, text in await self.db.read(lambda lcd: lcd.outbox(node)):
            if not await self._deliver(node, txid, json.loads(text), quiet=quiet):
                break
            sent += 1
        if sent:
            logger.info("%s caught up on %d configuration change(s)", node, sent)
        return sent

    async def catch_up_from(self, node: str) -> int:
        """Ask ``node`` for the changes it committed that this node has not confirmed; returns how many."""
        answer = await self.send(node, "catch_up", {})
        count = int(answer.get("delivered", 0)) if isinstance(answer, dict) else 0
        if count:
            logger.info("caught up on %d configuration change(s) from %s", count, node)
        return count

    async def _abort(self, txn: Transaction) -> None:
        for node in txn.prepared:
            try:
                await self.send(node, "abort", {"txid": txn.id})
            except HakeeperError as exc:
                logger.warning("abort of %s on %s: %s (harmless: a prepare leaves nothing behind)", txn.op, node, exc)

    # ---------------------------------------------------------------- participant

    async def on_prepare(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Say whether the change would apply here; nothing is kept (the commit carries the whole change)."""
        op, change = str(args["op"]), args.get("args")
        if op not in REPLICATED | CLUSTER_WIDE or not isinstance(change, dict):
            raise IllegalArgument(f"{op} is not a replicated change")
        await self.db.write(lambda lcd: lcd.try_change(op, change))  # raises, with the reason, when it would not apply
        return {}

    async def on_commit(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        txid, op, change = str(args["txid"]), str(args["op"]), args.get("args")
        if op not in REPLICATED | CLUSTER_WIDE or not isinstance(change, dict):
            raise IllegalArgument(f"{op} is not a replicated change")
        actor = f"{args.get('actor', '?')} via {peer.node}#{args.get('seq', '?')}"
        if await self.db.write(lambda lcd: lcd.apply_replicated(txid, op, change, actor)):
            logger.info("%s from %s applied (%s)", op, peer.node, actor)
            self.changed(op)
        return {}

    async def on_catch_up(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """``peer`` asks for what it missed: tell it now (the commits go to it while it waits)."""
        delivered = await self.redeliver(peer.node)
        return {"delivered": delivered, "left": len(await self.db.read(lambda lcd: lcd.outbox(peer.node)))}

    async def on_abort(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Nothing to undo: a prepare keeps nothing. The message stays so that the protocol reads whole."""
        return {}


@dataclass
class Pending:
    """A change this node coordinates, between its prepare and its local commit (see Lcd.Replication)."""

    txn: Transaction
    sync: ConfigSync
    loop: asyncio.AbstractEventLoop

    @property
    def outbox(self) -> list[tuple[str, str, int, str]]:
        text = json.dumps(self.txn.message)
        return [(self.txn.id, node, self.txn.seq, text) for node in [*self.txn.prepared, *self.txn.away]]

    def finish(self, committed: bool) -> None:
        asyncio.run_coroutine_threadsafe(self.sync.finish(self.txn, committed), self.loop).result(120)


@dataclass
class Deferred:
    """A cluster-wide change made where hakeeperd does not run: every other node is away, told later.

    Its outbox rows are written with the change; hakeeperd, once started here,
    delivers them (its catch-up loop, and each peer asks when it sees this node).
    """

    rows: list[tuple[str, str, int, str]]

    @property
    def outbox(self) -> list[tuple[str, str, int, str]]:
        return self.rows

    def finish(self, committed: bool) -> None:
        return None


def deferred_replicator(lcd: Lcd, actor: str) -> Callable[[str, dict[str, Any]], Deferred | None]:
    """A replicator for a command run without hakeeperd: a cluster-wide change waits in the outbox."""

    def replicate(op: str, args: dict[str, Any]) -> Deferred | None:
        nodes = participants(lcd, op, args) if op in CLUSTER_WIDE else []
        if not nodes:
            return None
        seq = lcd.last_seq() + 1
        txid = f"{lcd.local_node}-{time.time_ns()}-deferred"
        message = json.dumps({"txid": txid, "op": op, "args": args, "actor": actor, "seq": seq})
        logger.info("%s: %s told when hakeeperd runs here", op, ", ".join(nodes))
        return Deferred([(txid, node, seq, message) for node in nodes])

    return replicate


def thread_replicator(
    sync: ConfigSync, loop: asyncio.AbstractEventLoop, lcd: Lcd, actor: str
) -> Callable[[str, dict[str, Any]], Pending | None]:
    """A replicator for an Lcd used in a worker thread of hakeeperd: the 2PC runs on the daemon's loop."""

    def replicate(op: str, args: dict[str, Any]) -> Pending | None:
        nodes = participants(lcd, op, args)
        if not nodes:
            return None
        seq = lcd.last_seq() + 1
        txn = asyncio.run_coroutine_threadsafe(sync.prepare(nodes, op, args, actor, seq), loop).result(120)
        return Pending(txn, sync, loop)

    return replicate
