"""Extending a hierarchy to another node, and taking it back: LifeKeeper's extend and unextend.

``extend -t TAG -s NODE [-p PRIORITY]`` runs on a node that has TAG (the
coordinator) and makes TAG, and every resource below it that NODE does not
have yet, able to run on NODE:

1. Everything is checked here first (:func:`plan_extend`): the resource, the
   node (known, with paths, not DEAD), that TAG is not there yet, and that the
   equivalencies would apply (a dry run of the change, priorities included).
2. ONE ``adopt`` request goes to NODE with every resource to extend, children
   first — its LCD record, its dependencies and what its kit exports (gen/app:
   the copied scripts). NODE's :class:`Adopter` adopts each through its kit,
   runs the kit's ``validate`` (with the action's timeout) and creates them all
   in one LCD transaction, OSU (they run on the coordinator). When any step
   fails it discards what it made and refuses, naming the resource and why.
3. The coordinator creates the equivalencies as one replicated change
   (``create_equivalencies``: the two-phase commit of :mod:`configsync` to every
   node of the hierarchy, NODE included). When that is refused, NODE is asked
   to drop what it adopted, and extend is refused.

``unextend -t TAG -s NODE`` takes TAG and the resources below it that only it
needs off NODE: NODE checks that none of them is in service there, the
equivalencies to NODE are removed (replicated), then NODE runs the kits'
``delete`` actions and removes the resources from its LCD.

Refused means: one line saying why, LifeKeeper's exit code (9 when NODE
cannot be reached), and no LCD changed anywhere.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hakeeper.cluster.configsync import participants
from hakeeper.comm.rpc import MAX_FRAME, RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd, Resource, State, graph
from hakeeper.db.aio import Access, Inline
from hakeeper.db.model import check_priority
from hakeeper.errors import (
    AlreadyExists,
    CommunicationFailed,
    DeleteRefused,
    HakeeperError,
    IllegalArgument,
    NotFound,
    SystemCallFailed,
    error_for,
)
from hakeeper.kits.base import Kit
from hakeeper.kits.registry import Kits
from hakeeper.recovery.engine import call

logger = logging.getLogger(__name__)

#: The LCD flag of a node joined with ``hakeeper cluster join --witness``: extend refuses it.
WITNESS_FLAG = "witness"

T = TypeVar("T")

ANSWER_TIMEOUT = 30.0  # what a request takes besides the kit actions it runs
REMEMBERED = 64  # adoptions a node remembers, so that a retried request is answered the same


class Services(Protocol):
    """What extend and unextend need of hakeeperd (:class:`hakeeper.daemon.Daemon`)."""

    lcd: Lcd
    kits: Kits

    @property
    def db(self) -> Access:
        """The LCD off the event loop (hakeeper.db.aio)."""

    def check_reachable(self, node: str) -> None:
        """Raise CommunicationFailed, saying why, when ``node`` cannot be asked anything (DEAD, no identity)."""

    async def request(self, node: str, op: str, args: dict[str, Any], *, timeout: float) -> Any: ...

    async def change_replicated(self, actor: str, change: Callable[[Lcd], T]) -> T: ...


# ---------------------------------------------------------------------- the coordinator


@dataclass(frozen=True)
class ExtendPlan:
    tag: str
    node: str
    resources: list[Resource]  # to extend, children first
    dependencies: list[tuple[str, str]]  # among them (and to children NODE has already), as named on NODE
    priority: int | None  # on NODE; None: the lowest that no resource of the hierarchy uses

    @property
    def tags(self) -> list[str]:
        return [r.tag for r in self.resources]


@dataclass(frozen=True)
class UnextendPlan:
    tag: str
    node: str
    tags: list[str]  # parents first
    there: list[str]  # the same, as named on NODE


def equivalent_on(lcd: Lcd, node: str) -> dict[str, str]:
    """The resources of this LCD that can run on ``node``: tag here -> tag there."""
    return {tag: remote for tag, where, _priority, remote in lcd.equivalency_rows() if where == node}


def _other_node(lcd: Lcd, node: str, this_node: str) -> None:
    if node not in {n.name for n in lcd.nodes()}:
        raise NotFound(f"no node named {node!r} (see: sys_list)")
    if node == lcd.local_node:
        raise IllegalArgument(this_node)


def _require_paths(lcd: Lcd, node: str) -> None:
    if not lcd.paths(node):
        raise CommunicationFailed(f"no communication path to {node} (see: net_create)")


def plan_extend(lcd: Lcd, tag: str, node: str, priority: int | None) -> ExtendPlan:
    """Check here everything extend can check here; what to send to ``node``."""
    lcd.resource(tag)
    _other_node(lcd, node, f"{node} is this node, where {tag!r} is already: name the node to extend it to")
    if priority is not None:
        check_priority(priority)
    there = equivalent_on(lcd, node)
    if tag in there:
        raise AlreadyExists(f"{tag!r} is extended to {node} already (see: eqv_list -t {tag})")
    edges = lcd.edges()
    below = graph.descendants(edges, tag) | {tag}
    moving = [t for t in graph.restore_order(edges, below) if t not in there]
    dependencies = sorted((p, there.get(c, c)) for p, c in edges if p in moving and c in below)
    # The equivalencies must apply here (priority free on every resource...): a dry run says so.
    lcd.try_change(
        "create_equivalencies",
        {"tags": moving, "other_node": node, "other_priority": priority, "node": lcd.local_node},
    )
    _require_paths(lcd, node)
    return ExtendPlan(tag, node, [lcd.resource(t) for t in moving], dependencies, priority)


def plan_unextend(lcd: Lcd, tag: str, node: str) -> UnextendPlan:
    """Check here everything unextend can check here; which resources leave ``node``."""
    lcd.resource(tag)
    _other_node(
        lcd,
        node,
        f"{node} is this node: unextend takes {tag!r} off another node; to take this node's copy off, "
        f"run it on another node of the hierarchy, naming {node}",
    )
    there = equivalent_on(lcd, node)
    if tag not in there:
        raise NotFound(f"{tag!r} is not extended to {node} (see: eqv_list -t {tag})")
    edges = [(p, c) for p, c in lcd.edges() if p in there and c in there]
    parents = sorted(graph.ancestors(edges, tag))
    if parents:
        raise DeleteRefused(
            f"{', '.join(parents)} on {node} depend{'s' if len(parents) == 1 else ''} on {tag!r}: "
            f"unextend {parents[0]} first"
        )
    tags = graph.rooted_at(edges, [tag])
    _require_paths(lcd, node)
    return UnextendPlan(tag, node, tags, [there[t] for t in tags])


def refuse_unreachable(services: Services, node: str, what: str) -> None:
    """Refuse ``what`` ("nothing was changed") when ``node`` cannot be asked anything."""
    try:
        services.check_reachable(node)
    except CommunicationFailed as exc:
        raise CommunicationFailed(f"{what} refused: {exc}; nothing was changed") from None


def adopt_request(plan: ExtendPlan, kits: Kits, xid: str, actor: str) -> dict[str, Any]:
    """The one message that carries the hierarchy to ``plan.node``."""
    items = []
    for r in plan.resources:
        kit = kits.find(r.app, r.type)
        record = {
            "tag": r.tag,
            "id": r.id,
            "app": r.app,
            "type": r.type,
            "info": r.info,
            "init": r.init.name,
            "switchback": r.switchback.name,
            "check_interval": r.check_interval,
            "local_recover": r.local_recover,
        }
        items.append({"resource": record, "kit": kit is not None, "payload": kit.export(r) if kit else {}})
    request = {"xid": xid, "actor": actor, "resources": items, "dependencies": [list(d) for d in plan.dependencies]}
    size = len(json.dumps(request, ensure_ascii=False).encode())
    if size > MAX_FRAME - 4096:
        raise IllegalArgument(f"{plan.tag}'s hierarchy is too large to send ({size} bytes; at most {MAX_FRAME})")
    return request


def _budget(kits: Kits, resources: list[Resource], action: str) -> float:
    """How long a request that runs ``action`` of each resource may take (the kits' timeouts, as known here)."""
    total = ANSWER_TIMEOUT
    for r in resources:
        kit = kits.find(r.app, r.type)
        total += kit.timeout(action, r) if kit is not None else 0.0
    return total


async def extend(services: Services, tag: str, node: str, priority: int | None, actor: str) -> tuple[list[str], int]:
    """Extend ``tag``'s hierarchy to ``node``; returns the tags extended (children first) and the priority there."""
    lcd = services.lcd
    plan = await services.db.write(lambda w: plan_extend(w, tag, node, priority))  # its dry run takes the write lock
    what = f"extend of {tag} to {node}"
    # Every node the equivalencies concern, the new one first: a DEAD one refuses before anything is sent.
    change = {"tags": plan.tags, "other_node": node}
    for other in [node, *[n for n in participants(lcd, "create_equivalencies", change) if n != node]]:
        refuse_unreachable(services, other, what)
    xid = f"{lcd.local_node}-{time.time_ns()}"
    request = adopt_request(plan, services.kits, xid, actor)
    try:
        await services.request(node, "adopt", request, timeout=_budget(services.kits, plan.resources, "validate"))
    except RemoteError as exc:
        raise error_for(exc.code, f"{what} refused: {exc}; nothing was changed") from None
    except CommunicationFailed as exc:  # it may have arrived and been adopted: ask to drop it, if reachable
        left = await _undo(services, node, xid)
        raise CommunicationFailed(f"{what} refused: {exc}{left}") from None
    try:
        chosen: int = await services.change_replicated(
            actor, lambda w: w.create_equivalencies(plan.tags, node, other_priority=priority)
        )
    except HakeeperError as exc:
        left = await _undo(services, node, xid)
        raise error_for(exc.exit_code, f"{what} refused: {exc}{left}") from None
    logger.info("%s: %s now equivalent on %s with priority %d (%s)", what, ", ".join(plan.tags), node, chosen, actor)
    return plan.tags, chosen


async def _undo(services: Services, node: str, xid: str) -> str:
    """Ask ``node`` to drop what adoption ``xid`` made; what to add to the message when it could not."""
    try:
        await services.request(node, "unadopt", {"xid": xid}, timeout=ANSWER_TIMEOUT)
    except HakeeperError as exc:
        logger.error("%s could not be asked to drop what it adopted for a refused extend: %s", node, exc)
        return f"; if {node} got the request, it may keep what it adopted (see: ins_list -d {node})"
    return "; nothing was changed"


async def unextend(services: Services, tag: str, node: str, actor: str) -> list[str]:
    """Take ``tag``'s hierarchy off ``node``; returns the tags removed there (parents first)."""
    lcd = services.lcd
    plan = await services.db.read(lambda r: plan_unextend(r, tag, node))
    what = f"unextend of {tag} from {node}"
    refuse_unreachable(services, node, what)
    try:
        await services.request(node, "unadopt", {"tags": plan.there, "check": True}, timeout=ANSWER_TIMEOUT)
    except RemoteError as exc:
        raise error_for(exc.code, f"{what} refused: {exc}; nothing was changed") from None
    await services.change_replicated(actor, lambda w: w.remove_equivalencies(plan.tags, node))
    budget = _budget(services.kits, [lcd.resource(t) for t in plan.tags], "delete")
    try:
        await services.request(node, "unadopt", {"tags": plan.there, "actor": actor}, timeout=budget)
    except HakeeperError as exc:
        raise error_for(
            exc.code if isinstance(exc, RemoteError) else exc.exit_code,
            f"{what}: the equivalencies are removed, but {node} keeps its copy: {exc} "
            f"(remove it there: ins_remove -t {plan.there[-1]} -d {node})",
        ) from None
    logger.info("%s: %s removed there (%s)", what, ", ".join(plan.tags), actor)
    return plan.tags


# ---------------------------------------------------------------------- the node a hierarchy is extended to


class Adopter:
    """The requests of extend and unextend on the node a hierarchy goes to (or leaves), one at a time."""

    def __init__(self, lcd: Lcd, kits: Kits, *, db: Access | None = None) -> None:
        self.lcd = lcd  # its few synchronous reads (checks before a change: the change checks again)
        self.db: Access = db if db is not None else Inline(lcd)  # hakeeperd's: changes off its event loop
        self.kits = kits
        self._lock = asyncio.Lock()
        self._adopted: dict[str, list[str]] = {}  # xid -> tags, for a retry or the coordinator's undo

    async def on_adopt(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        xid = _text(args, "xid")
        async with self._lock:
            if xid not in self._adopted:  # else: the same request again, on another path
                self._adopted[xid] = await self._adopt(peer.node, args)
                while len(self._adopted) > REMEMBERED:
                    self._adopted.pop(next(iter(self._adopted)))
            return {"adopted": self._adopted[xid]}

    async def _adopt(self, source: str, args: dict[str, Any]) -> list[str]:
        items, dependencies = args.get("resources"), args.get("dependencies", [])
        if not isinstance(items, list) or not items or not isinstance(dependencies, list):
            raise IllegalArgument("an adopt request needs resources and dependencies (lists)")
        if source not in {n.name for n in self.lcd.nodes()}:
            raise NotFound(f"{self.lcd.local_node} does not know node {source!r} (see: sys_create)")
        if self.lcd.has_flag(WITNESS_FLAG):
            raise IllegalArgument(f"{self.lcd.local_node} is a witness: it counts for quorum and holds no resources")
        specs: list[dict[str, Any]] = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("resource"), dict):
                raise IllegalArgument("an adopted resource is a JSON object with its LCD record")
            spec = item["resource"]
            tag = _text(spec, "tag")
            if any(r.tag == tag for r in self.lcd.resources(tag=tag)):
                raise AlreadyExists(f"{self.lcd.local_node} has a resource tagged {tag!r} already")
            specs.append(spec)
        actor = f"{args.get('actor', '?')} via {source}"
        made: list[tuple[Kit, str]] = []
        try:
            for item, spec in zip(items, specs, strict=True):
                kit = await self._take_in(spec, bool(item.get("kit")), item.get("payload", {}))
                if kit is not None:
                    made.append((kit, spec["tag"]))
            await self.db.write(lambda lcd: _as(lcd, actor, lambda: lcd.create_resources(specs, dependencies)))
        except BaseException:
            for kit, tag in reversed(made):
                kit.discard(tag)
            raise
        tags = [s["tag"] for s in specs]
        logger.info("adopted %s from %s, OSU (%s)", ", ".join(tags), source, actor)
        return tags

    async def _take_in(self, spec: Mapping[str, Any], had_kit: bool, payload: object) -> Kit | None:
        """Adopt one resource through its kit and validate it here; the kit, when there is one."""
        tag, app, rtype = _text(spec, "tag"), _text(spec, "app"), _text(spec, "type")
        kit = self.kits.find(app, rtype)
        if kit is None:
            if had_kit:
                raise NotFound(f"{tag}: {self.lcd.local_node} has no kit {app}/{rtype} (see: hakeeper kits)")
            return None
        if not isinstance(payload, dict):
            raise IllegalArgument(f"{tag}: the kit's payload is not a JSON object")
        try:
            kit.adopt(tag, spec.get("info", ""), payload)
        except HakeeperError as exc:
            raise error_for(exc.exit_code, f"{tag}: {exc}") from None
        try:
            probe = Resource(tag, _text(spec, "id"), app, rtype, info=spec.get("info", ""), state=State.OSU)
            result = await call(kit, "validate", probe)
        except BaseException:
            kit.discard(tag)
            raise
        if not result.ok:
            kit.discard(tag)
            raise IllegalArgument(
                f"{tag}: {kit.meta.name} does not validate it on {self.lcd.local_node}: {result.message}"
            )
        return kit

    async def on_unadopt(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Remove resources here (``tags``, or those adoption ``xid`` made); ``check``: only say whether it could."""
        async with self._lock:
            if "xid" in args:
                adopted = self._adopted.pop(_text(args, "xid"), [])
                tags = [t for t in adopted if any(r.tag == t for r in self.lcd.resources(tag=t))]
            else:
                named = args.get("tags")
                if not isinstance(named, list) or not named or not all(isinstance(t, str) for t in named):
                    raise IllegalArgument("an unadopt request names the tags to remove")
                tags = list(named)
            if not tags:
                return {"removed": []}
            self._check_removal(tags, check=bool(args.get("check")))
            if args.get("check"):
                return {"removed": []}
            removed = await self._remove(tags, f"{args.get('actor', '?')} via {peer.node}")
            return {"removed": removed}

    def _check_removal(self, tags: list[str], *, check: bool) -> None:
        here = self.lcd.local_node
        for tag in tags:
            resource = self.lcd.resource(tag)
            if resource.state.in_service:
                raise DeleteRefused(
                    f"{tag} is in service on {here} ({resource.state.name}): take it out of service there first "
                    f"(perform_action -t {tag} -a remove -d {here})"
                )
            if not check and here in {e.node for e in self.lcd.equivalencies(tag=tag)}:
                raise DeleteRefused(f"{tag} is still equivalent on {here}: its equivalency must go first")
        others = sorted(set(self.lcd.removal_order(tags)) - set(tags))
        if others:
            raise DeleteRefused(f"{', '.join(others)} on {here} depend on {tags[-1]}: remove them there first")

    async def _remove(self, tags: list[str], actor: str) -> list[str]:
        """Each kit's delete action, then the resource out of the LCD, parents first (as ins_remove does)."""
        removed: list[str] = []
        for tag in await self.db.read(lambda lcd: lcd.removal_order(tags)):

            def remove(lcd: Lcd, tag: str = tag) -> list[str]:
                return _as(lcd, actor, lambda: lcd.remove_resources([tag]))

            resource = await self.db.read(functools.partial(Lcd.resource, tag=tag))
            kit = self.kits.find(resource.app, resource.type)
            if kit is not None:
                result = await call(kit, "delete", resource)
                if not result.ok:
                    done = f" (removed before it: {', '.join(removed)})" if removed else ""
                    raise SystemCallFailed(f"{result.message}{done}")
            removed += await self.db.write(remove)
        logger.info("removed %s (%s)", ", ".join(removed), actor)
        return removed


def _as(lcd: Lcd, actor: str, change: Callable[[], T]) -> T:
    """Make ``change`` on ``lcd`` in the name of ``actor`` (the change log says who asked)."""
    own, lcd.actor = lcd.actor, actor
    try:
        return change()
    finally:
        lcd.actor = own


def _text(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise IllegalArgument(f"the request needs {key} (a string)")
    return value
