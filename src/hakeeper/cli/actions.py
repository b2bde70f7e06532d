"""Commands that involve kits: ``hakeeper kits``, ``hakeeper create`` and ``perform_action``."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from hakeeper.cli.base import Context, arg, command
from hakeeper.cli.lcdi import enum_value, yes_no
from hakeeper.db import Lcd, Resource, State, graph
from hakeeper.db.model import check_id, check_tag
from hakeeper.db.states import Init, Switchback
from hakeeper.errors import AlreadyExists, HakeeperError, IllegalArgument, SystemCallFailed
from hakeeper.kits.base import Created, Health, Kit, KitContext, KitMeta
from hakeeper.kits.registry import Kits
from hakeeper.recovery import plan
from hakeeper.recovery.engine import Engine, call

logger = logging.getLogger(__name__)


def kits_of(ctx: Context, lcd: Lcd, *, run_globals: bool = True) -> Kits:
    return Kits(KitContext(ctx.root, lcd.local_node, run_globals))


def _describe(meta: KitMeta) -> list[str]:
    lines = [f"{meta.name}  {meta.description}"]
    for p in meta.params:
        need = "required" if p.required else (f"default {p.default!r}" if p.default not in (None, "") else "optional")
        bounds = f", {p.bounds}" if p.bounds else ""
        lines.append(f"    {p.name}={p.type.upper()}  ({need}{bounds}) {p.description}")
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
    params = parse_params(args.params)
    lcd = ctx.lcd
    if any(r.tag == args.tag for r in lcd.resources(tag=args.tag)):
        raise AlreadyExists(f"a resource tagged {args.tag!r} exists already")
    kit = kits_of(ctx, lcd).get(app, rtype)
    created = prepare_with_kit(kit, app, rtype, args.tag, kit.check_params(params), id=args.id)
    try:
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


def parse_params(items: list[str]) -> dict[str, str]:
    """A kit's ``NAME=VALUE`` parameters as typed (create, update): each once, each with its ``=``."""
    params: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise IllegalArgument(f"parameter {item!r} is not NAME=VALUE")
        if name in params:
            raise IllegalArgument(f"parameter {name!r} is given twice")
        params[name] = value
    return params


def prepare_with_kit(kit: Kit, app: str, rtype: str, tag: str, values: Mapping[str, Any], *, id: str | None) -> Created:
    """What ``kit`` makes of checked parameters for a new resource (its id and info, and what it installs
    here, as gen/app's copied scripts), validated on this node; refused, it leaves nothing behind.

    The first half of ``hakeeper create`` (and of a resource ``hakeeper apply`` creates from parameters):
    the caller records the resource, and calls ``kit.discard(tag)`` if it cannot.
    """
    created = kit.create(tag, values, id)
    try:
        probe = Resource(tag, check_id(created.id), app, rtype, info=created.info)
        result = asyncio.run(call(kit, "validate", probe))
        if not result.ok:
            raise IllegalArgument(f"{kit.meta.name} refuses these parameters: {result.message}")
    except BaseException:
        kit.discard(tag)
        raise
    return created


ACTIONS = {"restore": "restore", "remove": "remove", "quickCheck": "quick_check", "recover": "recover"}
BACKGROUND_LOG = "perform_action.log"
#: Starts its arguments as a process of their own session, its output on our stderr (the log), and prints its pid.
LAUNCHER = (
    "import subprocess, sys; "
    "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=sys.stderr, start_new_session=True); "
    "print(p.pid)"
)


def _action(args: argparse.Namespace) -> str:
    action = ACTIONS.get(args.action)
    if action is None:
        raise IllegalArgument(f"action {args.action!r} is not one of {' | '.join(ACTIONS)}")
    return action


async def _perform(ctx: Context, args: argparse.Namespace, engine: Engine, kits: Kits) -> int:
    action = _action(args)
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


def _preview(ctx: Context, args: argparse.Namespace, kits: Kits) -> int:
    """``perform_action -n``: what the action would do here, in its order; nothing runs, nothing changes."""
    action = _action(args)
    lcd = ctx.lcd
    lcd.resource(args.tag)
    resources = {r.tag: r for r in lcd.resources()}
    edges = lcd.edges()
    if action == "restore":
        order = graph.restore_order(edges, plan.restore_set(edges, args.tag, only=args.only))
    elif action == "remove":
        order = graph.remove_order(edges, plan.remove_set(edges, args.tag, only=args.only))
    else:
        order = [args.tag]
    given = f" with arguments {' '.join(args.args)}" if args.args else ""
    for tag in order:
        r = resources[tag]
        kind = f"{r.app}/{r.type}" + ("" if kits.find(r.app, r.type) else ", which no kit serves: it would fail")
        if action == "restore" and r.state is State.ISP:
            line = "ISP already: nothing to do"
        elif action == "restore" and r.state is State.ISU:
            line = "ISU -> ISP, no action runs"
        elif action == "remove" and r.state is State.OSU:
            line = "OSU already: nothing to do"
        elif action in ("restore", "remove"):
            line = f"{args.action} ({kind}){given}: {r.state.name} -> {'ISP' if action == 'restore' else 'OSU'}"
        else:
            line = f"{args.action} ({kind}){given}: no state changes"
        ctx.print(f"{tag}: {line}")
    return 0


