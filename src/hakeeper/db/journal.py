"""The LCD's connection, its write transactions and its change log: the base of :class:`hakeeper.db.store.Lcd`.

One :class:`Journal` wraps one connection to ``<state dir>/lcd.sqlite`` (WAL
mode, ``synchronous=FULL``, foreign keys on). A method that changes something is
decorated :func:`_write`: it runs as one ``BEGIN IMMEDIATE`` transaction, its
checks included (:meth:`Journal._transaction`), and writes through
:meth:`Journal._change`, which appends the change to the change log in the same
transaction; so a crash at any moment leaves the state before or after the
change, never half of it, and every committed change has a sequence number.
Here too: the two-phase commit with the other nodes a change concerns (the
planning pass, :class:`ChangedMeanwhile`), several changes as one
(:meth:`Journal.in_one_change`), and the errors SQLite's constraints map to
(:func:`constraint_error`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, Self, TypeVar

from hakeeper.db import files
from hakeeper.db.model import Change, check_name
from hakeeper.db.schema import MIGRATIONS, SCHEMA_VERSION, statements
from hakeeper.errors import (
    AlreadyExists,
    DeleteRefused,
    HakeeperError,
    IllegalArgument,
    InternalError,
    NotFound,
    SchemaError,
    StateDirError,
    SystemCallFailed,
)
from hakeeper.layout import LCD_NAME, ensure_state_dir, state_root

logger = logging.getLogger("hakeeper.db.store")  # the LCD's one logger, whichever part of it writes

BUSY_TIMEOUT_MS = 10_000

P = ParamSpec("P")
R = TypeVar("R")
J = TypeVar("J", bound="Journal")


def default_node_name() -> str:
    """This node's name when the LCD is first created: ``$HAKEEPER_NODE``, the configuration file's
    ``[node] name`` (hakeeper.config), or the short host name."""
    chosen = os.environ.get("HAKEEPER_NODE")
    if chosen is None:
        from hakeeper.config import load

        configured = load().node_name
        if configured is not None:
            return configured
        host = os.uname().nodename.split(".")[0]
        try:
            return check_name(host, "node name")
        except IllegalArgument as exc:
            raise IllegalArgument(f"this host's name will not do: {exc} (set HAKEEPER_NODE)") from None
    if not chosen:
        raise IllegalArgument("HAKEEPER_NODE is set but empty: set it to this node's name, or unset it")
    try:
        return check_name(chosen, "node name")
    except IllegalArgument as exc:
        raise IllegalArgument(f"HAKEEPER_NODE: {exc}") from None


class ChangedMeanwhile(SystemCallFailed):
    """A replicated change no longer applies as the other nodes prepared it: another change came first."""


class LcdBusy(SystemCallFailed):
    """Another writer held the LCD's lock for longer than the busy timeout: nothing was written."""


@dataclass
class _Transaction:
    """The write transaction open on an :class:`Lcd`'s connection, and what its change must be."""

    plan: bool = False  # only learn the change: stop at Lcd._change, write nothing, roll back
    expected: str | None = None  # the change (op and args, as JSON) the other nodes prepared
    pending: Replication | None = None
    op: str = "the change"
    committed: list[Callable[[], None]] = field(default_factory=list)  # to call once it has committed
    steps: list[tuple[str, dict[str, Any]]] | None = None  # in Lcd.in_one_change: its steps so far (op, args)


