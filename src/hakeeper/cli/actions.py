"""Commands that involve kits: ``hakeeper kits``, ``hakeeper create`` and ``perform_action``."""

from __future__ import annotations

import argparse
import asyncio
import json

from hakeeper.cli.base import Context, arg, command
from hakeeper.cli.lcdi import enum_value, yes_no
from hakeeper.db import Lcd, Resource
from hakeeper.db.model import check_id, check_tag
from hakeeper.db.states import Init, Switchback
from hakeeper.errors import AlreadyExists, IllegalArgument, SystemCallFailed
from hakeeper.kits.base import Health, Kit, KitContext, KitMeta
from hakeeper.kits.registry import Kits
from hakeeper.recovery.engine import Engine, call


def kits_of(ctx: Context, lcd: Lcd, *, run_globals: bool = True) -> Kits:
    return Kits(KitContext(ctx.root, lcd.local_node, run_globals))


def _describe(meta: KitMeta) -> list[str]:
    lines = [f"{meta.name}  {meta.description}"]
    for p in meta.params:
        need = "required" if p.required else (f"default {p.default!r}" if p.default not in (None, "") else "optional")
        lines.append(f"    {p.name}={p.type.upper()}  ({need}) {p.description}")
    return lines


@command(
    "kits",
    "list the recovery kits and the parameters each takes at creation",
    arg("--agent", metavar="ocf:PROVIDER:AGENT", help="show the parameters of one OCF agent"),
    arg("--json", action="store_true", help="print JSON instead"),
)
def _kits(ctx: Context, args: argparse.Namespace) -> int:
    if args.agent:
        from hakeeper.kits.ocf import agent_meta, find_agent

        agent = find_agent(args.agent)
        meta = KitMeta("ocf", "ra", f"OCF agent {agent.spec}", agent_meta(agent).params)
        metas = [meta]
    else:
        from hakeeper.kits.registry import register_kits

        register_kits(ctx.lcd, ctx.root)
        metas = kits_of(ctx, ctx.lcd).available()
    if args.json:
        ctx.print(json.dumps([m.as_json() for m in metas], indent=2))
    else:
        for meta in metas:
            ctx.out.write("".join(line + "\n" for line in _describe(meta)))
    return 0


@command(
    "create",
    "create a resource of any kit, its parameters checked against the kit's",
    arg("kit", metavar="APP/TYPE", help="the kit (see: hakeeper kits), e.g. gen/app or ocf/ra"),
    arg("-t", dest="tag", required=True, help="resource tag"),
    arg("-i", dest="id", help="resource id (default: chosen by the kit, usually the tag)"),
    arg("-I", dest="init", default="AUTORES_ISP", help="AUTORES_ISP (default) | INIT_ISP | INIT_OSU"),
    arg("-s", dest="switchback", default="INTELLIGENT", help="INTELLIGENT (default) | AUTOMATIC"),
    arg("-Q", dest="interval", type=int, default=120, help="quickCheck interval in seconds (default 120, 0 = off)"),
    arg("-l", dest="local_recover", default="Y", help="local recovery Y (default) | N"),
    arg("params", nargs="*", metavar="NAME=VALUE", help="the kit's parameters"),
    epilog="examples:\n"
    "  hakeeper create gen/app -t web restore=/opt/web/start remove=/opt/web/stop quickCheck=/opt/web/check\n"
    "  hakeeper create ocf/ra -t dummy agent=ocf:heartbeat:Dummy state=/run/dummy.state",
    intermixed=True,
)
def _create(ctx: Context, args: argparse.Namespace) -> int:
    app, sep, rtype = args.kit.partition("/")
    if not sep:
        raise IllegalArgument(f"kit {args.kit!r} is not APP/TYPE (see: hakeeper kits)")
    check_tag(args.tag)
    if args.id is not None:
        check_id(args.id)
    init = enum_value(Init, args.init, "initialization")
    switchback = enum_value(Switchback, args.switchback, "switchback")
    local_recover = yes_no(args.local_recover, "local recovery")
    params: dict[str, str] = {}
    for item in args.params:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise IllegalArgument(f"parameter {item!r} is not NAME=VALUE")
        if name in params:
            raise IllegalArgument(f"parameter {name!r} is given twice")
        params[name] = value
    lcd = ctx.lcd
    if any(r.tag == args.tag for r in lcd.resources(tag=args.tag)):
        raise AlreadyExists(f"a resource tagged {args.tag!r} exists already")
    kit = kits_of(ctx, lcd).get(app, rtype)
    values = kit.check_params(params)
    created = kit.create(args.tag, values, args.id)
    try:
        probe = Resource(args.tag, check_id(created.id), app, rtype, info=created.info)
        result = asyncio.run(call(kit, "validate", probe))
        if not result.ok:
            raise IllegalArgument(f"{kit.meta.name} refuses these parameters: {result.message}")
        lcd.create_resource(
            args.tag,
            created.id,
            app,
            rtype,
            info=created.info,
            init=init,
            switchback=switchback,
            check_interval=args.interval,
            local_recover=local_recover,
            ensure_type=True,
        )
    except BaseException:
        kit.discard(args.tag)
        raise
    return 0


