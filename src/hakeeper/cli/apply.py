"""``hakeeper apply FILE`` and ``hakeeper export``: the LCD's configuration as a file, and a file made the LCD's.

The format and what applying means: docs/apply.md. The file is read where the
command is typed and its content travels with the command to hakeeperd (which
may not be able to read the path), so the daemon remains the only writer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from hakeeper.cli.base import Context, arg, command
from hakeeper.control import MAX_REQUEST
from hakeeper.db import bulk
from hakeeper.db.desired import Desired, document, dump, load
from hakeeper.errors import CommunicationFailed, HakeeperError, IllegalArgument, NotFound, SystemCallFailed, UsageError
from hakeeper.wire import request

#: The largest file apply reads: 3,000 to 8,000 resources (docs/apply.md). Its content travels to
#: hakeeperd in one request, and its change to other nodes in one message.
MAX_FILE = 1 << 20


def _read(args: argparse.Namespace, argv: list[str]) -> list[str]:
    """Where ``apply`` was typed: read FILE (or standard input), and send its content, not its path."""
    if args.content is not None:  # sent so: hakeeperd runs it, or a test
        if args.file is not None:
            raise UsageError("give FILE or --content, not both (see: apply --help)")
        return argv
    if args.file is None:
        raise UsageError("name the FILE to apply, or - for standard input (see: apply --help)")
    data = _file(args.file)
    try:
        args.content = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IllegalArgument(f"{_shown(args.file)} is not UTF-8 text (byte {exc.start} is not)") from None
    sent = ["--content", args.content]
    for flag, on in (("--dry-run", args.dry_run), ("--prune", args.prune), ("--no-delete", args.no_delete)):
        if on:
            sent.append(flag)
    if args.dest is not None:
        sent += ["-d", args.dest]
    if args.root is not None:
        sent += ["--root", args.root]
    if len(request("apply", sent)) > MAX_REQUEST:  # escaped as JSON: control characters, non-ASCII text
        raise IllegalArgument(f"{_shown(args.file)} is too large to send to hakeeperd: apply it in parts")
    return sent


def _file(name: str) -> bytes:
    what = _shown(name)
    try:
        if name == "-":
            data: bytes = sys.stdin.buffer.read(MAX_FILE + 1)
        else:
            with open(name, "rb") as file:
                data = file.read(MAX_FILE + 1)
    except FileNotFoundError:
        raise NotFound(f"there is no file {what}") from None
    except IsADirectoryError:
        raise IllegalArgument(f"{what} is a directory, not a configuration file") from None
    except (OSError, ValueError, AttributeError) as exc:  # a closed or detached standard input, too
        raise SystemCallFailed(f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(data) > MAX_FILE:
        raise IllegalArgument(f"{what} is larger than {MAX_FILE >> 20} MiB: apply it in parts")
    return data


def _shown(name: str) -> str:
    return "standard input" if name == "-" else repr(name)


@command(
    "apply",
    "make the LCD hold the resources, dependencies and equivalencies a file describes, in one change",
    arg("file", nargs="?", metavar="FILE", help="the file: JSON, or YAML (see docs/apply.md); - reads standard input"),
    arg("-n", "--dry-run", dest="dry_run", action="store_true", help="print what would change, and change nothing"),
    arg("--prune", action="store_true",
        help="also remove the resources, dependencies and equivalencies FILE does not name\n"
        "(refused while such a resource is in service here)"),
    arg("-N", "--no-delete", dest="no_delete", action="store_true",
        help="with --prune: do not run the delete actions of the resources removed"),
    arg("--content", help=argparse.SUPPRESS),  # FILE's content, as the client sends it to hakeeperd
    epilog="Everything is checked first; then every change is made in one transaction and recorded as one\n"
    "change ('apply' in hakeeper changes), or, on any error, nothing is changed (one line on stderr,\n"
    "LifeKeeper's exit code). Resources the LCD lacks are created, settings that differ are changed,\n"
    "what the file leaves out is left as it is (unless --prune). A change to a resource extended to\n"
    "other nodes, or to its equivalencies, is made on every node of it or on none, through hakeeperd\n"
    "(without it: exit 9). 'hakeeper export' writes the LCD's configuration in the same format.\n"
    "Example: hakeeper export --format yaml > cluster.yaml; hakeeper apply -n cluster.yaml",
    client=_read,
)  # fmt: skip
def _apply(ctx: Context, args: argparse.Namespace) -> int:
    desired = load(args.content.encode("utf-8"))
    lcd = ctx.lcd
    kinds = {(t.app, t.type) for t in lcd.types()}
    if any((r.app, r.type) not in kinds for r in desired.resources):
        from hakeeper.cli.lcdi import learn_kits

        learn_kits(ctx)  # a kit installed since the LCD last looked
    from hakeeper.cluster.configsync import participants

    preparing = _Kits(ctx, desired)
    try:
        made = {} if args.dry_run else preparing.make()
        outcome = bulk.apply(
            lcd,
            desired,
            prune=args.prune,
            made=made,
            concerns=lambda op, change: participants(lcd, op, change),
            dry=args.dry_run,
            alone=None if ctx.replicated or args.dry_run else lambda nodes: _needs_daemon(ctx, nodes),
        )
    except BaseException:
        preparing.discard()
        raise
    for step in outcome.steps:
        ctx.print(step.what)
    if args.dry_run:
        ctx.print(f"dry run, nothing was changed: {bulk.summary(outcome)}")
        if outcome.reached and not ctx.replicated:
            raise _needs_daemon(ctx, outcome.reached)
        return 0
    if outcome.seq is None:
        ctx.print("nothing to change: the LCD holds what the file describes")
        return 0
    if outcome.removed and not args.no_delete:
        _delete_actions(ctx, outcome)
    ctx.print(f"applied as one change (seq {outcome.seq}): {bulk.summary(outcome)}")
    return 0


def _needs_daemon(ctx: Context, nodes: list[str]) -> HakeeperError:
    return CommunicationFailed(
        f"the change concerns {', '.join(nodes)} too, reached through hakeeperd, which is not running on "
        f"{ctx.root} (start it: lkstart); nothing was changed"
    )


class _Kits:
    """The resources the file gives by kit parameters: checked by their kits, and made before the transaction.

    Their kits check the parameters (``check_params``, as ``hakeeper create`` does)
    whether or not the resource exists; for a resource to create, the kit makes
    its id and info and installs what it keeps here (gen/app's scripts), and
    validates it. :meth:`discard` undoes that when the change is not made.
    """

    def __init__(self, ctx: Context, desired: Desired) -> None:
        self.ctx = ctx
        self.specs = [r for r in desired.resources if r.params is not None]
        self.made: list[tuple[Any, str]] = []
        self.values: dict[str, tuple[Any, Mapping[str, Any]]] = {}
        if not self.specs:
            return
        from hakeeper.cli.actions import kits_of

        kits = kits_of(ctx, ctx.lcd)
        for spec in self.specs:
            kit = kits.find(spec.app, spec.type)
            if kit is None:
                raise NotFound(f"{spec.place}.type: no kit for {spec.app}/{spec.type} (see: hakeeper kits)")
            with _at(f"{spec.place}.params"):
                self.values[spec.tag] = (kit, kit.check_params(spec.params or {}))

    def make(self) -> dict[str, bulk.Made]:
        from hakeeper.cli.actions import prepare_with_kit

        there = {r.tag for r in self.ctx.lcd.resources()}
        made: dict[str, bulk.Made] = {}
        for spec in self.specs:
            if spec.tag in there:
                continue  # a kit's parameters make a resource; they change none that exists (docs/apply.md)
            kit, values = self.values[spec.tag]
            with _at(spec.place):
                created = prepare_with_kit(kit, spec.app, spec.type, spec.tag, values, id=spec.id)
            self.made.append((kit, spec.tag))
            made[spec.tag] = bulk.Made(created.id, created.info)
        return made

    def discard(self) -> None:
        for kit, tag in self.made:
            kit.discard(tag)
        self.made = []


@contextmanager
def _at(place: str) -> Iterator[None]:
    """An error of what runs inside said at the place in the file: the same error, the same exit code."""
    try:
        yield
    except HakeeperError as exc:
        raise type(exc)(f"{place}: {exc}") from None


def _delete_actions(ctx: Context, outcome: bulk.Outcome) -> None:
    """The removed resources' delete actions (gen/app: its copied scripts), parents first, after the change.

    The change is made: a delete action that fails is reported on stderr, as ``ins_remove -U`` does.
    """
    from hakeeper.cli.actions import kits_of
    from hakeeper.recovery.engine import call

    kits = kits_of(ctx, ctx.lcd)
    for resource in outcome.removed:
        kit = kits.find(resource.app, resource.type)
        if kit is None:
            continue
        result = asyncio.run(call(kit, "delete", resource))
        if not result.ok:
            ctx.warn(f"apply: the delete action of {resource.tag} failed: {result.message}; removed all the same")


@command(
    "export",
    "print the LCD's resources, dependencies and equivalencies as a file for hakeeper apply",
    arg("--format", choices=("json", "yaml"), default="json", help="json (default) or yaml"),
    epilog="hakeeper apply of what export printed changes nothing: keep it in version control, change it,\n"
    "see what would change with apply -n, and apply it. The states of the resources are not in it.",
)
def _export(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.lcd.snapshot() as lcd:
        doc = document(lcd)
    ctx.out.write(dump(doc, args.format))
    return 0
