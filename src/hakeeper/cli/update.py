"""``hakeeper update``: change a resource's parameters (gen/app: its scripts) on every node of its hierarchy at once.

See :mod:`hakeeper.cluster.update`.
"""

from __future__ import annotations

import argparse

from hakeeper.cli.actions import kits_of, parse_params
from hakeeper.cli.base import Context, arg, command
from hakeeper.cluster.update import update, update_here
from hakeeper.kits.base import Revision


def _say(ctx: Context, tag: str, revision: Revision, nodes: list[str]) -> int:
    if not revision.changed:
        ctx.print(f"{tag}: nothing to change (the values given are the ones it has)")
    else:
        ctx.print(f"{tag} updated on {', '.join(nodes)}: {', '.join(revision.changed)}")
    return 0


async def _update_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    nodes, revision = await update(ctx.daemon, args.tag, parse_params(args.params), ctx.actor)
    return _say(ctx, args.tag, revision, nodes)


@command(
    "update",
    "change a resource's parameters (gen/app: its scripts) on every node of its hierarchy at once",
    arg("-t", dest="tag", required=True, metavar="TAG", help="the resource"),
    arg("params", nargs="+", metavar="NAME=VALUE", help="the kit's parameters to change (see: hakeeper kits)"),
    epilog="The kit checks the new values; every node of the hierarchy gets what it needs (gen/app: the new\n"
    "scripts, copied beside the live ones), then the change is recorded on every node or on none.\n"
    "gen/app: restore=, remove=, quickCheck=, recover= (a path; quickCheck= or recover= empty drops it),\n"
    "info=, timeout=, check_timeout=. comm/ip: all but address=; interface= and backup_interface= only\n"
    "while it runs nowhere. Refused (one line, nothing changed) when a node cannot be reached (exit 9).\n"
    "Example: hakeeper update -t web restore=/opt/web/start-v2 timeout=60",
    intermixed=True,
    in_daemon=_update_in_daemon,
)
def _update(ctx: Context, args: argparse.Namespace) -> int:
    lcd = ctx.lcd
    revision = update_here(lcd, kits_of(ctx, lcd), args.tag, parse_params(args.params))
    return _say(ctx, args.tag, revision, [lcd.local_node])
