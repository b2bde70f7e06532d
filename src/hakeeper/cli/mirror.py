"""``hakeeper mirror ACTION VOL``: mirrored volumes (DataKeeper's EMCMD verbs, issue 14).

One command with an action, as ``hakeeper cluster``. ``create`` and ``delete``
change the mirror's definition in the LCD (:mod:`hakeeper.db.mirrors`) on every
node of the mirror or on none: through hakeeperd's two-phase commit, the target
checking its own backing store as it prepares the change. Without hakeeperd
they make every check this node can make and are then refused (exit 9), as
``extend`` is. ``status`` shows the definitions, with each mirror's live state
when the volume's replication process runs here, else "unknown". The other
actions are verbs of a running mirror (:mod:`hakeeper.replication.control`):
hakeeperd hands them to the volume's replication process; when none runs they
are refused (exit 1) and nothing changes. ``switchover`` runs on a target: the
source's hakeeperd hands the volume over (:mod:`hakeeper.replication.handoff`),
then ``set_mirror_source`` changes every node of the mirror or none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING, Any

from hakeeper.cli.base import Context, arg, command
from hakeeper.comm.rpc import RemoteError
from hakeeper.db.mirrors import Mirror, check_mode, check_volume, parse_chunk, parse_limit
from hakeeper.errors import HakeeperError, IllegalArgument, NotFound, UsageError, error_for
from hakeeper.replication.control import MirrorControl, MirrorNotRunning, VolumeStatus

if TYPE_CHECKING:
    from hakeeper.services import DaemonServices

HANDOVER_TIMEOUT = 30.0  # s the source waits for its writes under way and for each target's drain
SERVE_WAIT = 60.0  # s switchover waits for this node's process to serve the volume as its source

ACTIONS = ("create", "delete", "status", "pause", "continue", "break", "resync", "verify", "switchover", "resolve")

#: Which options each action takes (argparse dest names); the others must stay unset.
ACTION_OPTIONS: dict[str, frozenset[str]] = {
    "create": frozenset({"store", "target", "target_store", "mode", "bitmap_chunk", "limit"}),
    "delete": frozenset({"target"}),
    "status": frozenset({"json"}),
    "pause": frozenset({"target"}),
    "continue": frozenset({"target"}),
    "break": frozenset({"target"}),
    "resync": frozenset({"target", "checksum"}),
    "verify": frozenset({"target"}),
    "switchover": frozenset(),
    "resolve": frozenset({"keep"}),
}
SHOWN = {"store": "--store", "target": "--target", "target_store": "--target-store", "mode": "--mode",
         "bitmap_chunk": "--bitmap-chunk", "limit": "--limit", "json": "--json", "checksum": "--checksum",
         "keep": "--keep"}  # fmt: skip
REQUIRED = {"create": ("target", "mode"), "resolve": ("keep",)}

EPILOG = """actions:
  create VOL --target NODE --mode sync|async [--store PATH] [--target-store PATH]
             [--bitmap-chunk SIZE] [--limit MB/s]
                    on the source (this node): mirror VOL to NODE; --store: the backing store here
                    (an image file or a block device, absolute path; the volume's size is its size),
                    needed for a new volume; --target-store: NODE's (default: the same path), at
                    least as large; --bitmap-chunk: bytes per bit of the intent log, a power of two
                    from 4K (default 64K); --limit: MB/s (default 0: none). Run again with another
                    --target to add a target (one create per target, as DataKeeper's CREATEMIRROR)
  delete VOL [--target NODE]
                    delete VOL's mirror to NODE, or every mirror of VOL (the last one deletes VOL)
  status [VOL] [--json]
                    the definitions, with each mirror's live state (DataKeeper's number) when VOL's
                    replication process runs here, else "unknown"
  pause VOL [--target NODE]      stop sending; writes are tracked in the bitmap (Paused, 4)
  continue VOL [--target NODE]   resync what the bitmap says, then Mirroring (1)
  break VOL [--target NODE]      stop sending and tracking (Broken, 3): a full resync follows
  resync VOL [--target NODE] [--checksum]
                                 resync now; --checksum: send only blocks whose hash differs
  verify VOL [--target NODE]     compare source and target online; differing ranges are logged
  switchover VOL                 on a Mirroring target: make this node the source (the source hands
                                 the volume over: unmount it there first)
  resolve VOL --keep NODE        after a split brain: NODE's data survive, the other side resyncs

create and delete change every node of the mirror or none (exit 9 when one cannot be reached,
and without hakeeperd). The verbs need the volume's replication process, through hakeeperd;
without it they are refused (exit 1) and nothing changes. Example:
  node1$ hakeeper mirror create data --store /dev/vg0/data --target node2 --mode sync
  node1$ hakeeper mirror status data"""


async def _in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    action = _check_usage(args)
    services = ctx.daemon
    if action == "status":
        mirrors = await services.db.read(lambda r: r.mirrors() if args.volume is None else [r.mirror(args.volume)])
        live: dict[str, VolumeStatus | None] = {}
        for m in mirrors:
            live[m.volume] = await _live(ctx, m.volume)
        return _status(ctx, args, mirrors, live)
    if action in ("create", "delete"):
        return await _change(ctx, args)
    mirror = await services.db.read(lambda r: r.mirror(args.volume))
    _check_verb(mirror, services.lcd.local_node, args)
    control = services.mirror_controls.control(mirror.volume)
    if control is None:
        raise MirrorNotRunning(
            f"no replication process of {mirror.volume!r} runs on {services.lcd.local_node}: "
            f"'mirror {action}' needs it (see: hakeeper mirror status {mirror.volume})"
        )
    if action == "switchover":
        return await _switchover(ctx, mirror, control)
    ctx.print(await asyncio.to_thread(_verb, control, action, args))
    return 0


@command(
    "mirror",
    "mirrored volumes: create, delete, status, pause, continue, break, resync, verify, switchover, resolve",
    arg("action", choices=ACTIONS, metavar="ACTION", help=" | ".join(ACTIONS)),
    arg("volume", nargs="?", metavar="VOL", help="the mirrored volume (status: all of them when left out)"),
    arg("--store", metavar="PATH", help="create: the backing store on this node, the source"),
    arg("--target", metavar="NODE", help="create: the target node; delete and the verbs: only this target"),
    arg("--target-store", dest="target_store", metavar="PATH",
        help="create: the backing store on the target (default: the same path as --store)"),
    arg("--mode", metavar="sync|async", help="create: when a write is acknowledged"),
    arg("--bitmap-chunk", dest="bitmap_chunk", metavar="SIZE",
        help="create: bytes per bit of the intent log, a power of two from 4K (default 64K)"),
    arg("--limit", metavar="MB/s", help="create: the mirror's bandwidth limit (default 0: none)"),
    arg("--checksum", action="store_const", const=True, help="resync: send only the blocks whose hash differs"),
    arg("--keep", metavar="NODE", help="resolve: the node whose data survive a split brain"),
    arg("--json", action="store_const", const=True, help="status: print JSON"),
    epilog=EPILOG,
    intermixed=True,
    in_daemon=_in_daemon,
)  # fmt: skip
def _mirror(ctx: Context, args: argparse.Namespace) -> int:
    action = _check_usage(args)
    if action == "status":
        return _status(ctx, args, [ctx.lcd.mirror(args.volume)] if args.volume else ctx.lcd.mirrors(), {})
    lcd = ctx.lcd
    if action in ("create", "delete"):
        op, change = _change_of(args)
        if not ctx.replicated:  # the other nodes cannot record their side: check, then refuse (as extend does)
            lcd.try_change(op, change)
            others = [str(change["target"])] if op == "create_mirror" else lcd.mirror(args.volume).nodes
            raise ctx.needs_daemon(", ".join(n for n in others if n != lcd.local_node))
        if op == "create_mirror":  # in a worker thread of hakeeperd, the LCD replicating its changes
            return _created(ctx, lcd.create_mirror(**change), str(change["target"]))
        return _deleted(ctx, args, lcd.delete_mirror(args.volume, args.target))
    _check_verb(lcd.mirror(args.volume), lcd.local_node, args)
    raise MirrorNotRunning(
        f"no replication process of {args.volume!r} runs here: hakeeperd does not run on {ctx.root} (start it: lkstart)"
    )


# ---------------------------------------------------------------------- the command line


def _check_usage(args: argparse.Namespace) -> str:
    action: str = args.action
    for dest, flag in SHOWN.items():
        if getattr(args, dest) is not None and dest not in ACTION_OPTIONS[action]:
            raise UsageError(f"{flag} does not go with 'mirror {action}' (see: hakeeper mirror --help)")
    if args.volume is None and action != "status":
        raise UsageError(f"'mirror {action}' needs a VOL (see: hakeeper mirror --help)")
    for dest in REQUIRED.get(action, ()):
        if getattr(args, dest) is None:
            raise UsageError(f"'mirror {action}' needs {SHOWN[dest]} (see: hakeeper mirror --help)")
    if args.volume is not None:
        check_volume(args.volume)
    return action


def _create_args(args: argparse.Namespace) -> dict[str, Any]:
    """``create_mirror``'s arguments from the command line; the values' own rules checked here."""
    change: dict[str, Any] = {
        "volume": args.volume,
        "target": args.target,
        "mode": check_mode(args.mode).value,
        "store": args.store,
        "target_store": args.target_store,
    }
    if args.bitmap_chunk is not None:
        change["bitmap_chunk"] = parse_chunk(args.bitmap_chunk)
    if args.limit is not None:
        change["limit"] = parse_limit(args.limit)
    return change


def _check_verb(mirror: Mirror, here: str, args: argparse.Namespace) -> None:
    """What a verb names must be part of the mirror; switchover runs on a target."""
    if args.target is not None and mirror.target(args.target) is None:
        raise NotFound(f"{mirror.volume!r} is not mirrored to {args.target!r} (see: hakeeper mirror status)")
    if args.keep is not None and args.keep not in mirror.nodes:
        raise NotFound(f"{args.keep!r} is not a node of {mirror.volume!r} ({', '.join(mirror.nodes)})")
    if args.action == "switchover" and mirror.target(here) is None:
        raise IllegalArgument(
            f"{here} is not a target of {mirror.volume!r}: run switchover on the target that is to become the source"
        )


def _verb(control: MirrorControl, action: str, args: argparse.Namespace) -> str:
    """Call the replication process (in a worker thread: it blocks)."""
    if action == "pause":
        return control.pause(args.target)
    if action == "continue":
        return control.resume(args.target)
    if action == "break":
        return control.break_mirror(args.target)
    if action == "resync":
        return control.resync(args.target, checksum=bool(args.checksum))
    if action == "verify":
        return control.verify(args.target)
    return control.resolve(str(args.keep))


# ---------------------------------------------------------------------- switchover, on the new source


async def _switchover(ctx: Context, mirror: Mirror, control: MirrorControl) -> int:
    """This target becomes the source: the source hands the volume over, then the LCD's source changes.

    1. the source's hakeeperd is asked (``mirror_handover``, :mod:`hakeeper.replication.handoff`): its
       process refuses, nothing changed, unless the volume is unused there and this node Mirroring;
       else it stops writes, drains its targets and hands the volume over (durable here);
    2. ``set_mirror_source`` on every node of the mirror, or on none (the two-phase commit);
    3. each node's supervisor restarts its replication process in its new role: here the source,
       built from the handover (partial resyncs only), the old source a target.
    If step 2 fails, the old source takes writes again and the handover kept here is dropped.
    """
    from hakeeper.cluster.extend import refuse_unreachable

    services = ctx.daemon
    here, source, volume = services.lcd.local_node, mirror.source, mirror.volume
    what = f"mirror switchover of {volume} to {here}"
    for node in mirror.nodes:
        if node != here:
            refuse_unreachable(services, node, what)
    request = {"volume": volume, "timeout": HANDOVER_TIMEOUT}
    try:
        answer = await services.request(source, "mirror_handover", request, timeout=HANDOVER_TIMEOUT * 2)
    except RemoteError as exc:
        raise error_for(exc.code, f"{what} refused by {source}: {exc}") from None
    except HakeeperError as exc:  # no answer: whether it handed over is not known, so undo what it may have done
        undone = await _undo(services, control, volume, source)
        raise error_for(exc.exit_code, f"{what} failed: {exc}; {undone}") from None
    try:
        await services.change_replicated(ctx.actor, lambda w: w.set_mirror_source(volume, here, source))
    except HakeeperError as exc:
        undone = await _undo(services, control, volume, source)
        raise error_for(exc.exit_code, f"{what} failed: {exc}; {undone}") from None
    handed = {source if t["node"] == here else t["node"]: t["dirty_bytes"] for t in answer.get("targets", [])}
    resend = ", ".join(f"{node} {count} bytes" for node, count in sorted(handed.items()))
    ctx.print(f"{volume}: switched over from {source} to {here}; {here} is the source now (resync from the "
              f"handover: {resend or 'nothing'})")  # fmt: skip
    device = await _new_device(services, volume)
    if device is None:
        ctx.warn(f"mirror: {volume}: the replication process has not served the volume here yet "
                 f"(see: hakeeper mirror status {volume})")  # fmt: skip
    else:
        ctx.print(f"{volume}: volume device {device}")
    return 0


async def _undo(services: DaemonServices, control: MirrorControl, volume: str, source: str) -> str:
    """The LCD change failed after the handover: the old source takes writes again, this node stays a target."""
    said = []
    try:
        await services.request(source, "mirror_thaw", {"volume": volume}, timeout=HANDOVER_TIMEOUT)
        said.append(f"{source} takes writes again")
    except HakeeperError as exc:
        said.append(f"{source} could not be told to take writes again ({exc}): restart its replication process")
    try:
        await asyncio.to_thread(control.forget_handover)
    except HakeeperError as exc:  # dropped anyway when the old source connects again
        said.append(f"the handover kept here stays until {source} connects again ({exc})")
    return "; ".join(said) + "; nothing was switched"


async def _new_device(services: DaemonServices, volume: str) -> str | None:
    """The loop device of this node's process once it serves the volume as its source (bounded wait)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SERVE_WAIT
    while loop.time() < deadline:
        control = services.mirror_controls.control(volume)
        if control is not None:
            try:
                status = await asyncio.to_thread(control.status)
            except HakeeperError:
                status = None
            if status is not None and status.role == "source" and status.device:
                return str(status.device)
        await asyncio.sleep(0.2)
    return None


# ---------------------------------------------------------------------- create and delete, through hakeeperd


async def _change(ctx: Context, args: argparse.Namespace) -> int:
    """create or delete: checked here first (the same checks as without hakeeperd), then on every node or none."""
    from hakeeper.cluster.extend import refuse_unreachable

    services = ctx.daemon
    op, change = _change_of(args)
    await services.db.write(lambda w: w.try_change(op, change))
    volume = str(change["volume"])
    known = await services.db.read(lambda r: r.mirror(volume).nodes if r.has_mirror(volume) else [])
    what = f"mirror {args.action} of {volume}"
    for node in sorted({*known, *([str(change["target"])] if op == "create_mirror" else [])}):
        if node != services.lcd.local_node:  # a DEAD node refuses before anything is sent (as extend)
            refuse_unreachable(services, node, what)
    if op == "create_mirror":
        made: Mirror = await services.change_replicated(ctx.actor, lambda w: w.create_mirror(**change))
        return _created(ctx, made, str(change["target"]))
    gone: list[str] = await services.change_replicated(ctx.actor, lambda w: w.delete_mirror(volume, args.target))
    return _deleted(ctx, args, gone)


def _change_of(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    if args.action == "create":
        return "create_mirror", _create_args(args)
    return "delete_mirror", {"volume": args.volume, "target": args.target}


def _created(ctx: Context, made: Mirror, target: str) -> int:
    new = made.target(target)
    assert new is not None
    limit = f"{new.limit / 1_000_000:g} MB/s" if new.limit else "no limit"
    ctx.print(
        f"{made.volume} mirrored from {made.source} to {new.node} ({new.mode.value}, {made.size} bytes, "
        f"bitmap chunk {_size(new.bitmap_chunk)}, {limit})"
    )
    return 0


def _deleted(ctx: Context, args: argparse.Namespace, gone: list[str]) -> int:
    whole = "" if args.target else f"; {args.volume} deleted"
    ctx.print(f"{args.volume}: mirror to {', '.join(gone)} deleted{whole}")
    return 0


# ---------------------------------------------------------------------- status


async def _live(ctx: Context, volume: str) -> VolumeStatus | None:
    control = ctx.daemon.mirror_controls.control(volume)
    if control is None:
        return None
    try:
        return await asyncio.to_thread(control.status)
    except HakeeperError as exc:  # it went away meanwhile: what it would say is not known, and shown so
        ctx.warn(f"mirror: {volume}: the replication process did not answer ({exc}): its state is shown unknown")
        return None


def _size(value: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if value >= 1 << shift and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return str(value)


def _status(ctx: Context, args: argparse.Namespace, mirrors: list[Mirror], live: dict[str, VolumeStatus | None]) -> int:
    """The definitions, each mirror's live state beside it: DataKeeper's name and number, or unknown."""
    records: list[dict[str, Any]] = []
    lines: list[list[str]] = [["VOLUME", "SIZE", "SOURCE", "TARGET", "MODE", "CHUNK", "LIMIT", "STATE"]]
    for m in mirrors:
        known = live.get(m.volume)
        states = {t.node: t for t in known.targets} if known is not None else {}
        targets = []
        for t in m.targets:
            found = states.get(t.node)
            state = f"{found.state.label} ({found.state.value})" if found is not None else "unknown"
            if found is not None and found.resync_percent is not None:
                state += f" {found.resync_percent:.1f}%"
            if found is not None and found.split_brain:
                state += " split-brain"
            limit = f"{t.limit / 1_000_000:g}MB/s" if t.limit else "none"
            lines.append([m.volume, _size(m.size), m.source, t.node, t.mode.value, _size(t.bitmap_chunk), limit, state])
            targets.append(
                {
                    "node": t.node,
                    "store": t.store,
                    "mode": t.mode.value,
                    "bitmap_chunk": t.bitmap_chunk,
                    "limit": t.limit,
                    "state": found.state.label if found is not None else "unknown",
                    "state_code": found.state.value if found is not None else None,
                    "resync_percent": found.resync_percent if found is not None else None,
                    "dirty_bytes": found.dirty_bytes if found is not None else None,
                    "split_brain": found.split_brain if found is not None else None,
                    "resync_bytes_sent": found.resync_bytes_sent if found is not None else None,
                }
            )
        records.append({"volume": m.volume, "size": m.size, "source": m.source, "store": m.store,
                        "live": known is not None, "role": known.role if known is not None else None,
                        "device": known.device if known is not None else None, "targets": targets})  # fmt: skip
    if args.json:
        ctx.print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    if len(lines) > 1:
        widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
        for row in lines:
            ctx.print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for volume, known in sorted(live.items()):  # where to mkfs and mount it (a new device after a restart)
        if known is not None and known.device:
            ctx.print(f"{volume}: volume device {known.device}")
    return 0
