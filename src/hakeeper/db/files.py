"""The LCD's file: a missing file is a new LCD; a file that is there but not whole is damage.

SQLite takes an empty file for a new, empty database, so after ``truncate -s 0
lcd.sqlite`` every command would answer as if the cluster had no
configuration, and the next change would write a fresh LCD over what was
left. This module tells the cases apart before SQLite sees the file, and a
damaged file is refused and kept as it is:

- :func:`inspect` says whether the LCD exists, and refuses one that is empty,
  truncated or unreadable as far as its size tells (one ``stat``: every
  command can afford it);
- :func:`create` makes a new LCD whole in a temporary file and links it into
  place, so that no process ever sees a half-made one: an empty ``lcd.sqlite``
  can only be damage, never a neighbour's LCD being born;
- :func:`connect_readonly` opens the LCD for a command that only reads, also
  where the state directory cannot be written (another user, a read-only mount);
- damage that the size does not show (a bad header, fewer pages than the
  header counts, a page overwritten) shows to SQLite: :func:`is_damage` tells
  its errors apart, and :func:`quick_check` is what hakeeperd runs when it starts.

This module imports nothing of hakeeper's but the errors.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

from hakeeper.errors import LcdDamaged, SystemCallFailed

MIN_PAGE = 512  # every SQLite page size is a multiple of it
SIDE_FILES = ("-wal", "-shm", "-journal")

# SQLite's primary result codes (the low byte of sqlite3.Error.sqlite_errorcode).
SQLITE_READONLY = 8
SQLITE_CORRUPT = 11
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26

RESTORE_HINT = (
    "restore a backup of this node's LCD (kept here or on a peer) with 'hakeeper lcd restore FILE' "
    "(docs/lcd.md: Damage, backup and restore)"
)

Cleanup = Callable[[], None]


class NeedsWrite(SystemCallFailed):
    """A read-only open found work that needs writing first (a schema upgrade, the local node)."""


def damaged(path: Path, what: str) -> LcdDamaged:
    """The error that refuses the damaged LCD at ``path``: what is wrong, that it is kept, how to restore."""
    return LcdDamaged(f"the LCD {path} is damaged ({what}) and was left as it is: {RESTORE_HINT}")


def side_file(path: Path, suffix: str) -> Path:
    """SQLite's companion file of ``path``: ``-wal``, ``-shm`` or ``-journal``."""
    return path.with_name(path.name + suffix)


def inspect(path: Path) -> bool:
    """Whether the LCD at ``path`` exists: False when there is none (a new one may be made).

    Raises :class:`LcdDamaged` when the file is there but not whole, and
    :class:`SystemCallFailed` when this user may not read it.
    """
    try:
        what = damage(path)
    except (FileNotFoundError, NotADirectoryError):
        wal = side_file(path, "-wal")
        with contextlib.suppress(OSError):
            if wal.stat().st_size > 0:  # the latest changes, without the file they belong to
                raise damaged(path, f"missing, but its write-ahead log {wal.name} is there") from None
        return False
    except PermissionError as exc:
        raise SystemCallFailed(
            f"cannot read the LCD {path}: {exc.strerror} (run the command as the owner of the state directory)"
        ) from None
    except OSError as exc:
        raise damaged(path, f"unreadable: {exc.strerror or exc}") from None
    if what is not None:
        raise damaged(path, what)
    return True


def damage(path: Path) -> str | None:
    """What is wrong with the SQLite file at ``path``, as far as its size tells, or None when nothing shows.

    Raises OSError when there is nothing to examine (FileNotFoundError) or it
    cannot be. Only ``stat`` is used, never open(): closing any descriptor of a
    file drops every POSIX lock the process holds on it, the SQLite
    connections' locks included (hakeeperd has the LCD open while its threads
    open it again). What the size cannot tell, SQLite tells at the first read:
    a bad header is "not a database", a file shorter than its header says is
    "malformed" (see :func:`is_damage`).
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty: 0 bytes"
    if info.st_size < MIN_PAGE:
        return f"too short for an SQLite database: {info.st_size} bytes"
    if info.st_size % MIN_PAGE:
        return f"truncated: {info.st_size} bytes, not a whole number of pages"
    return None


def what_sqlite_says(exc: BaseException) -> str:
    """An SQLite error about the file, in the words of :func:`damaged`."""
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == SQLITE_NOTADB:
        return "not an SQLite database"
    return f"SQLite: {exc}"


def is_damage(exc: BaseException) -> bool:
    """Whether an SQLite error says the file is damaged (corrupt, or not a database)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return isinstance(exc, sqlite3.DatabaseError) and code in (SQLITE_CORRUPT, SQLITE_NOTADB)


