"""``hakeeper switchover`` and ``hakeeper why``: move a hierarchy by hand, and say why it is where it is.

Both run in hakeeperd, which knows the membership and can ask the other nodes
what they run; without hakeeperd, ``why`` tells what the LCD alone says.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from hakeeper.cli.base import Context, arg, command, other_node
from hakeeper.cluster import decide, lease
from hakeeper.cluster.decide import Hierarchy, View
from hakeeper.cluster.failover import Failover, hierarchy_of
from hakeeper.db import Lcd
from hakeeper.db.catalog import WITNESS
from hakeeper.errors import CommunicationFailed, HakeeperError, NotFound, UsageError
from hakeeper.kits.base import DEFAULT_TIMEOUTS

if TYPE_CHECKING:
    from hakeeper.services import DaemonServices


def _hierarchy(lcd: Lcd, tag: str) -> Hierarchy:
    lcd.resource(tag)
    h = hierarchy_of(lcd, tag)
    if h is None:
        raise NotFound(f"{tag!r} is extended to no other node (see: eqv_list, hakeeper extend)")
    return h


def _on_witness(lcd: Lcd, tag: str) -> bool:
    """Whether this node is a witness that has no resource ``tag`` (a witness runs no hierarchy)."""
    return lcd.has_flag(WITNESS) and not lcd.resources(tag=tag)


async def _witness_sentence(ctx: Context, tag: str) -> str:
    """'node3 is a witness: it runs no hierarchy; web runs on node1', from what the live peers say they run."""
    me = ctx.lcd.local_node
    failover = ctx.daemon.failover
    views = await failover.views()
    holders = sorted(peer for peer, answer in views.items() if tag in answer.get("in_service", []))
    unknown = failover.unknown(views)
    if holders:
        where = f"{tag} runs on {', '.join(holders)}"
    elif views:
        where = f"{tag} runs on no node that answered ({', '.join(sorted(views))})"
    else:
        where = f"no live member said where {tag} runs"
    silent = f"; {', '.join(unknown)} did not say what it runs" if unknown else ""
    return f"{me} is a witness: it runs no hierarchy; {where}{silent}"


def _witness_offline(lcd: Lcd, tag: str) -> str:
    return (
        f"{lcd.local_node} is a witness: it runs no hierarchy; where {tag} runs is known to its members "
        f"(hakeeper why {tag} -d NODE, with hakeeperd running here)"
    )


async def _switchover_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    daemon = ctx.daemon
    target = other_node(ctx.lcd, args.to)
    if _on_witness(ctx.lcd, args.tag) and target is None:
        raise NotFound(
            f"{await _witness_sentence(ctx, args.tag)} (to move it: hakeeper switchover {args.tag} --to NODE)"
        )
    if not _on_witness(ctx.lcd, args.tag):  # a witness sends it on to --to NODE, which has the hierarchy
        _hierarchy(ctx.lcd, args.tag)
    if target is not None:
        answer = await daemon.run_remote(target, "switchover", [args.tag], ctx.actor)
        ctx.out.write(answer.out)
        ctx.err.write(answer.err)
        return int(answer.code)
    ctx.print(await daemon.failover.switchover(args.tag))
    return 0


@command(
    "switchover",
    "move a hierarchy to a node: take it out of service where it runs, then restore it there",
    arg("tag", metavar="TAG", help="a resource of the hierarchy"),
    arg("--to", metavar="NODE", help="the node to run it on (default: this node)"),
    epilog="The same as 'In Service' on a backup in LifeKeeper's console, and as\n"
    "perform_action -t TAG -a restore run on that node. If the restore fails there,\n"
    "the hierarchy goes back to where it was, or on to the next node by priority.",
    in_daemon=_switchover_in_daemon,
)
def _switchover(ctx: Context, args: argparse.Namespace) -> int:
    if _on_witness(ctx.lcd, args.tag):
        raise NotFound(_witness_offline(ctx.lcd, args.tag))
    _hierarchy(ctx.lcd, args.tag)
    other_node(ctx.lcd, args.to)
    raise CommunicationFailed("switchover needs hakeeperd on this node (see: lkstart)")


def _why_lines(
    lcd: Lcd, h: Hierarchy, view: View | None, in_service: dict[str, list[str]], failover: object
) -> list[str]:
    me = lcd.local_node
    lines = []
    holders = decide.where(h, in_service)
    if holders:
        where = ", ".join(holders)
        lines.append(f"{h.name}: in service on {where}")
    else:
        lines.append(f"{h.name}: in service nowhere{'' if view else ' on this node'}")
    if me in holders:
        for tag in sorted(h.members):
            resource = lcd.resource(tag)
            lines.append(f"  {tag}: {resource.state.name}{f' ({resource.reason})' if resource.reason else ''}")
    nodes = []
    for priority, node in sorted((p, n) for n, p in h.priorities.items()):
        state = "this node" if node == me else (("ALIVE" if node in view.alive else "not alive") if view else "?")
        nodes.append(f"{node} (priority {priority}, {state})")
    lines.append(f"  extended to: {', '.join(nodes)}")
    if h.switchback.name == "AUTOMATIC":
        lines.append("  switchback AUTOMATIC: moves back to a higher-priority node when it is back")
    else:
        lines.append("  switchback INTELLIGENT: stays where it is until moved or until it fails")
    if view is None:
        lines.append("  hakeeperd is not running here: no membership, no failover from this node")
        return lines
    current = holders[0] if holders else None
    following = decide.next_nodes(h, view, failed=[current] if current else [])
    if following:
        lines.append(f"  next: {following[0]} (priority {h.priorities[following[0]]}), if {current or 'it'} fails")
    else:
        lines.append("  next: no other live node it is extended to")
    owner = failover.owner(h) if isinstance(failover, Failover) else None
    if owner is not None:
        lines.append(f"  owner: {owner}, as this node's voter last accepted it")
    next_try = failover.retries.next_try(h.name) if isinstance(failover, Failover) else None
    if next_try:
        lines.append(f"  retry: {next_try}")
    quorum = failover.quorum.lost if isinstance(failover, Failover) else False
    blocked = getattr(failover, "blocked", {}).get(h.name)
    if quorum:
        lines.append("  blocked: this node lost quorum; it takes nothing over")
    if blocked:
        lines.append(f"  blocked: {blocked}")
    fence = str(lcd.settings()["fence_command"]).strip()
    lines.append(f"  fencing: {fence if fence else 'none (fence_command is not set)'}")
    return lines


def lease_lines(lcd: Lcd, h: Hierarchy, timeout: Callable[[str], float] | None = None) -> list[str]:
    """What the lease is for ``h`` after a quorum loss, and a warning when its clients may be cut too late."""
    lines = []
    cut = lease.cut_line(lcd, h)
    if cut:
        lines.append(f"  lease: {cut}")
    warning = lease.advice(lcd, h, timeout)
    if warning:
        lines.append(f"  warning: {warning}")
    return lines


def _remove_timeout(services: DaemonServices, lcd: Lcd) -> Callable[[str], float]:
    """A resource's configured remove timeout, from the kits hakeeperd has loaded."""

    def timeout(tag: str) -> float:
        resource = lcd.resource(tag)
        try:
            return float(services.engine.kit_of(resource).timeout("remove", resource))
        except HakeeperError:  # no kit for it: the engine's default
            return DEFAULT_TIMEOUTS["remove"]

    return timeout


