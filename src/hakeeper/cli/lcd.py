"""``hakeeper lcd ACTION``: back up the LCD, restore a backup, check the file.

One command with an action, as ``hakeeper cluster``. It always runs here,
never through hakeeperd: the files named are this machine's, relative to the
current directory, and ``restore`` must not run under a daemon at all.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hakeeper.cli.base import Context, arg, command
from hakeeper.db import backup, files
from hakeeper.db.store import Lcd
from hakeeper.errors import HakeeperError, LcdDamaged, SystemCallFailed, UsageError
from hakeeper.layout import LCD_NAME, PID_NAME, ensure_state_dir

ACTIONS = ("backup", "restore", "check")

EPILOG = """actions:
  backup FILE    copy the LCD to the new file FILE, consistent while hakeeperd writes
                 (SQLite's online backup); an existing FILE is never overwritten
  restore FILE   replace the LCD by the backup FILE, after checking that FILE is a
                 whole hakeeper LCD of this node and of a schema this hakeeper knows;
                 the LCD replaced is kept beside it as lcd.sqlite.replaced-TIME (or
                 lcd.sqlite.damaged-TIME, renamed as it was). Refused while hakeeperd
                 runs: stop it with 'lkstop -f' (the applications keep running),
                 restore, then 'lkstart' (it checks what really runs here)
  check [FILE]   check the LCD (or the backup FILE): the file, integrity_check,
                 foreign keys, schema version, dependency cycles; one line per
                 problem, exit 0 only when there is none

A damaged LCD (empty, truncated, not an SQLite database, unreadable) is refused
by every command and kept as it is, never replaced by a new one; see
docs/lcd.md, "Damage, backup and restore"."""


@command(
    "lcd",
    "the LCD's file: backup FILE, restore FILE, check [FILE]",
    arg("action", choices=ACTIONS, metavar="ACTION", help="backup | restore | check"),
    arg("file", nargs="?", metavar="FILE", help="backup: the new file; restore: the backup; check: a file to check"),
    local=True,
    epilog=EPILOG,
)
def _lcd(ctx: Context, args: argparse.Namespace) -> int:
    action: str = args.action
    if action in ("backup", "restore") and not args.file:
        raise UsageError(f"'lcd {action}' needs a FILE (see: hakeeper lcd --help)")
    path = ctx.root / LCD_NAME
    if action == "backup":
        facts = backup.backup(path, Path(args.file))
        ctx.print(f"backed up {path} to {args.file} ({facts})")
        return 0
    if action == "restore":
        root = ensure_state_dir(ctx.root)
        with _no_daemon(root):
            done = backup.restore(root / LCD_NAME, Path(args.file), node=_this_node(root), stamp=_stamp())
        kept = f"; the LCD it replaced is kept as {done.kept}" if done.kept else ""
        ctx.print(f"restored {args.file} to {root / LCD_NAME} ({done.facts}){kept}")
        return 0
    checked = Path(args.file) if args.file else path
    findings = backup.check(checked)
    if not findings:
        ctx.print(f"{checked}: ok (file, integrity, schema, foreign keys, local node, no dependency cycle)")
        return 0
    ctx.out.write("".join(f"{checked}: {finding}\n" for finding in findings))
    count = f"{len(findings)} problem{'s' if len(findings) > 1 else ''} found"
    if args.file:
        raise LcdDamaged(f"{checked} is not a whole LCD ({count}, above)")
    raise files.damaged(checked, f"{count}, above")


@contextmanager
def _no_daemon(root: Path) -> Iterator[None]:
    """Hold hakeeperd's pid-file lock: refused while it runs, and it cannot start meanwhile."""
    path = root / PID_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SystemCallFailed(f"cannot open {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemCallFailed(
                f"hakeeperd (or another restore) runs on {root}: stop it first with 'lkstop -f' "
                "(the applications keep running), restore, then 'lkstart'"
            ) from None
        yield
    finally:
        os.close(fd)


def _this_node(root: Path) -> str | None:
    """This node's name, to refuse another node's backup: from its LCD, its certificate, or $HAKEEPER_NODE."""
    try:
        if files.inspect(root / LCD_NAME):
            with Lcd(root / LCD_NAME, readonly=True) as lcd:
                return lcd.local_node
    except HakeeperError:
        pass  # damaged: ask the other witnesses
    from hakeeper.comm.identity import identity_exists, load_identity

    if identity_exists(root):
        try:
            return load_identity(root).node
        except HakeeperError:
            pass
    return os.environ.get("HAKEEPER_NODE") or None


def _stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%S")
