"""LCDI commands about nodes: the nodes an LCD knows (``sys_*``), the communication paths to them (``net_*``),
and the cluster-wide settings (``settings``)."""

from __future__ import annotations

import argparse
import json

from hakeeper.cli.base import Context, arg, command
from hakeeper.db import Lcd
from hakeeper.db.model import CommPath
from hakeeper.errors import AlreadyExists, CommunicationFailed, HakeeperError, IllegalArgument, NotFound, UsageError

NODE = arg("-s", dest="node", required=True, help="node name")


@command(
    "sys_create",
    "add a node to this LCD; with -a, to every member's, with paths on every network both are on",
    NODE,
    arg("-a", dest="addresses", action="append", metavar="ADDRESS[/PREFIX]",
        help="an address NODE announced, one per network, in priority order (repeat it): NODE is registered "
             "on every node of the cluster, each making a path from its own address on that network"),
    arg("-l", dest="own", action="append", metavar="ADDRESS[/PREFIX]",
        help="with -a: this node's own addresses (default: its paths' local addresses, then its interfaces')"),
    arg("--witness", action="store_const", const=True, help="with -a: NODE is a witness (it holds no resources)"),
    epilog="Without -a, as LifeKeeper: NODE is added here only, and net_create makes its paths.\n"
    "With -a (what 'hakeeper cluster serve-join' runs for a joining node) it is idempotent: a node\n"
    "or path that exists stays. Through hakeeperd the change reaches every member at once (one that\n"
    "is down learns it when it is back); without hakeeperd it is made here and kept for the others,\n"
    "who learn it once hakeeperd runs here.",
)  # fmt: skip
def _sys_create(ctx: Context, args: argparse.Namespace) -> int:
    if args.addresses is None:
        if args.own is not None or args.witness:
            raise UsageError("-l and --witness go with -a (see: sys_create --help)")
        ctx.lcd.create_node(args.node)
        return 0
    from hakeeper.cluster.configsync import deferred_replicator
    from hakeeper.comm.announce import announced

    lcd = ctx.lcd
    own = announced(args.own) if args.own is not None else _own_addresses(lcd)
    if not ctx.replicated:  # no hakeeperd: the other members are told once it runs here
        lcd.replicator = deferred_replicator(lcd, ctx.actor)
    created = lcd.register_node(args.node, args.addresses, {lcd.local_node: own}, witness=bool(args.witness))
    for path in created:
        ctx.print(f"path to {path.node}: {path.local} -> {path.remote} (priority {path.priority})")
    return 0


def _own_addresses(lcd: Lcd) -> list[str]:
    """This node's addresses for new paths: its paths' local ones if it has paths, else its interfaces'."""
    from hakeeper.comm.announce import interface_addresses

    locals_ = list(dict.fromkeys(p.local for p in lcd.paths()))
    return locals_ if locals_ else interface_addresses()


