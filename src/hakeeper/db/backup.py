"""Backup, restore and check of the LCD's file (``hakeeper lcd backup | restore | check``).

- :func:`backup` copies the LCD with SQLite's online backup API in one step,
  that is in one read transaction: the copy is the LCD as of one committed
  change, whatever hakeeperd writes meanwhile. The copy is checked, made a
  self-contained file (no write-ahead log), synced and only then linked to its
  name: a backup file is whole or absent, and an existing file is never
  overwritten.
- :func:`restore` copies the backup into the state directory first, so that
  what is checked is what is restored: a hakeeper LCD of a schema this program
  knows (an older one is upgraded), whole, of this node. The LCD it replaces is
  kept beside it with a time stamp: a healthy one as a backup copy, a damaged
  one renamed as it is (with its write-ahead log). A healthy LCD is replaced
  through the backup API too, under SQLite's lock, so a command that has it
  open meanwhile sees the old or the new LCD, never a mix. Whether hakeeperd
  runs is the caller's concern (the command refuses then).
- :func:`check` lists what is wrong: the file, ``integrity_check``, the schema
  and its version, foreign keys, the local node, dependency cycles.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hakeeper.db import files, graph
from hakeeper.db.schema import MIGRATIONS, SCHEMA_VERSION, statements
from hakeeper.db.store import BUSY_TIMEOUT_MS, Lcd
from hakeeper.errors import (
    AlreadyExists,
    IllegalArgument,
    InternalError,
    LcdDamaged,
    NotFound,
    SystemCallFailed,
)

TIMEOUT = BUSY_TIMEOUT_MS / 1000
MAX_FINDINGS = 20  # of one kind; then one line says how many more


@dataclass(frozen=True)
class Facts:
    """What an LCD file holds, in a few words for the administrator."""

    node: str
    schema: int
    last_seq: int
    resources: int

    def __str__(self) -> str:
        return f"node {self.node}, schema version {self.schema}, {self.resources} resources, change {self.last_seq}"


@dataclass(frozen=True)
class Restored:
    facts: Facts
    kept: Path | None  # where the LCD that was replaced is now (None: there was none)


def facts_of(conn: sqlite3.Connection) -> Facts:
    local = conn.execute("SELECT name FROM nodes WHERE local = 1").fetchone()
    return Facts(
        node=str(local[0]) if local else "?",
        schema=int(conn.execute("PRAGMA user_version").fetchone()[0]),
        last_seq=int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]),
        resources=int(conn.execute("SELECT count(*) FROM resources").fetchone()[0]),
    )


# ---------------------------------------------------------------------- backup


def backup(source: Path, target: Path) -> Facts:
    """Write a consistent copy of the LCD ``source`` to the new file ``target``; what it holds."""
    if not files.inspect(source):
        raise NotFound(f"there is no LCD at {source} to back up")
    if os.path.lexists(target):
        raise AlreadyExists(f"{target} exists already: name a new file (a backup never overwrites one)")
    temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with _readonly(source) as src:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            with contextlib.closing(sqlite3.connect(temporary, isolation_level=None)) as dst:
                src.backup(dst)  # one step: one read transaction, one committed state
                dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                files.quick_check(dst, source)
                facts = facts_of(dst)
        files.fsync(temporary)
        try:
            os.link(temporary, target)
        except FileExistsError:
            raise AlreadyExists(f"{target} exists already: name a new file (a backup never overwrites one)") from None
        files.fsync(target.parent)
    except OSError as exc:
        raise SystemCallFailed(f"cannot write the backup {target}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        if files.is_damage(exc):
            raise files.damaged(source, files.what_sqlite_says(exc)) from None
        raise SystemCallFailed(f"cannot back up the LCD {source} to {target}: {exc}") from None
    finally:
        files.remove_with_side_files(temporary)
    return facts


# ---------------------------------------------------------------------- restore


def restore(path: Path, source: Path, *, node: str | None, stamp: str) -> Restored:
    """Replace the LCD at ``path`` by the backup ``source`` (of ``node``, when given); keep the one replaced.

    ``stamp`` names the kept copy: ``lcd.sqlite.replaced-STAMP`` (a healthy LCD,
    copied) or ``lcd.sqlite.damaged-STAMP`` (a damaged one, renamed as it is).
    """
    _require_file(source)
    staged = path.with_name(f".{path.name}.restore-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        try:
            with _readonly(source) as src, contextlib.closing(sqlite3.connect(staged, isolation_level=None)) as dst:
                src.backup(dst)
        except sqlite3.Error as exc:
            raise IllegalArgument(f"{source} is not a usable LCD backup ({exc})") from None
        findings = check(staged)
        if findings:
            more = f" and {len(findings) - 1} more (see: hakeeper lcd check {source})" if len(findings) > 1 else ""
            raise IllegalArgument(f"{source} is not a usable LCD backup: {findings[0]}{more}")
        Lcd(staged, actor="restore").close()  # upgrades an older schema; WAL mode, as every LCD
        facts = _facts_at(staged)
        if node is not None and facts.node != node:
            raise IllegalArgument(
                f"{source} is the LCD of node {facts.node!r}, not of this node {node!r}: restore a backup of this node"
            )
        files.fsync(staged)
        kept = _replace(path, staged, stamp)
        Lcd(path, actor="restore").close()
        return Restored(_facts_at(path), kept)
    finally:
        files.remove_with_side_files(staged)


def _facts_at(path: Path) -> Facts:
    with _readonly(path) as conn:
        return facts_of(conn)


def _require_file(source: Path) -> None:
    try:
        what = files.damage(source)
    except FileNotFoundError:
        raise NotFound(f"there is no file {source}") from None
    except OSError as exc:
        raise SystemCallFailed(f"cannot read {source}: {exc.strerror or exc}") from None
    if what is not None:
        raise IllegalArgument(f"{source} is not a usable LCD backup ({what})")


def _replace(path: Path, staged: Path, stamp: str) -> Path | None:
    """Put ``staged`` in the place of the LCD at ``path``; where the replaced one is kept."""
    try:
        exists = files.inspect(path) and _whole(path)
    except LcdDamaged:
        exists = None
    if exists:
        return _replace_live(path, staged, stamp)
    kept = None
    if exists is None:  # damaged: renamed as it is, with its log (a log beside a new file would be applied to it)
        kept = _unique(path.with_name(f"{path.name}.damaged-{stamp}"))
        for suffix in ("", *files.SIDE_FILES):
            with contextlib.suppress(FileNotFoundError):
                os.rename(files.side_file(path, suffix), files.side_file(kept, suffix))
    else:  # none: what a connection may have left is empty (files.inspect refuses a log with frames)
        for suffix in files.SIDE_FILES:
            files.side_file(path, suffix).unlink(missing_ok=True)
    try:
        os.link(staged, path)
    except FileExistsError:
        raise SystemCallFailed(f"an LCD appeared at {path} during the restore: run it again") from None
    except OSError as exc:
        raise SystemCallFailed(f"cannot restore the LCD {path}: {exc.strerror or exc}") from None
    files.fsync(path.parent)
    return kept


def _whole(path: Path) -> bool:
    """Whether the existing LCD passes quick_check; raises LcdDamaged if not."""
    with _readonly(path) as conn:
        files.quick_check(conn, path)
    return True


def _replace_live(path: Path, staged: Path, stamp: str) -> Path:
    kept = _unique(path.with_name(f"{path.name}.replaced-{stamp}"))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=TIMEOUT)) as live:
        live.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        live.execute("PRAGMA synchronous = FULL")
        os.close(os.open(kept, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with contextlib.closing(sqlite3.connect(kept, isolation_level=None)) as copy:
            live.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")
        files.fsync(kept)
        with contextlib.closing(sqlite3.connect(staged, isolation_level=None)) as new:
            size = live.execute("PRAGMA page_size").fetchone()[0]
            if new.execute("PRAGMA page_size").fetchone()[0] != size:  # a WAL file keeps its page size
                new.execute("PRAGMA journal_mode = DELETE")
                new.execute(f"PRAGMA page_size = {int(size)}")
                new.execute("VACUUM")
            new.backup(live)  # under the LCD's write lock: its readers see the old LCD or the new
    return kept


def _unique(path: Path) -> Path:
    candidate, number = path, 1
    while os.path.lexists(candidate) or os.path.lexists(files.side_file(candidate, "-wal")):
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


# ---------------------------------------------------------------------- check


def check(path: Path) -> list[str]:
    """What is wrong with the LCD file at ``path``, one sentence each; empty when it passes every check."""
    try:
        what = files.damage(path)
    except FileNotFoundError:
        raise NotFound(f"there is no LCD at {path}") from None
    except PermissionError as exc:
        raise SystemCallFailed(f"cannot read {path}: {exc.strerror}") from None
    except OSError as exc:
        return [f"unreadable: {exc.strerror or exc}"]
    if what is not None:
        return [what]
    try:
        with _readonly(path) as conn:
            return _findings(conn)
    except sqlite3.Error as exc:
        if files.is_damage(exc):
            return [files.what_sqlite_says(exc)]
        raise SystemCallFailed(f"cannot check {path}: {exc}") from None


def _findings(conn: sqlite3.Connection) -> list[str]:
    found: list[str] = []
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        found.append(f"schema version {version} is newer than this hakeeper knows ({SCHEMA_VERSION}): upgrade hakeeper")
    elif version == 0:
        found.append("schema version 0: not a hakeeper LCD")
    try:
        rows = [str(row[0]) for row in conn.execute(f"PRAGMA integrity_check({MAX_FINDINGS})")]
    except sqlite3.DatabaseError as exc:  # a page it cannot even parse
        if not files.is_damage(exc):
            raise
        rows = [str(exc)]
    if rows != ["ok"]:
        return found + [f"integrity: {row}" for row in rows]
    if not 0 < version <= SCHEMA_VERSION:
        return found
    present = set(conn.execute("SELECT type, name FROM sqlite_master").fetchall())
    missing = sorted(_schema_objects(version) - present)
    if missing:
        return found + [f"schema: {kind} {name!r} of schema version {version} is missing" for kind, name in missing]
    fks = conn.execute("PRAGMA foreign_key_check").fetchall()
    found += _capped(
        [
            f"foreign key: {table} row {rowid} refers to a {parent} row that does not exist"
            for table, rowid, parent, _ in fks
        ]
    )
    local = [str(row[0]) for row in conn.execute("SELECT name FROM nodes WHERE local = 1")]
    if len(local) != 1:
        found.append(f"{len(local)} nodes are marked as this node (local), not one: {', '.join(local) or 'none'}")
    edges = [(str(p), str(c)) for p, c in conn.execute("SELECT parent, child FROM dependencies")]
    try:
        graph.restore_levels(edges, {tag for edge in edges for tag in edge})
    except InternalError as exc:
        found.append(str(exc))
    return found


def _schema_objects(version: int) -> set[tuple[str, str]]:
    """The tables and indexes an LCD of schema ``version`` has."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        for migration in MIGRATIONS[:version]:
            for statement in statements(migration):
                conn.execute(statement)
        return {(str(kind), str(name)) for kind, name in conn.execute("SELECT type, name FROM sqlite_master")}


def _capped(lines: list[str]) -> list[str]:
    if len(lines) <= MAX_FINDINGS:
        return lines
    return [*lines[:MAX_FINDINGS], f"... and {len(lines) - MAX_FINDINGS} more of the kind above"]


# ---------------------------------------------------------------------- plumbing


@contextlib.contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    conn, cleanup = files.connect_readonly(path, TIMEOUT)
    try:
        yield conn
    finally:
        conn.close()
        if cleanup is not None:
            cleanup()
