"""The LCDI commands in LifeKeeper's shapes:
``ins_*``, ``dep_*``, ``eqv_*``, ``typ_*``, ``app_*``, ``flg_*`` and ``changes``
(nodes, paths and settings: :mod:`hakeeper.cli.nodes`).

Listings print one record a line, fields separated by ^A as LifeKeeper does
(``-f:`` picks another separator), or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import enum
import json
import time
from collections.abc import Iterable
from typing import TypeVar

from hakeeper.cli.base import Context, arg, command
from hakeeper.db import Lcd, graph
from hakeeper.db.catalog import WITNESS
from hakeeper.db.model import Resource, info_text, parse_info
from hakeeper.db.states import SETTABLE_STATES, Init, State, Switchback
from hakeeper.errors import DeleteRefused, IllegalArgument, NotFound, OutOfRange, SystemCallFailed, UsageError

E = TypeVar("E", bound=enum.Enum)

TAG = arg("-t", dest="tag", required=True, metavar="TAG", help="resource tag")


def enum_value(kind: type[E], value: str, what: str, allowed: Iterable[E] | None = None) -> E:
    choices = list(allowed if allowed is not None else kind)
    for member in choices:
        if member.name == value.upper():
            return member
    names = "|".join(m.name for m in choices)
    raise IllegalArgument(f"{what} {value!r} is not one of {names}")


def yes_no(value: str, what: str) -> bool:
    if value.upper() in ("Y", "YES"):
        return True
    if value.upper() in ("N", "NO"):
        return False
    raise IllegalArgument(f"{what} {value!r} is not Y or N")


def _yn(flag: bool) -> str:
    return "Y" if flag else "N"


# ---------------------------------------------------------------------- instances

RESOURCE_FIELDS = "app, type, tag, id, state, reason, initialize, switchback, quickCheck interval, local recovery, info"


def _resource_row(r: Resource) -> list[object]:
    return [
        r.app,
        r.type,
        r.tag,
        r.id,
        r.state.name,
        r.reason,
        r.init.name,
        r.switchback.name,
        r.check_interval,
        _yn(r.local_recover),
        info_text(r.info),
    ]


@command(
    "ins_create",
    "create a resource instance (out of service, on this node)",
    arg("-a", dest="app", required=True, help="application (see: app_list)"),
    arg("-r", dest="type", required=True, help="resource type (see: typ_list)"),
    TAG,
    arg("-i", dest="id", required=True, help="unique resource id"),
    arg("-I", dest="init", default="AUTORES_ISP", help="AUTORES_ISP (default) | INIT_ISP | INIT_OSU"),
    arg("-v", dest="info", default="", help="info: a string, or a JSON object for kit data"),
    arg("-s", dest="switchback", default="INTELLIGENT", help="switchback: INTELLIGENT (default) | AUTOMATIC"),
    arg("-Q", dest="interval", type=int, default=120, help="quickCheck interval in seconds (default 120, 0 = off)"),
    arg("-l", dest="local_recover", default="Y", help="local recovery Y (default) | N"),
)
def _ins_create(ctx: Context, args: argparse.Namespace) -> int:
    if not any(t.type == args.type for t in ctx.lcd.types(args.app)):
        learn_kits(ctx)  # a kit installed since the LCD last looked
    ctx.lcd.create_resource(
        args.tag,
        args.id,
        args.app,
        args.type,
        info=parse_info(args.info),
        init=enum_value(Init, args.init, "initialization"),
        switchback=enum_value(Switchback, args.switchback, "switchback"),
        check_interval=args.interval,
        local_recover=yes_no(args.local_recover, "local recovery"),
    )
    return 0


def learn_kits(ctx: Context) -> None:
    """Register the application and type of every kit installed since the LCD last looked (kits.registry)."""
    from hakeeper.kits.registry import register_kits

    register_kits(ctx.lcd, ctx.root)


def _kit_serves(ctx: Context, app: str | None, rtype: str | None) -> bool:
    """Whether an installed kit serves ``app`` / ``rtype`` (registered in the LCD or not)."""
    from hakeeper.kits.base import KitContext
    from hakeeper.kits.registry import Kits

    kits = [n.partition("/") for n in Kits(KitContext(ctx.root, ctx.lcd.local_node)).names()]
    return any(app in (None, a) and rtype in (None, t) for a, _, t in kits)


def _known(ctx: Context, app: str | None, rtype: str | None) -> bool:
    if app is not None and app not in ctx.lcd.apps():
        return False
    return rtype is None or any(t.type == rtype and app in (None, t.app) for t in ctx.lcd.types())


def require_app_type(ctx: Context, app: str | None, rtype: str | None) -> None:
    """An -a / -r filter must name something that exists: a typo is an error, not an empty list."""
    if not _known(ctx, app, rtype):
        if ctx.readonly:  # a listing cannot register a kit installed since: it names nothing yet, which is no error
            if _kit_serves(ctx, app, rtype):
                return
        else:
            learn_kits(ctx)  # unless a kit installed since the LCD last looked serves it
    if app is not None and app not in ctx.lcd.apps():
        raise NotFound(f"no application named {app!r} (see: app_list)")
    if rtype is not None and not any(t.type == rtype and app in (None, t.app) for t in ctx.lcd.types()):
        raise NotFound(f"no resource type {rtype!r}" + (f" in {app!r}" if app else "") + " (see: typ_list)")


def _tops(roots: list[str]) -> list[str]:
    """The tags of -R (repeated, or several separated by ^A); naming none is an error, not "no resource"."""
    tops = [t for group in roots for t in group.split("\x01") if t]
    if not tops:
        raise IllegalArgument("-R names no tag (give TOP, or several tops separated by ^A)")
    return tops


def _select(ctx: Context, args: argparse.Namespace) -> list[Resource]:
    """Resources chosen by -R / -a / -r / -t / -i (all given filters apply)."""
    lcd = ctx.lcd
    require_app_type(ctx, args.app, args.type)
    if args.tag is not None:
        if not args.tag:
            raise IllegalArgument("-t names no tag (it is empty)")
        lcd.resource(args.tag)
    if args.id is not None:
        lcd.tag_of(args.id)
    chosen = lcd.resources(app=args.app, type=args.type, tag=args.tag, id=args.id)
    if args.roots is not None:
        tops = _tops(args.roots)
        for top in tops:
            lcd.resource(top)
        under = set(tops)
        kids = graph.children_of(lcd.edges())
        for top in tops:
            under |= graph.reachable(kids, top)
        chosen = [r for r in chosen if r.tag in under]
    return chosen


SELECTORS = (
    arg("-R", dest="roots", action="append", metavar="TOP", help="hierarchies under TOP (several: repeat, or ^A)"),
    arg("-a", dest="app", help="application"),
    arg("-r", dest="type", help="resource type"),
    arg("-t", dest="tag", help="tag"),
    arg("-i", dest="id", help="id"),
)


@command("ins_list", "list resource instances", *SELECTORS, listing=True, epilog=f"fields: {RESOURCE_FIELDS}")
def _ins_list(ctx: Context, args: argparse.Namespace) -> int:
    chosen = _select(ctx, args)
    if args.json:
        ctx.rows(args, [], [r.as_json() for r in chosen])
    else:
        ctx.rows(args, [_resource_row(r) for r in chosen], None)
    return 0


@command(
    "ins_remove",
    "remove resource instances and everything that depends on them",
    *SELECTORS,
    arg("-v", dest="verbose", action="store_true", help="print the removed tags"),
    arg("-I", dest="initialize", action="store_true",
        help="take what is in service here out of service first (remove actions, parents first)"),
    arg("-N", dest="no_delete", action="store_true", help="do not run the types' delete actions"),
    arg("-G", dest="no_globals", action="store_true", help="do not run the app-wide predelete/postdelete scripts"),
    arg("-U", dest="unconditional", action="store_true",
        help="a failing delete action is reported on stderr, and the removal goes on"),
    epilog="Dependents go first (parents before children); each type's delete action, if it has one,\n"
    "runs before its instance is removed. -R removes the hierarchies rooted at TOP, keeping\n"
    "children that other hierarchies still need.",
)  # fmt: skip
def _ins_remove(ctx: Context, args: argparse.Namespace) -> int:
    filters = (args.app, args.type, args.tag, args.id)
    if args.roots is None and all(f is None for f in filters):
        raise UsageError("name what to remove with -R, -a, -r, -t or -i (see: ins_remove --help)")
    rooted = args.roots is not None and all(f is None for f in filters)
    if rooted:
        tags = _tops(args.roots)
        for top in tags:
            ctx.lcd.resource(top)
    else:
        tags = [r.tag for r in _select(ctx, args)]
    if not tags:
        raise NotFound("no resource matches (see: ins_list)")
    if args.initialize:
        doomed = graph.rooted_at(ctx.lcd.edges(), tags) if rooted else tags
        take_out_of_service(ctx, doomed, run_globals=not args.no_globals)
    removed = remove_with_actions(
        ctx, tags, run_delete=not args.no_delete, rooted=rooted, run_globals=not args.no_globals,
        go_on=args.unconditional,
    )  # fmt: skip
    if args.verbose:
        for tag in removed:
            ctx.print(tag)
    return 0


def take_out_of_service(ctx: Context, tags: list[str], *, run_globals: bool) -> None:
    """``ins_remove -I``: what is to be removed and not OSU here is taken out of service first, parents first."""
    import asyncio

    from hakeeper.kits.base import KitContext
    from hakeeper.kits.registry import Kits
    from hakeeper.recovery.engine import Engine

    lcd = ctx.lcd
    doomed = set(lcd.removal_order(tags))
    if all(r.state is State.OSU for r in lcd.resources() if r.tag in doomed):
        return
    engine = Engine(lcd, Kits(KitContext(ctx.root, lcd.local_node, run_globals)))
    reason = f"ins_remove -I by {ctx.actor}"
    report = asyncio.run(engine.remove_all_of(doomed, reason=reason, target=", ".join(sorted(tags))))
    if not report.ok:
        raise SystemCallFailed(f"{report.summary()}; nothing was removed")


def remove_with_actions(
    ctx: Context,
    tags: list[str],
    *,
    run_delete: bool,
    rooted: bool = False,
    run_globals: bool = True,
    go_on: bool = False,
) -> list[str]:
    """Remove ``tags`` and their dependents (``rooted``: the hierarchies rooted at them), one change in the LCD.

    Each kit's delete action runs first, parents first; a failing action stops
    there (unless ``go_on``, ``ins_remove -U``: then it is reported and the
    resource removed all the same), and what was handled before it is removed
    (still one change), so the LCD matches what the actions have undone.
    ``run_globals``: false for ``ins_remove -G`` (no app-wide scripts). The
    removal is decided again in the LCD's write transaction: a resource that
    came to depend on what is removed after the actions were chosen is removed
    too if it has no delete action, else the removal is refused and nothing is
    removed from the LCD.
    """
    import asyncio

    from hakeeper.kits.base import KitContext
    from hakeeper.kits.registry import Kits
    from hakeeper.recovery.engine import call

    lcd = ctx.lcd
    order = lcd.removal_order(graph.rooted_at(lcd.edges(), tags) if rooted else tags)
    resources = {r.tag: r for r in lcd.resources()}
    kits = Kits(KitContext(ctx.root, lcd.local_node, run_globals))

    def has_delete(tag: str) -> bool:
        resource = resources.get(tag) or lcd.resource(tag)
        return run_delete and kits.find(resource.app, resource.type) is not None

    with_kit = {tag for tag in order if has_delete(tag)}
    done: list[str] = []
    failure = ""
    for tag in order:
        if tag in with_kit:
            result = asyncio.run(call(kits.get(resources[tag].app, resources[tag].type), "delete", resources[tag]))
            if not result.ok and go_on:
                ctx.warn(f"ins_remove: {result.message}; {tag} removed all the same (-U)")
            elif not result.ok:
                failure = result.message
                break
        done.append(tag)

    def as_planned(doomed: list[str]) -> None:  # in the LCD's write transaction
        ran = set(done) & with_kit
        if with_kit and set(doomed) != set(done):
            changed = ", ".join(sorted(set(doomed) ^ set(done)))
            raise DeleteRefused(
                f"the hierarchy changed ({changed}) while the delete actions of {', '.join(sorted(ran))} ran; "
                "nothing was removed from the LCD (run ins_remove again)"
            )
        late = [tag for tag in doomed if tag not in done and has_delete(tag)]
        if late:
            raise DeleteRefused(
                f"{', '.join(late)} came to depend on what ins_remove removes, and has a delete action "
                "that did not run; nothing was removed (run ins_remove again)"
            )

    removed: list[str] = []
    if done:
        if failure:
            removed = lcd.remove_resources(done, check=as_planned)
        else:
            removed = lcd.remove_resources(tags, rooted=rooted, check=as_planned)
    if failure:
        gone = f"; removed before it: {', '.join(removed)}" if removed else "; nothing was removed"
        raise SystemCallFailed(f"{failure}{gone} (fix it, or skip delete actions with -N)")
    return removed


@command("ins_gettag", "print the tag of the resource with an id", arg("-i", dest="id", required=True, help="id"))
def _ins_gettag(ctx: Context, args: argparse.Namespace) -> int:
    ctx.print(ctx.lcd.tag_of(args.id))
    return 0


def state_value(value: str) -> State:
    """A state ``ins_setstate -S`` may set, by LifeKeeper's name exactly (ISP, ISU, OSU)."""
    names = "|".join(s.name for s in sorted(SETTABLE_STATES))
    if value in State.__members__ and State[value] in SETTABLE_STATES:
        return State[value]
    if value in State.__members__:
        raise IllegalArgument(f"state {value!r} is not one of {names}: hakeeper alone sets {value}")
    hint = f" (LifeKeeper's state names are upper case: {value.upper()})" if value.upper() in names.split("|") else ""
    raise IllegalArgument(f"state {value!r} is not one of {names}{hint}")