@command("sys_remove", "remove a node that no equivalency names", NODE)
def _sys_remove(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.remove_node(args.node)
    return 0


@command(
    "sys_list",
    "list the nodes this LCD knows (a witness: a second field 'witness')",
    listing=True,
    epilog="A witness counts for quorum and holds no resources: this node when it has the flag\n"
    "'witness', another node when it joined as one (hakeeper cluster join --witness).",
)
def _sys_list(ctx: Context, args: argparse.Namespace) -> int:
    nodes = ctx.lcd.nodes()
    witnesses = set(ctx.lcd.witnesses())
    rows = [[n.name, "witness"] if n.name in witnesses else [n.name] for n in nodes]
    ctx.rows(args, rows, [{"name": n.name, "local": n.local, "witness": n.name in witnesses} for n in nodes])
    return 0


@command(
    "sys_getds",
    "print a node's description (made from what the LCD knows of it: hakeeper keeps no free text)",
    NODE,
)
def _sys_getds(ctx: Context, args: argparse.Namespace) -> int:
    lcd = ctx.lcd
    _require_node(ctx, args.node)
    if args.node == lcd.local_node:
        ctx.print(f"{args.node}: this node")
        return 0
    paths = lcd.paths(args.node)
    if not paths:
        ctx.print(f"{args.node}: no communication path (see: net_create)")
    else:
        pairs = ", ".join(f"{p.local}/{p.remote}" for p in paths)
        ctx.print(f"{args.node}: {len(paths)} communication path{'s' if len(paths) > 1 else ''} {pairs}")
    return 0


@command(
    "sys_getst",
    "print a node's state: ALIVE, DEAD or UNKNOWN",
    NODE,
    epilog="This node is ALIVE while hakeeperd runs on it, else DEAD. Another node is ALIVE while one of\n"
    "its communication paths is, DEAD once all are, UNKNOWN without paths or without hakeeperd here.",
)
def _sys_getst(ctx: Context, args: argparse.Namespace) -> int:
    from hakeeper.cli.daemon import holds_lock
    from hakeeper.comm.paths import PathState, read_states
    from hakeeper.layout import PID_NAME

    lcd = ctx.lcd
    _require_node(ctx, args.node)
    if args.node == lcd.local_node:
        ctx.print("ALIVE" if holds_lock(ctx.root / PID_NAME) else "DEAD")
        return 0
    states = read_states(ctx.root)
    seen = {states.get(p.key, PathState.UNKNOWN) for p in lcd.paths(args.node)}
    if PathState.ALIVE in seen:
        ctx.print(PathState.ALIVE.value)
    else:
        ctx.print(PathState.DEAD.value if seen == {PathState.DEAD} else PathState.UNKNOWN.value)
    return 0


def _require_node(ctx: Context, node: str) -> None:
    if node not in {n.name for n in ctx.lcd.nodes()}:
        raise NotFound(f"no node named {node!r} (see: sys_list)")


PEER_TIMEOUT = 10.0  # net_create: how long the other node may take to create its end


def _reverse_argv(ctx: Context, path: CommPath) -> list[str]:
    return ["-s", ctx.lcd.local_node, "-l", path.remote, "-r", path.local, "--local-only"]


async def _net_create_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    """This end here, then the other end on the other node through its hakeeperd, over the paths to it."""
    _check_kind(args)
    path = await ctx.daemon.change_replicated(
        ctx.actor, lambda lcd: lcd.create_path(args.node, args.local, args.remote, args.priority)
    )
    if args.local_only:
        return 0
    argv = _reverse_argv(ctx, path)
    request = {"command": "net_create", "argv": argv, "user": ctx.actor}
    try:
        answer = await ctx.daemon.request(args.node, "run", request, timeout=PEER_TIMEOUT)
        if not isinstance(answer, dict):
            raise CommunicationFailed(f"{args.node} gave a malformed answer")
        code, err = int(answer.get("code", 1)), str(answer.get("err", "")).strip()
    except HakeeperError as exc:
        code, err = exc.exit_code, str(exc)
    if code == 0:
        ctx.print(
            f"created both ends: {path.local} -> {path.remote} here, {path.remote} -> {path.local} on {args.node}"
        )
    elif code == AlreadyExists.exit_code:
        ctx.print(f"created here; {args.node} has its end already")
    else:
        ctx.warn(_one_end(args.node, err, argv))
    return 0


def _one_end(node: str, why: str, argv: list[str]) -> str:
    why = " ".join(why.split()) or "no answer"
    there = " ".join(argv[:-1])
    return f"net_create: warning: this end only: {node} did not create its end ({why}); there: net_create {there}"


def _check_kind(args: argparse.Namespace) -> None:
    if args.kind.upper() != "TCP":
        raise IllegalArgument(f"path kind {args.kind!r}: only TCP paths exist in hakeeper")


@command(
    "net_create",
    "create a communication path to another node, both ends when the other node can be reached",
    arg("-s", dest="node", required=True, help="the other node"),
    arg("-n", dest="kind", default="TCP", help="TCP (the only kind; LifeKeeper's TTY paths do not exist here)"),
    arg("-l", dest="local", required=True, help="this node's address on the path"),
    arg("-r", dest="remote", required=True, help="the other node's address on the path"),
    arg("-p", dest="priority", type=int, help="priority 1 (first choice for messages) to 99 (default: next free)"),
    arg("--local-only", dest="local_only", action="store_true", help="this end only (as LifeKeeper's net_create)"),
    epilog="As LifeKeeper's 'Create Comm Path': through hakeeperd, the other node is asked (over the paths\n"
    "to it, this one included) to create its end (its next free priority); it must know this node\n"
    "(sys_list). When it cannot be reached or refuses, this end stays, the exit code is 0 and one\n"
    "line on stderr says so, with the command to run there. Without hakeeperd, this end only (the\n"
    "same warning). A node has several paths; it is dead only when all are.",
    in_daemon=_net_create_in_daemon,
)  # fmt: skip
def _net_create(ctx: Context, args: argparse.Namespace) -> int:
    _check_kind(args)
    path = ctx.lcd.create_path(args.node, args.local, args.remote, args.priority)
    if not args.local_only:
        ctx.warn(_one_end(args.node, "hakeeperd does not run here to ask it", _reverse_argv(ctx, path)))
    return 0


@command(
    "net_remove",
    "remove communication paths to a node (all of them, or those with the addresses given)",
    arg("-s", dest="node", required=True, help="the other node"),
    arg("-l", dest="local", help="only the path from this local address"),
    arg("-r", dest="remote", help="only the path to this remote address"),
)
def _net_remove(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.remove_path(args.node, args.local, args.remote)
    return 0


def _address_pair(text: str, option: str) -> tuple[str, str]:
    local, sep, remote = text.partition("/")
    if not sep or not local or not remote or "/" in remote:
        raise IllegalArgument(f"{option} {text!r} is not LOCAL/REMOTE (an address pair, as net_list shows it)")
    return local, remote


@command(
    "net_change",
    "change a communication path: its address pair, or the node it goes to",
    arg("-s", dest="node", required=True, help="the node the path goes to"),
    arg("-D", dest="device", required=True, metavar="LOCAL/REMOTE", help="the path, by its address pair"),
    arg("-N", dest="new_node", metavar="NODE", help="the node it goes to from now on"),
    arg("-P", dest="new_device", metavar="LOCAL/REMOTE", help="its new address pair"),
    arg("-n", dest="kind", default="TCP", help="TCP (the only kind; LifeKeeper's TTY paths do not exist here)"),
    arg("-b", dest="baud", help="a TTY path's speed: refused, hakeeper has TCP paths only"),
    epilog="example: net_change -s node2 -D 198.18.0.11/198.18.0.12 -P 198.18.1.11/198.18.1.12\n"
    "The path keeps its priority (on another node: unless taken, then the lowest free one).",
)
def _net_change(ctx: Context, args: argparse.Namespace) -> int:
    if args.kind != "TCP":
        raise IllegalArgument(f"path kind {args.kind!r}: only TCP paths exist in hakeeper")
    if args.baud is not None:
        raise IllegalArgument("-b sets a TTY path's speed: hakeeper has TCP paths only")
    local, remote = _address_pair(args.device, "-D")
    new_local, new_remote = _address_pair(args.new_device, "-P") if args.new_device is not None else (None, None)
    if args.new_node is None and args.new_device is None:
        raise UsageError("nothing to change: give -P LOCAL/REMOTE, -N NODE or both (see: net_change --help)")
    ctx.lcd.change_path(args.node, local, remote, new_node=args.new_node, new_local=new_local, new_remote=new_remote)
    return 0


@command(
    "net_list",
    "list communication paths as node, kind, local address, remote address, priority, state",
    arg("-s", dest="node", help="only the paths to this node"),
    listing=True,
)
def _net_list(ctx: Context, args: argparse.Namespace) -> int:
    from hakeeper.comm.paths import PathState, read_states

    if args.node is not None and args.node not in {n.name for n in ctx.lcd.nodes()}:
        raise NotFound(f"no node named {args.node!r} (see: sys_list)")
    states = read_states(ctx.root)
    paths = ctx.lcd.paths(args.node)
    rows = [[p.node, p.kind, p.local, p.remote, p.priority, states.get(p.key, PathState.UNKNOWN).value] for p in paths]
    keys = ("node", "kind", "local", "remote", "priority", "state")
    ctx.rows(args, rows, [dict(zip(keys, row, strict=True)) for row in rows])
    return 0


@command(
    "settings",
    "show or change the settings: the cluster's (heartbeat timing, comm port...) and this node's shutdown strategy",
    arg("assignments", nargs="*", metavar="NAME=VALUE", help="settings to change, checked together"),
    arg("--json", action="store_true", help="print JSON instead"),
    epilog="The heartbeat interval times the misses is how long a silent node takes to be declared dead;\n"
    "it must stay within 0.2..120 s. Settings must be equal on every node: heartbeats carry them, and a\n"
    "change is made on every node or on none. shutdown_strategy is each node's own, as in LifeKeeper:\n"
    "hakeeper settings 'shutdown_strategy=Switch Over Resources' -d node2 sets node2's.",
)
def _settings(ctx: Context, args: argparse.Namespace) -> int:
    from hakeeper.db.settings import SETTINGS, detection_budget

    lcd = ctx.lcd
    if args.assignments:
        changes: dict[str, str] = {}
        for item in args.assignments:
            name, eq, value = item.partition("=")
            if not eq or not name:
                raise IllegalArgument(f"{item!r} is not NAME=VALUE")
            changes[name] = value
        lcd.set_settings(changes)
    values = lcd.settings()
    if args.json:
        ctx.print(json.dumps({**values, "detection_budget": detection_budget(values)}, indent=2))
        return 0
    for name, setting in SETTINGS.items():
        also = f"; LifeKeeper: {setting.lifekeeper}" if setting.lifekeeper else ""
        ctx.print(f"{name}={values[name]}  ({setting.description}{also})")
    ctx.print(f"a silent node is declared dead after {detection_budget(values):g} s")
    return 0
