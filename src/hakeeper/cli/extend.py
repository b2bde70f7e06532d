"""``hakeeper extend`` and ``hakeeper unextend``: a hierarchy onto another node, and off it again.

Both reach the other node through hakeeperd (see :mod:`hakeeper.cluster.extend`).
Without hakeeperd they check what can be checked here and then say that it
must run; a refusal changes no LCD.
"""

from __future__ import annotations

import argparse

from hakeeper.cli.base import Context, arg, command
from hakeeper.cluster.extend import extend, plan_extend, plan_unextend, unextend
from hakeeper.errors import HakeeperError, IllegalArgument, error_for

TARGET = arg("-s", dest="node", required=True, metavar="NODE", help="the other node (LifeKeeper's target server)")


def _targets(args: argparse.Namespace) -> list[str]:
    nodes: list[str] = []
    for node in args.nodes:
        if node in nodes:
            raise IllegalArgument(f"node {node!r} is named twice")
        nodes.append(node)
    if args.priority is not None and len(nodes) > 1:
        raise IllegalArgument("-p gives one node's priority: with several -s, each gets the next free one")
    return nodes


async def _extend_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    nodes = _targets(args)
    for i, node in enumerate(nodes):
        try:
            tags, priority = await extend(ctx.daemon, args.tag, node, args.priority, ctx.actor)
        except HakeeperError as exc:
            if i == 0:
                raise
            done = ", ".join(nodes[:i])
            raise error_for(exc.exit_code, f"{exc} (extended already, and kept: {done})") from None
        ctx.print(f"{args.tag} extended to {node} with priority {priority}: {', '.join(tags)}")
    return 0


@command(
    "extend",
    "extend a hierarchy to other nodes: TAG and every resource below it that a node lacks",
    arg("-t", dest="tag", required=True, metavar="TAG", help="the top of the hierarchy"),
    arg(
        "-s",
        dest="nodes",
        required=True,
        action="append",
        metavar="NODE",
        help="the other node (LifeKeeper's target server); several -s extend to each in turn",
    ),
    arg("-p", dest="priority", type=int, help="priority there, 1 (highest) to 1024 (default: the next free)"),
    epilog="The node adopts each resource through its kit (gen/app: the copied scripts), validates it, and\n"
    "records it out of service (OSU); then the equivalencies are made on every node of the hierarchy.\n"
    "Refused (one line, no LCD changed anywhere) when the node cannot be reached (exit 9), when a kit\n"
    "does not validate there, or when the priority is taken. With several -s, the nodes are extended to\n"
    "one after the other, each all or nothing; a refusal names those already done, which stay extended.\n"
    "Example: hakeeper extend -t web -s node2 -p 10; hakeeper extend -t web -s node2 -s node3",
    in_daemon=_extend_in_daemon,
)
def _extend(ctx: Context, args: argparse.Namespace) -> int:
    nodes = _targets(args)
    for node in nodes:  # bad input is reported before the missing daemon
        plan_extend(ctx.lcd, args.tag, node, args.priority)
    raise ctx.needs_daemon(nodes[0])


async def _unextend_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    tags = await unextend(ctx.daemon, args.tag, args.node, ctx.actor)
    ctx.print(f"{args.tag} unextended from {args.node}: {', '.join(tags)}")
    return 0


@command(
    "unextend",
    "take a hierarchy off another node: TAG and the resources below it that only it needs there",
    arg("-t", dest="tag", required=True, metavar="TAG", help="the top of the hierarchy"),
    TARGET,
    epilog="Refused while one of them is in service on that node. The equivalencies to the node go first\n"
    "(on every node of the hierarchy), then the node runs the kits' delete actions (gen/app: its copied\n"
    "scripts) and removes the resources. This node's own copy stays: to remove it, run unextend on\n"
    "another node of the hierarchy, naming this one.",
    in_daemon=_unextend_in_daemon,
)
def _unextend(ctx: Context, args: argparse.Namespace) -> int:
    plan_unextend(ctx.lcd, args.tag, args.node)  # bad input is reported before the missing daemon
    raise ctx.needs_daemon(args.node)