ACTIONS = {"restore": "restore", "remove": "remove", "quickCheck": "quick_check", "recover": "recover"}


async def _perform(ctx: Context, args: argparse.Namespace, engine: Engine, kits: Kits) -> int:
    action = ACTIONS.get(args.action)
    if action is None:
        raise IllegalArgument(f"action {args.action!r} is not one of {' | '.join(ACTIONS)}")
    resource = ctx.lcd.resource(args.tag)
    reason = f"perform_action by {ctx.actor}"
    if action in ("restore", "remove"):
        run = engine.restore if action == "restore" else engine.remove
        report = await run(args.tag, reason=reason, only=args.only, args=tuple(args.args), kits=kits)
        if not report.ok:
            raise SystemCallFailed(report.summary())
        ctx.print(report.summary())
        return 0
    kit: Kit = kits.get(resource.app, resource.type)
    result = await call(kit, action, resource)
    if action == "quick_check":
        health = result.health or (Health.RUNNING if result.ok else Health.FAILED)
        detail = f": {result.message}" if result.message not in ("", health.value) else ""
        ctx.print(f"{args.tag} {health.value}{detail}")
        return {Health.RUNNING: 0, Health.STOPPED: 7}.get(health, 1)
    if not result.ok:
        raise SystemCallFailed(result.message)
    ctx.print(f"recover of {args.tag} succeeded")
    return 0


async def _perform_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    daemon = ctx.services
    if args.action == "restore" and not args.only and daemon.failover.hierarchy_of(args.tag) is not None:
        # An extended hierarchy: take it out of service where it runs first (a switchover), as LifeKeeper does.
        ctx.print(await daemon.failover.switchover(args.tag))
        return 0
    return await _perform(ctx, args, daemon.engine, kits_of(ctx, ctx.lcd, run_globals=not args.no_globals))


@command(
    "perform_action",
    "run an action on a resource: restore or remove its hierarchy, quickCheck or recover it",
    arg("-t", dest="tag", required=True, help="resource tag"),
    arg("-a", dest="action", required=True, help="restore | remove | quickCheck | recover"),
    arg("-s", dest="only", action="store_true", help="only this resource, not the hierarchy above/below it"),
    arg("-G", dest="no_globals", action="store_true", help="skip the app-wide pre/post scripts"),
    arg("args", nargs="*", metavar="ARG", help="arguments for the action scripts, after --"),
    epilog="restore brings in service everything the resource needs and everything that needs it,\n"
    "children first; remove takes the resource and everything above it out of service, parents first.",
    in_daemon=_perform_in_daemon,
)
def _perform_action(ctx: Context, args: argparse.Namespace) -> int:
    kits = kits_of(ctx, ctx.lcd, run_globals=not args.no_globals)
    return asyncio.run(_perform(ctx, args, Engine(ctx.lcd, kits), kits))