async def _why_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    if _on_witness(ctx.lcd, args.tag):
        ctx.print(await _witness_sentence(ctx, args.tag))
        return 0
    failover = ctx.daemon.failover
    h = _hierarchy(ctx.lcd, args.tag)
    views = await failover.views()
    view = failover.view()
    q = await failover.quorum.now()
    lines = _why_lines(ctx.lcd, h, view, failover.in_service(views), failover)
    lines.append(f"  quorum: {'yes' if q.ok else 'NO'} ({q.why}, quorum_mode={ctx.lcd.settings()['quorum_mode']})")
    advice = failover.quorum.advice()
    if advice:
        lines.append(f"  warning: {advice}")
    lines += lease_lines(ctx.lcd, h, _remove_timeout(ctx.daemon, ctx.lcd))
    for node in sorted(set(h.priorities) & view.alive - {view.me} - set(views)):
        lines.append(f"  {node} did not say what it runs")
    ctx.out.write("".join(line + "\n" for line in lines))
    return 0


@command(
    "why",
    "say why a hierarchy is where it is, where it would go next, and what would block that",
    arg("tag", metavar="TAG", help="a resource of the hierarchy"),
    in_daemon=_why_in_daemon,
)
def _why(ctx: Context, args: argparse.Namespace) -> int:
    if _on_witness(ctx.lcd, args.tag):
        ctx.print(_witness_offline(ctx.lcd, args.tag))
        return 0
    h = _hierarchy(ctx.lcd, args.tag)
    here = [t for t, _id, state, _reason in ctx.lcd.summaries() if state.in_service]
    lines = _why_lines(ctx.lcd, h, None, {ctx.lcd.local_node: here}, None) + lease_lines(ctx.lcd, h)
    ctx.out.write("".join(line + "\n" for line in lines))
    return 0


def _answer(args: argparse.Namespace) -> bool:
    if bool(args.yes) == bool(args.no):
        raise UsageError("give -y (take over) or -n (do not), one of them")
    return bool(args.yes)


async def _confirmso_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    yes = _answer(args)
    other_node(ctx.lcd, args.system)
    ctx.print(ctx.daemon.failover.fencing.confirm(args.system, yes))
    return 0


@command(
    "lk_confirmso",
    "confirm (-y) or refuse (-n) a failover from a node that waits for confirmation",
    arg("-y", dest="yes", action="store_const", const=True, help="take the hierarchies over"),
    arg("-n", dest="no", action="store_const", const=True, help="do not take them over"),
    arg("-s", dest="system", required=True, metavar="NODE", help="the node that failed"),
    epilog="A failover from NODE waits for this when this node has the flag confirmso!NODE\n"
    "(flg_create -f confirmso!node1); after confirmso_timeout, confirmso_default decides.",
    in_daemon=_confirmso_in_daemon,
)
def _confirmso(ctx: Context, args: argparse.Namespace) -> int:
    _answer(args)
    other_node(ctx.lcd, args.system)
    raise CommunicationFailed("no failover waits without hakeeperd on this node (see: lkstart)")