def require_lcd(conn: sqlite3.Connection, path: Path) -> None:
    """The first read of an open LCD: a damaged file fails it; an SQLite database of something else is refused."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise damaged(path, "an SQLite database, but not an LCD: schema version 0 with tables")


def quick_check(conn: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`LcdDamaged` unless ``PRAGMA quick_check`` finds the open LCD whole."""
    try:
        rows = conn.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:  # a page it cannot even parse
        if not is_damage(exc):
            raise
        rows = [(str(exc),)]
    if [tuple(row) for row in rows] != [("ok",)]:
        raise damaged(path, "quick_check: " + "; ".join(str(row[0]) for row in rows))


def create(path: Path, build: Callable[[Path], None]) -> None:
    """Make a new LCD at ``path``: ``build`` makes it whole in a temporary file, which is then linked in place.

    The link fails if a file appeared meanwhile: another process made the LCD
    first, and that one is kept. Nothing is left behind on failure.
    """
    _remove_abandoned(path)
    new = path.with_name(f".{path.name}.new-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        build(new)
        fsync(new)
        try:
            os.link(new, path)
        except FileExistsError:
            pass  # another process made it first: that one is the LCD
        except OSError as exc:
            raise SystemCallFailed(f"cannot create the LCD {path}: {exc.strerror or exc}") from None
        fsync(path.parent)
    finally:
        remove_with_side_files(new)


def _remove_abandoned(path: Path) -> None:
    """Remove what a process killed while it made a new LCD left (``.lcd.sqlite.new-PID-*`` of a PID that is gone)."""
    for leftover in path.parent.glob(f".{path.name}.new-*"):
        pid = leftover.name[len(f".{path.name}.new-") :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)) or leftover.name.endswith(SIDE_FILES):
            continue
        remove_with_side_files(leftover)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_with_side_files(path: Path) -> None:
    for name in (path, *(side_file(path, suffix) for suffix in SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            name.unlink()


def fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def connect_readonly(path: Path, timeout: float) -> tuple[sqlite3.Connection, Cleanup | None]:
    """A read-only connection to the LCD at ``path``, and what to call after closing it (or None).

    Where this user may write, the connection is an ordinary one that SQLite
    keeps from writing (``query_only``): closing it tidies the log away as
    usual. Elsewhere it is opened read-only; but SQLite reads a WAL database
    only with its shared-memory index (``-shm``), which a user who cannot write
    the state directory cannot create. Then the connection reads a private
    copy of the file and its log, taken while neither changed (no one writes a
    directory that this user cannot write but its owner, and the copy is
    checked against that).
    """
    if os.access(path.parent, os.W_OK) and os.access(path, os.W_OK):
        conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
        conn.execute("PRAGMA query_only = ON")
        return conn, None
    import urllib.parse

    uri = "file:" + urllib.parse.quote(os.fsencode(path)) + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout)
    try:
        conn.execute("PRAGMA user_version").fetchone()  # the first read opens the WAL index
    except sqlite3.OperationalError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in (SQLITE_READONLY, SQLITE_CANTOPEN):
            raise
        return _private_copy(path, timeout)
    except BaseException:
        conn.close()
        raise
    return conn, None


COPY_ATTEMPTS = 3


def _private_copy(path: Path, timeout: float) -> tuple[sqlite3.Connection, Cleanup]:
    import shutil
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="hakeeper-lcd-"))

    def cleanup() -> None:
        shutil.rmtree(directory, ignore_errors=True)

    try:
        copy = directory / path.name
        for _ in range(COPY_ATTEMPTS):
            before = _copy_fingerprint(path)
            remove_with_side_files(copy)
            shutil.copyfile(path, copy)
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(side_file(path, "-wal"), side_file(copy, "-wal"))
            if before == _copy_fingerprint(path):
                break
        else:
            raise SystemCallFailed(f"the LCD {path} kept changing while it was read: try again")
        conn = sqlite3.connect(copy, isolation_level=None, timeout=timeout)
        conn.execute("PRAGMA query_only = ON")
    except PermissionError as exc:
        cleanup()
        raise SystemCallFailed(
            f"cannot read the LCD {path}: {exc.strerror} (run the command as the owner of the state directory)"
        ) from None
    except BaseException:
        cleanup()
        raise
    return conn, cleanup


def _copy_fingerprint(path: Path) -> tuple[tuple[int, int, int, int] | None, ...]:
    result: list[tuple[int, int, int, int] | None] = []
    for name in (path, side_file(path, "-wal")):
        try:
            info = os.stat(name)
        except FileNotFoundError:
            result.append(None)
        else:
            result.append((info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    return tuple(result)