def _background(ctx: Context, args: argparse.Namespace) -> int:
    """``perform_action -b`` without hakeeperd: the action runs on in a process of its own; this one returns."""
    _action(args)
    ctx.lcd.resource(args.tag)
    argv = [f"-t{args.tag}", "-a", args.action, *(["-s"] if args.only else []), *(["-G"] if args.no_globals else [])]
    log_path = ctx.root / BACKGROUND_LOG
    try:
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
    except OSError as exc:
        raise SystemCallFailed(f"cannot write {str(log_path)!r}: {exc.strerror}") from None
    command = [sys.executable, "-c", "import sys; from hakeeper.cli.main import main; main(sys.argv[1:])",
               "--root", str(ctx.root), "perform_action", *argv, "--", *args.args]  # fmt: skip
    with log:
        # Through a launcher that exits at once: the action's process is nobody's child here, and outlives us.
        try:
            done = subprocess.run(
                [sys.executable, "-c", LAUNCHER, *command],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, check=False, timeout=60,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            done = subprocess.CompletedProcess([], 1, b"")
    pid = done.stdout.decode(errors="replace").strip()
    if done.returncode != 0 or not pid.isdigit():
        raise SystemCallFailed(f"cannot start {args.action} of {args.tag} in the background; see {log_path}")
    ctx.print(f"{args.action} of {args.tag} started in the background (pid {pid}); its output goes to {log_path}")
    return 0


async def _perform_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    daemon = ctx.daemon
    switch = args.action == "restore" and not args.only and daemon.failover.hierarchy_of(args.tag) is not None
    if args.dry_run:
        if switch:
            ctx.print(f"{args.tag}: its hierarchy is taken out of service where it runs now (a switchover), then:")
        return _preview(ctx, args, kits_of(ctx, ctx.lcd, run_globals=not args.no_globals))
    if args.background:
        _action(args)
        ctx.lcd.resource(args.tag)
        quiet = Context(ctx.root, io.StringIO(), io.StringIO(), actor=ctx.actor, lcd=ctx.lcd, services=daemon)
        done = argparse.Namespace(**{**vars(args), "background": False})
        daemon.spawn(_logged(quiet, done), f"perform_action -b -t {args.tag} -a {args.action}")
        ctx.print(f"{args.action} of {args.tag} started in the background; see lcdstatus, and hakeeperd's log")
        return 0
    if switch:
        # An extended hierarchy: take it out of service where it runs first (a switchover), as LifeKeeper does.
        ctx.print(await daemon.failover.switchover(args.tag))
        return 0
    return await _perform(ctx, args, daemon.engine, kits_of(ctx, ctx.lcd, run_globals=not args.no_globals))


async def _logged(ctx: Context, args: argparse.Namespace) -> None:
    """Run a ``perform_action -b`` in hakeeperd and log how it ended (no one waits for its output)."""
    what = f"perform_action -b of {args.action} on {args.tag}"
    try:
        code = await _perform_in_daemon(ctx, args)
    except HakeeperError as exc:
        logger.warning("%s failed: %s", what, exc)
        return
    said = str(ctx.out.getvalue()).strip() if isinstance(ctx.out, io.StringIO) else ""
    logger.info("%s ended with exit %d%s", what, code, f": {said}" if said else "")


@command(
    "perform_action",
    "run an action on a resource: restore or remove its hierarchy, quickCheck or recover it",
    arg("-t", dest="tag", required=True, help="resource tag"),
    arg("-a", dest="action", required=True, help="restore | remove | quickCheck | recover"),
    arg("-s", dest="only", action="store_true", help="only this resource, not the hierarchy above/below it"),
    arg("-G", dest="no_globals", action="store_true", help="skip the app-wide pre/post scripts"),
    arg("-b", dest="background", action="store_true", help="in the background: start the action and return at once"),
    arg("-n", dest="dry_run", action="store_true", help="say what the action would do, in order, and do nothing"),
    arg("args", nargs="*", metavar="ARG", help="arguments for the action scripts, after --"),
    epilog="restore brings in service everything the resource needs and everything that needs it,\n"
    "children first; remove takes the resource and everything above it out of service, parents first.\n"
    "-b: with hakeeperd the daemon runs the action (its log says how it ended); without it a process\n"
    f"of its own does, its output appended to <root>/{BACKGROUND_LOG}.",
    in_daemon=_perform_in_daemon,
)
def _perform_action(ctx: Context, args: argparse.Namespace) -> int:
    kits = kits_of(ctx, ctx.lcd, run_globals=not args.no_globals)
    if args.dry_run:
        return _preview(ctx, args, kits)
    if args.background:
        return _background(ctx, args)
    return asyncio.run(_perform(ctx, args, Engine(ctx.lcd, kits), kits))