def _write(method: Callable[Concatenate[J, P], R]) -> Callable[Concatenate[J, P], R]:
    """Make a method that changes the LCD one write transaction, its checks included (:meth:`Lcd._transaction`)."""

    @functools.wraps(method)
    def transactional(self: J, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._transaction(lambda: method(self, *args, **kwargs))

    return transactional


class Journal:
    """An open LCD. Use as a context manager, or call :meth:`close`.

    ``Lcd(path)`` creates the file if there is none (:meth:`open` creates it
    whole, atomically) and refuses one that is there but damaged. ``readonly``
    opens it for reading only: any change is refused by SQLite. ``verify`` runs
    ``PRAGMA quick_check`` (hakeeperd does, when it starts).
    """

    def __init__(
        self,
        path: Path,
        *,
        actor: str | None = None,
        node: str | None = None,
        readonly: bool = False,
        verify: bool = False,
    ) -> None:
        self.path = path
        self.actor = actor if actor is not None else current_user()
        self.readonly = readonly
        #: Called with (op, args) before a change; returns what to call with "committed?" after it
        #: (hakeeperd sets it to replicate configuration changes to the nodes they concern).
        self.replicator: Callable[[str, dict[str, Any]], Replication | None] | None = None
        self._dry = False
        self._applying: str | None = None
        self._txn: _Transaction | None = None
        self._cleanup: files.Cleanup | None = None
        files.inspect(path)  # before SQLite sees it: it would take an empty file for a new database
        try:
            if readonly:
                self._conn, self._cleanup = files.connect_readonly(path, BUSY_TIMEOUT_MS / 1000)
            else:
                self._conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        except sqlite3.Error as exc:
            if files.is_damage(exc):
                raise files.damaged(path, files.what_sqlite_says(exc)) from None
            raise StateDirError(f"cannot open the LCD {path}: {exc}") from None
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            files.require_lcd(self._conn, path)  # a damaged or foreign file fails here, before any write
            if not readonly:
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise SystemCallFailed(f"cannot put the LCD {path} in WAL mode (got {mode})")
                self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
            self._local = self._ensure_local_node(node)
            if verify:
                files.quick_check(self._conn, path)
        except sqlite3.Error as exc:
            self.close()
            if files.is_damage(exc):
                raise files.damaged(path, files.what_sqlite_says(exc)) from None
            raise SystemCallFailed(f"cannot use the LCD {path}: {exc}") from None
        except HakeeperError:
            self.close()
            raise

    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str] | None = None,
        *,
        actor: str | None = None,
        node: str | None = None,
        readonly: bool = False,
        verify: bool = False,
    ) -> Self:
        """Open the LCD of the state directory ``root``, creating it if there is none.

        A file that is there but not whole is refused (:class:`LcdDamaged`) and
        kept, never replaced by a new LCD. ``readonly`` needs no write access to
        the state directory, unless the LCD must first be created or upgraded.
        """
        directory = state_root(root)
        path = directory / LCD_NAME
        if readonly and files.inspect(path):
            try:
                return cls(path, actor=actor, readonly=True)
            except files.NeedsWrite as exc:
                try:
                    ensure_state_dir(directory)
                except StateDirError:
                    raise exc from None
        directory = ensure_state_dir(directory)
        if not files.inspect(path):
            files.create(path, lambda new: cls(new, actor=actor, node=node).close())
        return cls(path, actor=actor, node=node, verify=verify)

    def close(self) -> None:
        if hasattr(self, "_conn"):
            self._conn.close()
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the LCD {self.path} has schema version {version}, newer than this hakeeper knows "
                f"({SCHEMA_VERSION}); upgrade hakeeper"
            )
        if self.readonly:
            raise files.NeedsWrite(
                f"the LCD {self.path} has schema version {version} and must be upgraded to {SCHEMA_VERSION} "
                "by a command that can write it (as the owner of the state directory)"
            )
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for number in range(version + 1, SCHEMA_VERSION + 1):
                for statement in statements(MIGRATIONS[number - 1]):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number}")
                logger.info("LCD %s migrated to schema version %d", self.path, number)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _ensure_local_node(self, node: str | None) -> str:
        row = self._conn.execute("SELECT name FROM nodes WHERE local = 1").fetchone()
        if row is not None:
            return str(row[0])
        if self.readonly:
            raise files.NeedsWrite(f"the LCD {self.path} names no local node yet: run a command that can write it")
        name = check_name(node, "node name") if node else default_node_name()
        return self._transaction(lambda: self._init_node(name))

    def _init_node(self, name: str) -> str:
        row = self._conn.execute("SELECT name FROM nodes WHERE local = 1").fetchone()
        if row is not None:  # another process created the LCD at the same moment
            return str(row[0])
        with self._change("init_node", {"name": name}) as db:
            db.execute("INSERT INTO nodes (name, local) VALUES (?, 1)", (name,))
        return name

    def _transaction(self, work: Callable[[], R]) -> R:
        """Run ``work`` — a method's checks, then its writes through :meth:`_change` — as one write transaction.

        The checks read inside ``BEGIN IMMEDIATE``, so no other writer commits
        between a check and the write it allows. A method called inside another's
        transaction (a replayed change) joins it. In a :meth:`try_change`,
        everything runs and is then rolled back.

        With a :attr:`replicator`, the other nodes the change concerns prepare it
        first (refusing it changes nothing anywhere) and commit it after this node.
        Their answers can take seconds, longer than this LCD may stay locked; so
        ``work`` runs twice. The first time it stops where it would write and is
        rolled back: its checks passed, and the change (operation and arguments)
        is known, for the other nodes to prepare. The second time it runs in a new
        transaction, every check again, and must come to the same change; if
        another writer committed in between and it does not, it is refused here
        and everywhere (:class:`ChangedMeanwhile`), and nothing changes.
        """
        if self._txn is not None:
            return work()
        if self.replicator is None or self._dry:
            return self._run(work, _Transaction())
        try:
            return self._run(work, _Transaction(plan=True))  # returned: it changes nothing
        except _Planned as planned:
            op, args = planned.op, planned.change
        pending = self.replicator(op, args)
        if pending is None:  # a change only this node has: nobody prepared it, this run decides alone
            return self._run(work, _Transaction())
        committed = False
        try:
            result = self._run(work, _Transaction(expected=_as_json(op, args), pending=pending))
            committed = True
            return result
        finally:
            pending.finish(committed)

    def _run(self, work: Callable[[], R], txn: _Transaction) -> R:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
                raise LcdBusy(f"the LCD {self.path} is busy: another writer held it for too long ({exc})") from None
            raise SystemCallFailed(f"the LCD {self.path} is busy or unwritable: {exc}") from None
        self._txn = txn
        try:
            result = work()
            if txn.plan or self._dry:
                self._conn.execute("ROLLBACK")
                return result
            self._conn.execute("COMMIT")
        except BaseException as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise constraint_error(txn.op, exc) from exc
            if isinstance(exc, sqlite3.Error):
                raise SystemCallFailed(f"the LCD {self.path} failed during {txn.op}: {exc}") from exc
            raise
        finally:
            self._txn = None
        for told in txn.committed:
            told()
        return result

    def group(self, works: Sequence[Callable[[], R]]) -> list[R | Exception]:
        """Make several changes in ONE write transaction: one commit, one fsync (hakeeperd's group commit).

        Each work is a change of its own — its checks, its writes, its change-log
        record — in a savepoint of its own: one that raises is rolled back alone
        and its error is returned in its place; the others commit together.
        Returns, in order, each work's result or error. Raises (nothing written)
        when the transaction cannot begin (:class:`LcdBusy`) or commit.
        """

        def each() -> list[R | Exception]:
            txn = self._txn
            assert txn is not None
            results: list[R | Exception] = []
            for work in works:
                logged, txn.op = len(txn.committed), "the change"
                self._conn.execute("SAVEPOINT one_change")
                try:
                    results.append(work())
                except Exception as exc:  # noqa: BLE001 - this change's own failure, handed back to its caller
                    self._conn.execute("ROLLBACK TO one_change")
                    del txn.committed[logged:]  # what it would have logged
                    if isinstance(exc, sqlite3.IntegrityError):
                        exc = constraint_error(txn.op, exc)
                    elif isinstance(exc, sqlite3.Error):
                        exc = SystemCallFailed(f"the LCD {self.path} failed during {txn.op}: {exc}")
                    results.append(exc)
                self._conn.execute("RELEASE one_change")
            return results

        if self._txn is not None:
            raise InternalError("a group of changes inside another change")
        return self._run(each, _Transaction())

    def set_busy_timeout(self, seconds: float) -> None:
        """How long this connection waits for another writer's lock before it gives up (:class:`LcdBusy`)."""
        self._conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def _when_committed(self, call: Callable[[], None]) -> None:
        """Call ``call`` once the open transaction has committed (to log what it changed); never if it does not."""
        if self._txn is not None:
            self._txn.committed.append(call)

    @contextmanager
    def _change(self, op: str, args: dict[str, Any]) -> Iterator[sqlite3.Connection]:
        """The writes of a change, in the open transaction, then its change-log record (and outbox rows)."""
        txn = self._txn
        if txn is None:
            raise InternalError(f"{op} outside a write transaction (a method that changes the LCD lacks @_write)")
        if txn.steps is not None:  # a step of a change made of several (in_one_change): that change records it
            txn.op = op
            txn.steps.append((op, args))
            yield self._conn
            return
        if txn.plan:
            raise _Planned(op, args)
        if txn.expected is not None and txn.expected != _as_json(op, args):
            raise ChangedMeanwhile(
                f"{op} refused: another change to the LCD came while the other nodes prepared it, "
                "and it no longer applies as they prepared it; nothing was changed (try again)"
            )
        txn.op = op
        yield self._conn
        self._conn.execute(
            "INSERT INTO changes (time, actor, op, args) VALUES (?, ?, ?, ?)",
            (time.time(), self.actor, op, json.dumps(args, sort_keys=True, ensure_ascii=False)),
        )
        if txn.pending is not None:  # what the other nodes must be told, kept until they have been
            self._conn.executemany(
                "INSERT INTO outbox (txid, node, seq, message) VALUES (?, ?, ?, ?)", txn.pending.outbox
            )
        if self._applying is not None:
            self._conn.execute("INSERT INTO applied (txid, time) VALUES (?, ?)", (self._applying, time.time()))

    @_write
    def apply_replicated(self, txid: str, op: str, args: dict[str, Any], actor: str) -> bool:
        """Apply a change another node committed, once: False if ``txid`` was applied here before."""
        if self._exists("SELECT 1 FROM applied WHERE txid = ?", (txid,)):
            return False
        own, self.actor, self._applying = self.actor, actor, txid
        try:
            self.replay(op, args)
        finally:
            self.actor, self._applying = own, None
        return True

    def outbox(self, node: str) -> list[tuple[str, str]]:
        """Committed changes ``node`` has not confirmed yet: (txid, message), oldest first."""
        rows = self._query("SELECT txid, message FROM outbox WHERE node = ? ORDER BY seq, txid", (node,))
        return [(str(t), str(m)) for t, m in rows]

    def delivered(self, txid: str, node: str) -> None:
        """``node`` confirmed ``txid``: bookkeeping of delivery, not a configuration change."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("DELETE FROM outbox WHERE txid = ? AND node = ?", (txid, node))
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise SystemCallFailed(f"the LCD {self.path} failed to record a delivery: {exc}") from None

    def try_change(self, op: str, args: dict[str, Any]) -> None:
        """Check that a recorded change would apply here (it runs, then is rolled back); raises if not."""
        self._dry = True
        try:
            self.replay(op, args)
        finally:
            self._dry = False

    def in_one_change(
        self, op: str, work: Callable[[], dict[str, Any] | None], *, dry: bool = False
    ) -> dict[str, Any] | None:
        """Run ``work`` as ONE change ``op`` (``hakeeper apply``: hakeeper.db.bulk).

        Every change ``work`` makes through this Lcd's methods is a step of it:
        each runs its own checks, in the one write transaction, and writes, but
        records nothing; :meth:`steps_made` lists them. The change log then
        records one change, ``op`` with the arguments ``work`` returns (None:
        it made no step, and nothing is recorded); replication, the planning
        pass and :class:`ChangedMeanwhile` treat it as any other change. ``dry``:
        all of it runs, then is rolled back. Returns what ``work`` returned.
        """

        def steps() -> dict[str, Any] | None:
            txn = self._txn
            assert txn is not None
            outer, txn.steps = txn.steps, []
            try:
                args = work()
            finally:
                txn.steps = outer
            if args is not None:
                with self._change(op, args):
                    pass
            return args

        if not dry:
            return self._transaction(steps)
        if self._txn is not None:  # a dry run inside a change would leave its writes to that change's commit
            raise InternalError(f"a dry run of {op} inside another change")
        self._dry = True
        try:
            return self._transaction(steps)
        finally:
            self._dry = False

    @contextmanager
    def snapshot(self) -> Iterator[Self]:
        """Read in one read transaction: every read sees the LCD as one committed change left it."""
        if self._conn.in_transaction:  # inside a change already: its transaction is the snapshot
            yield self
            return
        self._query("BEGIN")
        try:
            yield self
        finally:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")

    def steps_made(self) -> list[tuple[str, dict[str, Any]]]:
        """The steps the open :meth:`in_one_change` has made so far, as each records itself: (op, args)."""
        if self._txn is None or self._txn.steps is None:
            raise InternalError("steps_made outside in_one_change")
        return list(self._txn.steps)

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            if files.is_damage(exc):
                raise files.damaged(self.path, files.what_sqlite_says(exc)) from None
            raise SystemCallFailed(f"cannot read the LCD {self.path}: {exc}") from None

    def _exists(self, sql: str, params: Iterable[Any]) -> bool:
        return bool(self._query(sql, params))

    @property
    def local_node(self) -> str:
        """The name of the node this LCD belongs to."""
        return self._local

    def last_seq(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])

    def changes(self, since: int = 0) -> list[Change]:
        """Committed changes with a sequence number above ``since``, oldest first."""
        rows = self._query("SELECT seq, time, actor, op, args FROM changes WHERE seq > ? ORDER BY seq", (since,))
        return [Change(seq, t, actor, op, json.loads(args)) for seq, t, actor, op, args in rows]

    def forbid_writes(self) -> None:
        """From now on this connection only reads (SQLite's ``query_only``): a write through it fails at once.

        hakeeperd's event loop keeps one for its cheap reads; its writes go to
        the writer thread (hakeeper.db.aio). This makes a write that slips onto
        the loop an error a test sees, not a commit that stalls the loop.
        """
        self._conn.execute("PRAGMA query_only = ON")

    def integrity_ok(self) -> bool:
        return bool(self._query("PRAGMA integrity_check")[0][0] == "ok")

    if TYPE_CHECKING:  # defined by Lcd, which knows every change

        def replay(self, op: str, args: dict[str, Any]) -> None: ...


class _Unchanged(Exception):
    """Raised inside a change that turns out to change nothing, to roll it back without a change-log record."""


class _Planned(Exception):  # a signal, not an error: raised by Lcd._change in a planning run
    """What a change would be (its op and args), learned before it writes: see :meth:`Lcd._transaction`."""

    def __init__(self, op: str, args: dict[str, Any]) -> None:
        super().__init__(op)
        self.op = op
        self.change = args  # not .args: an exception's args become a tuple


def _as_json(op: str, args: dict[str, Any]) -> str:
    return json.dumps([op, args], sort_keys=True, ensure_ascii=False)


#: What a UNIQUE constraint stands for, by the columns SQLite names: the words of the check it backs.
_UNIQUE = {
    "resources.tag": "a resource with that tag",
    "resources.id": "a resource with that id",
    "nodes.name": "a node of that name",
    "apps.name": "that application",
    "types.app, types.name": "that resource type",
    "dependencies.parent, dependencies.child": "that dependency",
    "equivalencies.tag, equivalencies.node": "an equivalency of that resource on that node",
    "equivalencies.tag, equivalencies.priority": "that priority for that resource on another node",
    "flags.name": "that flag",
    "comm_paths.node, comm_paths.local_addr, comm_paths.remote_addr": "that communication path",
    "comm_paths.node, comm_paths.priority": "that priority for another path to that node",
    "mirrors.volume": "a mirrored volume of that name",
    "mirror_stores.volume, mirror_stores.node": "a backing store of that volume on that node",
    "mirror_targets.volume, mirror_targets.node": "a mirror of that volume to that node",
}


def constraint_error(op: str, exc: sqlite3.IntegrityError) -> HakeeperError:
    """The error a check gives for what a constraint of the schema refused: the same kind, the same exit code.

    The checks run in the change's transaction and should refuse first; a
    constraint that fires means a check missed something, and the user sees the
    code a script expects ("exists already" is 4 whichever refused it).
    """
    text = str(exc)
    kind, _, columns = text.partition(" constraint failed")
    columns = columns.lstrip(": ")
    if kind in ("UNIQUE", "PRIMARY KEY"):
        what = _UNIQUE.get(columns, columns or "it")
        return AlreadyExists(f"{op} refused: {what} exists already ({text}); nothing was changed")
    if kind == "FOREIGN KEY" and op.startswith("remove"):
        return DeleteRefused(f"{op} refused: something still refers to what it removes ({text}); nothing was changed")
    if kind == "FOREIGN KEY":
        return NotFound(f"{op} refused: something it refers to does not exist ({text}); nothing was changed")
    if kind in ("CHECK", "NOT NULL"):
        return IllegalArgument(f"{op} refused: a value is not allowed ({text}); nothing was changed")
    return InternalError(f"the LCD refused {op}: {text}")


class Replication(Protocol):
    """What a replicator hands back for a change: outbox rows (txid, node, seq, message) and a finish step."""

    @property
    def outbox(self) -> list[tuple[str, str, int, str]]: ...

    def finish(self, committed: bool) -> None: ...


def current_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
