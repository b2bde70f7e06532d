"""``hakeeper update``: a resource's parameters, and gen/app's scripts, changed on every node of its hierarchy at once.

LifeKeeper administrators edit a resource's properties in the GUI once; the
copies on the other nodes follow. Here, on the node the command runs on (the
coordinator):

1. The kit makes the new info from the current one and the parameters given
   (:meth:`hakeeper.kits.base.Kit.revise`): unknown or bad parameters, and
   those its kit cannot change in place, are refused before anything is sent.
2. Every node the resource is equivalent on must be reachable; each is sent
   the new info and what its kit installs for it (gen/app: the new scripts,
   beside the live ones) and answers with the resource's state there
   (:meth:`Reviser.on_stage`). A parameter that may change only while the
   resource runs nowhere (an address's interface) is refused if one of them
   has it in service.
3. The new info is recorded with ``set_info``, replicated by configsync's
   two-phase commit: on every node or on none.
4. Each node drops what the old info used and the new one does not
   (:meth:`Reviser.on_settle`; best effort: what is left is unused).

Refused means one line saying why, LifeKeeper's exit code (9 when a node cannot
be reached), and no LCD changed anywhere; scripts staged on a node by a refused
update are unused and go at the next update's settle.

Without hakeeperd, a resource that is on this node only is updated here;
one that is extended needs hakeeperd (its other nodes must change with it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hakeeper.cluster.configsync import participants
from hakeeper.cluster.extend import ANSWER_TIMEOUT, Services, refuse_unreachable
from hakeeper.comm.rpc import RemoteError
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd, Resource, State
from hakeeper.db.aio import Access, Inline
from hakeeper.errors import DeleteRefused, HakeeperError, IllegalArgument, error_for
from hakeeper.kits.base import Kit, Revision
from hakeeper.kits.registry import Kits

logger = logging.getLogger(__name__)


def plan_update(lcd: Lcd, kits: Kits, tag: str, params: Mapping[str, str]) -> tuple[Resource, Kit, Revision]:
    """The resource, its kit and what the kit makes of ``params`` (checked here; nothing installed)."""
    if not params:
        raise IllegalArgument("name at least one NAME=VALUE to change")
    resource = lcd.resource(tag)
    kit = kits.get(resource.app, resource.type)
    return resource, kit, kit.revise(resource, params)


def _in_service(revision: Revision, states: Mapping[str, State], tag: str) -> None:
    running = sorted(node for node, state in states.items() if state.in_service)
    if revision.out_of_service and running:
        raise DeleteRefused(
            f"{', '.join(revision.out_of_service)} of {tag} may change only while it runs nowhere; it is in service "
            f"on {', '.join(running)} (take it out of service first); nothing was changed"
        )


async def update(services: Services, tag: str, params: Mapping[str, str], actor: str) -> tuple[list[str], Revision]:
    """Change ``tag``'s parameters on every node it is equivalent on; returns those nodes (this one first)."""
    lcd = services.lcd
    resource, kit, revision = await services.db.read(lambda r: plan_update(r, services.kits, tag, params))
    if not revision.changed:
        return [], revision
    others = participants(lcd, "set_info", {"tag": tag, "info": revision.info})
    what = f"update of {tag}"
    for node in others:
        refuse_unreachable(services, node, what)
    request = {"tag": tag, "info": revision.info, "payload": revision.payload}
    states = {lcd.local_node: resource.state}
    kit.stage(tag, revision.info, revision.payload)
    for node in others:
        try:
            answer = await services.request(node, "stage_revision", request, timeout=ANSWER_TIMEOUT)
        except RemoteError as exc:
            raise error_for(exc.code, f"{what} refused: {node}: {exc}; nothing was changed") from None
        except HakeeperError as exc:
            raise error_for(exc.exit_code, f"{what} refused: {node}: {exc}; nothing was changed") from None
        states[node] = _state(answer, node)
    _in_service(revision, states, tag)
    try:
        await services.change_replicated(actor, lambda w: w.set_info(tag, revision.info))
    except HakeeperError as exc:
        raise error_for(exc.exit_code, f"{what} refused: {exc}") from None
    settled = await services.db.read(lambda r: r.resource(tag))
    kit.settle(settled)
    for node in others:
        try:
            await services.request(node, "settle_revision", {"tag": tag}, timeout=ANSWER_TIMEOUT)
        except HakeeperError as exc:  # only unused files are left there
            logger.warning("%s: %s could not drop the files its old info used: %s", what, node, exc)
    nodes = [lcd.local_node, *others]
    logger.info("%s: %s changed on %s (%s)", what, ", ".join(revision.changed), ", ".join(nodes), actor)
    return nodes, revision


def update_here(lcd: Lcd, kits: Kits, tag: str, params: Mapping[str, str]) -> Revision:
    """Without hakeeperd: a resource on this node only is updated here; an extended one is refused."""
    resource, kit, revision = plan_update(lcd, kits, tag, params)
    if not revision.changed:
        return revision
    elsewhere = sorted({e.node for e in lcd.equivalencies(tag=tag)} - {lcd.local_node})
    if elsewhere:
        raise IllegalArgument(
            f"{tag} is also on {', '.join(elsewhere)}: hakeeperd must run to update it on every node "
            "(see: lkstart); nothing was changed"
        )
    _in_service(revision, {lcd.local_node: resource.state}, tag)
    kit.stage(tag, revision.info, revision.payload)
    lcd.set_info(tag, revision.info)
    kit.settle(lcd.resource(tag))
    return revision


def _state(answer: object, node: str) -> State:
    name = answer.get("state") if isinstance(answer, dict) else None
    try:
        return State[str(name)]
    except KeyError:
        raise IllegalArgument(f"{node} answered a stage request without the resource's state") from None


class Reviser:
    """The requests of ``hakeeper update`` on the other nodes of a hierarchy."""

    def __init__(self, lcd: Lcd, kits: Kits, *, db: Access | None = None) -> None:
        self.db: Access = db if db is not None else Inline(lcd)
        self.kits = kits

    async def on_stage(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Install what the new info needs, beside what runs now; answer with the resource's state here."""
        tag = args.get("tag")
        payload = args.get("payload", {})
        if not isinstance(tag, str) or not isinstance(payload, dict):
            raise IllegalArgument("a stage request needs a tag (string) and a payload (object)")
        resource = await self.db.read(lambda r: r.resource(tag))
        kit = self.kits.get(resource.app, resource.type)
        kit.stage(tag, args.get("info"), payload)
        return {"state": resource.state.name}

    async def on_settle(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        """Drop what the resource's info no longer uses."""
        tag = args.get("tag")
        if not isinstance(tag, str):
            raise IllegalArgument("a settle request needs a tag (string)")
        resource = await self.db.read(lambda r: r.resource(tag))
        self.kits.get(resource.app, resource.type).settle(resource)
        return {}