@command(
    "ins_setstate",
    "set a resource's state (ISP, ISU or OSU) in the LCD, without running any action",
    TAG,
    arg("-S", dest="state", required=True, help="ISP | ISU | OSU"),
    arg("-R", dest="reason", default="", help="reason recorded with the state"),
    arg("-A", dest="all", action="store_true",
        help="its hierarchy too: ISP or ISU for TAG, all above it and all they need (children first),\n"
        "OSU for TAG and all above it (parents first), as perform_action -a restore or remove would"),
)  # fmt: skip
def _ins_setstate(ctx: Context, args: argparse.Namespace) -> int:
    state = state_value(args.state)
    lcd = ctx.lcd
    reason = args.reason or f"ins_setstate by {lcd.actor}"
    if not args.all:
        lcd.set_state(args.tag, state, reason)
        return 0
    from hakeeper.recovery import plan

    lcd.resource(args.tag)
    edges = lcd.edges()
    if state is State.OSU:
        order = graph.remove_order(edges, plan.remove_set(edges, args.tag))
    else:
        order = graph.restore_order(edges, plan.restore_set(edges, args.tag))
    for tag in order:  # in this order no resource is ever ISP above one that is not in service
        lcd.set_state(tag, state, reason)
    return 0


@command(
    "ins_setinfo",
    "set a resource's info",
    TAG,
    arg("-v", dest="info", default="", help="info: a string, or a JSON object (default: empty)"),
)
def _ins_setinfo(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.set_info(args.tag, parse_info(args.info))
    return 0


@command(
    "ins_setas",
    "set a resource's switchback type",
    TAG,
    arg("-s", dest="switchback", required=True, help="INTELLIGENT | AUTOMATIC"),
)
def _ins_setas(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.set_switchback(args.tag, enum_value(Switchback, args.switchback, "switchback"))
    return 0


@command(
    "ins_setinit",
    "set a resource's initialization",
    TAG,
    arg("-I", dest="init", required=True, help="AUTORES_ISP | INIT_ISP | INIT_OSU"),
)
def _ins_setinit(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.set_init(args.tag, enum_value(Init, args.init, "initialization"))
    return 0


@command(
    "ins_setchkint",
    "set a resource's quickCheck interval",
    TAG,
    arg("-c", dest="check", default="q", help="q: quickCheck (deepCheck does not exist in hakeeper)"),
    arg("-v", dest="interval", type=int, required=True, help="seconds, 0 turns checking off"),
)
def _ins_setchkint(ctx: Context, args: argparse.Namespace) -> int:
    if args.check != "q":
        raise IllegalArgument(f"-c {args.check!r}: only q (quickCheck) exists; hakeeper has no separate deepCheck")
    ctx.lcd.set_check_interval(args.tag, args.interval)
    return 0


@command(
    "ins_setlocalrecover",
    "turn a resource's local recovery on or off",
    TAG,
    arg("-l", dest="local_recover", required=True, help="Y | N"),
)
def _ins_setlocalrecover(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.set_local_recover(args.tag, yes_no(args.local_recover, "local recovery"))
    return 0


# ---------------------------------------------------------------------- dependencies


@command(
    "dep_create",
    "make a parent resource depend on a child",
    arg("-p", dest="parent", required=True, help="parent tag"),
    arg("-c", dest="child", required=True, help="child tag"),
)
def _dep_create(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.create_dependency(args.parent, args.child)
    return 0


@command(
    "dep_remove",
    "remove dependencies (one, all of a parent, or all of a child)",
    arg("-p", dest="parent", help="parent tag"),
    arg("-c", dest="child", help="child tag"),
)
def _dep_remove(ctx: Context, args: argparse.Namespace) -> int:
    if args.parent is None and args.child is None:
        raise UsageError("give -p PARENT, -c CHILD or both (see: dep_remove --help)")
    ctx.lcd.remove_dependency(args.parent, args.child)
    return 0


@command(
    "dep_list",
    "list dependencies as parent, child",
    arg("-C", dest="all_children", metavar="TAG", help="all dependencies below TAG"),
    arg("-P", dest="all_parents", metavar="TAG", help="all dependencies above TAG"),
    arg("-c", dest="of_parent", metavar="TAG", help="the children of TAG"),
    arg("-p", dest="of_child", metavar="TAG", help="the parents of TAG"),
    arg("-a", dest="app", help="only parents of this application"),
    arg("-r", dest="type", help="only parents of this resource type"),
    listing=True,
)
def _dep_list(ctx: Context, args: argparse.Namespace) -> int:
    lcd = ctx.lcd
    picks = [v for v in (args.all_children, args.all_parents, args.of_parent, args.of_child) if v is not None]
    if len(picks) > 1:
        raise UsageError("give at most one of -C, -P, -c, -p (see: dep_list --help)")
    for tag in picks:
        lcd.resource(tag)
    edges = sorted(lcd.edges())
    if args.all_children is not None:
        below = graph.descendants(edges, args.all_children) | {args.all_children}
        edges = [(p, c) for p, c in edges if p in below]
    elif args.all_parents is not None:
        above = graph.ancestors(edges, args.all_parents) | {args.all_parents}
        edges = [(p, c) for p, c in edges if c in above]
    elif args.of_parent is not None:
        edges = [(p, c) for p, c in edges if p == args.of_parent]
    elif args.of_child is not None:
        edges = [(p, c) for p, c in edges if c == args.of_child]
    if args.app is not None or args.type is not None:
        require_app_type(ctx, args.app, args.type)
        keep = {r.tag for r in lcd.resources(app=args.app, type=args.type)}
        edges = [(p, c) for p, c in edges if p in keep]
    ctx.rows(args, edges, [{"parent": p, "child": c} for p, c in edges])
    return 0


# ---------------------------------------------------------------------- equivalencies

EQV_TYPE = arg("-e", dest="kind", default="SHARED", help="SHARED (the only kind)")


def _check_kind(kind: str) -> None:
    if kind.upper() != "SHARED":
        raise IllegalArgument(f"equivalency type {kind!r} is not SHARED (the only kind)")


@command(
    "eqv_create",
    "declare that a resource can run on another node, with a priority",
    arg("-s", dest="node", help="the node TAG lives on (default: this node)"),
    TAG,
    arg("-p", dest="priority", type=int, help="TAG's priority on that node (default: 1, or the next free)"),
    arg("-S", dest="other_node", required=True, help="the other node"),
    arg("-o", dest="other_tag", help="the tag there (default: the same tag)"),
    arg("-r", dest="other_priority", type=int, help="priority there, 1 (highest) to 1024 (default: next free)"),
    EQV_TYPE,
    epilog="As LifeKeeper does, the equivalency is recorded on the other node too, through hakeeperd:\n"
    "on every node of the resource or on none. When hakeeperd does not run here, or the other node\n"
    "cannot record it, eqv_create is refused (exit 9) after its checks, and nothing is written.",
)
def _eqv_create(ctx: Context, args: argparse.Namespace) -> int:
    _check_kind(args.kind)
    change = {
        "tag": args.tag,
        "other_node": args.other_node,
        "other_tag": args.other_tag,
        "other_priority": args.other_priority,
        "node": args.node,
        "priority": args.priority,
    }
    if not ctx.replicated:  # the other node cannot record its side: check, then refuse (as extend does)
        ctx.lcd.try_change("create_equivalency", change)
        there = args.other_node if args.other_node != ctx.lcd.local_node else args.node
        raise ctx.needs_daemon(there)
    ctx.lcd.create_equivalency(**change)
    return 0


@command(
    "eqv_remove",
    "remove a resource's equivalency on another node",
    arg("-s", dest="node", help="the node TAG lives on (default: this node)"),
    TAG,
    arg("-S", dest="other_node", required=True, help="the other node"),
    arg("-o", dest="other_tag", help="the tag there (checked when given)"),
    EQV_TYPE,
)
def _eqv_remove(ctx: Context, args: argparse.Namespace) -> int:
    _check_kind(args.kind)
    ctx.lcd.remove_equivalency(args.tag, args.other_node, node=args.node, other_tag=args.other_tag)
    return 0


@command(
    "eqv_list",
    "list equivalencies as node, tag, other node, other tag, type, priority, other priority",
    arg("-s", dest="node", help="seen from this node (default: this node)"),
    arg("-t", dest="tag", help="only this tag"),
    listing=True,
)
def _eqv_list(ctx: Context, args: argparse.Namespace) -> int:
    lcd = ctx.lcd
    this = args.node or lcd.local_node
    if this not in {n.name for n in lcd.nodes()}:
        raise NotFound(f"no node named {this!r} (see: sys_list)")
    if args.tag is not None:
        lcd.resource(args.tag)
    by_tag: dict[str, dict[str, tuple[str, int]]] = {}
    for e in lcd.equivalencies(tag=args.tag):
        by_tag.setdefault(e.tag, {})[e.node] = (e.remote_tag, e.priority)
    rows: list[list[object]] = []
    for _tag, entries in sorted(by_tag.items()):
        if this not in entries:
            continue
        mine = entries[this]
        for other, (other_tag, other_prio) in sorted(entries.items(), key=lambda kv: kv[1][1]):
            if other != this:
                rows.append([this, mine[0], other, other_tag, "SHARED", mine[1], other_prio])
    keys = ("node", "tag", "other_node", "other_tag", "type", "priority", "other_priority")
    ctx.rows(args, rows, [dict(zip(keys, row, strict=True)) for row in rows])
    return 0


# ---------------------------------------------------------------------- types, applications, flags, nodes

APP = arg("-a", dest="app", required=True, help="application")


@command(
    "typ_create",
    "create a resource type of an application",
    APP,
    arg("-r", dest="type", required=True, help="resource type"),
)
def _typ_create(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.create_type(args.app, args.type)
    return 0


@command(
    "typ_remove",
    "remove a resource type with all its instances and what depends on them",
    APP,
    arg("-r", dest="type", required=True, help="resource type"),
    arg("-N", dest="no_delete", action="store_true", help="do not run the type's delete actions"),
)
def _typ_remove(ctx: Context, args: argparse.Namespace) -> int:
    lcd = ctx.lcd
    if not any(t.type == args.type for t in lcd.types(args.app)):
        raise NotFound(f"no resource type {args.app!r}/{args.type!r} (see: typ_list)")
    instances = [r.tag for r in lcd.resources(app=args.app, type=args.type)]
    if instances:
        remove_with_actions(ctx, instances, run_delete=not args.no_delete)
    lcd.remove_type(args.app, args.type)
    return 0


@command(
    "typ_list",
    "list resource types as application, type",
    arg("-a", dest="app", help="only this application"),
    listing=True,
)
def _typ_list(ctx: Context, args: argparse.Namespace) -> int:
    learn_kits(ctx)
    require_app_type(ctx, args.app, None)
    types = ctx.lcd.types(args.app)
    ctx.rows(args, [[t.app, t.type] for t in types], [{"app": t.app, "type": t.type} for t in types])
    return 0


@command("app_create", "create an application", APP)
def _app_create(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.create_app(args.app)
    return 0


@command("app_remove", "remove an application that has no resource types", APP)
def _app_remove(ctx: Context, args: argparse.Namespace) -> int:
    ctx.lcd.remove_app(args.app)
    return 0


@command("app_list", "list applications", listing=True)
def _app_list(ctx: Context, args: argparse.Namespace) -> int:
    learn_kits(ctx)
    apps = ctx.lcd.apps()
    ctx.rows(args, [[a] for a in apps], apps)
    return 0


FLAG = arg("-f", dest="flag", required=True, help="flag name")


WITNESS_EPILOG = (
    "The flag 'witness' makes this node a witness (it counts for quorum, holds no resources):\n"
    "every member learns it (through hakeeperd; without it, once hakeeperd runs here) and marks\n"
    "it in sys_list."
)


@command("flg_create", "set an operation flag", FLAG, epilog=WITNESS_EPILOG)
def _flg_create(ctx: Context, args: argparse.Namespace) -> int:
    if args.flag == WITNESS:
        _replicated(ctx).set_witness(True)
    else:
        ctx.lcd.create_flag(args.flag)
    return 0


@command("flg_remove", "clear an operation flag", FLAG, epilog=WITNESS_EPILOG)
def _flg_remove(ctx: Context, args: argparse.Namespace) -> int:
    if args.flag == WITNESS:
        _replicated(ctx).set_witness(False)
    else:
        ctx.lcd.remove_flag(args.flag)
    return 0


def _replicated(ctx: Context) -> Lcd:
    """The LCD, its cluster-wide changes sent on: by hakeeperd, or kept in the outbox until it runs here."""
    lcd = ctx.lcd
    if not ctx.replicated:
        from hakeeper.cluster.configsync import deferred_replicator

        lcd.replicator = deferred_replicator(lcd, ctx.actor)
    return lcd


@command("flg_test", "exit 0 if a flag is set, 7 if it is not", FLAG)
def _flg_test(ctx: Context, args: argparse.Namespace) -> int:
    return 0 if ctx.lcd.has_flag(args.flag) else NotFound.exit_code


@command("flg_list", "list operation flags", listing=True)
def _flg_list(ctx: Context, args: argparse.Namespace) -> int:
    flags = ctx.lcd.flags()
    ctx.rows(args, [[f] for f in flags], flags)
    return 0


@command(
    "changes",
    "print the LCD's change log (every committed change, with its sequence number)",
    arg("--since", type=int, default=0, metavar="SEQ", help="only changes after SEQ"),
    listing=True,
)
def _changes(ctx: Context, args: argparse.Namespace) -> int:
    if not 0 <= args.since < 2**63:
        raise OutOfRange(f"--since {args.since} is outside 0..{2**63 - 1}")
    changes = ctx.lcd.changes(args.since)
    rows = [
        [
            c.seq,
            time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(c.time)),
            c.actor,
            c.op,
            json.dumps(c.args, ensure_ascii=False, sort_keys=True),
        ]
        for c in changes
    ]
    records = [{"seq": c.seq, "time": c.time, "actor": c.actor, "op": c.op, "args": c.args} for c in changes]
    ctx.rows(args, rows, records)
    return 0


# ---------------------------------------------------------------------- communication paths and settings
