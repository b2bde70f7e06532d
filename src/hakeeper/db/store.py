"""The LCD: hakeeper's configuration database, in SQLite.

One :class:`Lcd` wraps one connection to ``<state dir>/lcd.sqlite`` (WAL mode,
``synchronous=FULL``, foreign keys on). Every public method that changes
something is one ``BEGIN IMMEDIATE`` transaction that also appends a row to the
change log, so a crash at any moment leaves the state before or after the
change, never half of it, and every committed change has a sequence number.

Methods check their arguments and raise :mod:`hakeeper.errors` exceptions with
a message that names the offending value; nothing is written when they raise.
The checks against the LCD's contents (does the tag exist, would the dependency
close a cycle, is the priority free) run inside the change's transaction
(:func:`_write`): no other writer commits between a check and the write it
allows, so changes made at the same time by several processes give the result
of making them one after the other. A constraint SQLite enforces all the same
gives the error and exit code of the check it backs (:func:`constraint_error`).
The method names follow LifeKeeper's LCDI commands, and the change log records
each change as ``(op, args)`` where ``op`` is the method name and ``args`` its
keyword arguments, so :meth:`Lcd.replay` can apply a change again elsewhere.
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

from hakeeper.db import files, graph
from hakeeper.db.model import (
    Change,
    CommPath,
    Dependency,
    Equivalency,
    Node,
    Resource,
    ResourceType,
    check_flag,
    check_id,
    check_interval,
    check_name,
    check_priority,
    check_reason,
    check_tag,
    dump_info,
)
from hakeeper.db.schema import MIGRATIONS, SCHEMA_VERSION, statements
from hakeeper.db.settings import SETTINGS, check_rules, defaults
from hakeeper.db.states import EqvKind, Init, State, Switchback
from hakeeper.errors import (
    AlreadyExists,
    DeleteRefused,
    HakeeperError,
    IllegalArgument,
    InternalError,
    NotFound,
    OutOfRange,
    SchemaError,
    StateDirError,
    SystemCallFailed,
)
from hakeeper.layout import LCD_NAME, ensure_state_dir, state_root

if TYPE_CHECKING:
    from ipaddress import IPv4Address, IPv6Address

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 10_000
MEASURED = "measured:"  # meta keys of this node's measurements (measured:KIND:TAG), not settings
KITS_KEY = "registered_kits"  # meta key: the kits whose application and type register_kits created (JSON list)

E = TypeVar("E", bound=enum.Enum)
P = ParamSpec("P")
R = TypeVar("R")

_RESOURCE_COLUMNS = "tag, id, app, type, info, state, reason, init, switchback, check_interval, local_recover"


def default_node_name() -> str:
    """This node's name when the LCD is first created: ``$HAKEEPER_NODE`` or the short host name."""
    chosen = os.environ.get("HAKEEPER_NODE")
    if chosen is None:
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


def _write(method: Callable[Concatenate[Lcd, P], R]) -> Callable[Concatenate[Lcd, P], R]:
    """Make a method that changes the LCD one write transaction, its checks included (:meth:`Lcd._transaction`)."""

    @functools.wraps(method)
    def transactional(self: Lcd, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._transaction(lambda: method(self, *args, **kwargs))

    return transactional


class Lcd:
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
        self.actor = actor if actor is not None else _current_user()
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
    ) -> Lcd:
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

    def __enter__(self) -> Lcd:
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
    def snapshot(self) -> Iterator[Lcd]:
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

    # ------------------------------------------------------------------ nodes

    def nodes(self) -> list[Node]:
        return [Node(name, bool(local)) for name, local in self._query("SELECT name, local FROM nodes ORDER BY name")]

    @_write
    def create_node(self, name: str) -> None:
        check_name(name, "node name")
        if self._exists("SELECT 1 FROM nodes WHERE name = ?", (name,)):
            raise AlreadyExists(f"node {name!r} exists already")
        with self._change("create_node", {"name": name}) as db:
            db.execute("INSERT INTO nodes (name) VALUES (?)", (name,))

    @_write
    def remove_node(self, name: str) -> None:
        self._require_node(name)
        if name == self._local:
            raise DeleteRefused(f"node {name!r} is this node and cannot be removed from its own LCD")
        if self.paths(name):
            raise DeleteRefused(f"node {name!r} still has communication paths (see: net_remove)")
        users = self._query("SELECT tag FROM equivalencies WHERE node = ? ORDER BY tag LIMIT 3", (name,))
        if users:
            raise DeleteRefused(
                f"node {name!r} is still an equivalent of {', '.join(u[0] for u in users)} (see: eqv_remove)"
            )
        with self._change("remove_node", {"name": name}) as db:
            db.execute("DELETE FROM nodes WHERE name = ?", (name,))

    def _require_node(self, name: str) -> None:
        if not self._exists("SELECT 1 FROM nodes WHERE name = ?", (name,)):
            raise NotFound(f"no node named {name!r} (see: sys_list)")

    # ------------------------------------------------------------------ applications and types

    def apps(self) -> list[str]:
        return [row[0] for row in self._query("SELECT name FROM apps ORDER BY name")]

    @_write
    def create_app(self, app: str) -> None:
        check_name(app, "application")
        if self._exists("SELECT 1 FROM apps WHERE name = ?", (app,)):
            raise AlreadyExists(f"application {app!r} exists already")
        with self._change("create_app", {"app": app}) as db:
            db.execute("INSERT INTO apps (name) VALUES (?)", (app,))

    @_write
    def remove_app(self, app: str) -> None:
        if not self._exists("SELECT 1 FROM apps WHERE name = ?", (app,)):
            raise NotFound(f"no application named {app!r} (see: app_list)")
        types = self._query("SELECT name FROM types WHERE app = ? ORDER BY name LIMIT 3", (app,))
        if types:
            raise DeleteRefused(
                f"application {app!r} still has resource types ({', '.join(t[0] for t in types)}) (see: typ_remove)"
            )
        with self._change("remove_app", {"app": app}) as db:
            db.execute("DELETE FROM apps WHERE name = ?", (app,))

    def types(self, app: str | None = None) -> list[ResourceType]:
        if app is None:
            rows = self._query("SELECT app, name FROM types ORDER BY app, name")
        else:
            rows = self._query("SELECT app, name FROM types WHERE app = ? ORDER BY name", (app,))
        return [ResourceType(a, t) for a, t in rows]

    @_write
    def create_type(self, app: str, type: str) -> None:
        check_name(type, "resource type")
        if not self._exists("SELECT 1 FROM apps WHERE name = ?", (app,)):
            raise NotFound(f"no application named {app!r} (see: app_create -a {app})")
        if self._exists("SELECT 1 FROM types WHERE app = ? AND name = ?", (app, type)):
            raise AlreadyExists(f"resource type {app}/{type} exists already")
        with self._change("create_type", {"app": app, "type": type}) as db:
            db.execute("INSERT INTO types (app, name) VALUES (?, ?)", (app, type))

    @_write
    def remove_type(self, app: str, type: str) -> list[str]:
        """Remove a resource type with all its instances, their dependents, dependencies and equivalencies.

        Returns the removed tags, parents first.
        """
        self._require_type(app, type)
        tags = [row[0] for row in self._query("SELECT tag FROM resources WHERE app = ? AND type = ?", (app, type))]
        doomed = self.removal_order(tags)
        with self._change("remove_type", {"app": app, "type": type}) as db:
            self._delete_resources(db, doomed)
            db.execute("DELETE FROM types WHERE app = ? AND name = ?", (app, type))
        return doomed

    def _require_type(self, app: str, type: str) -> None:
        if not self._exists("SELECT 1 FROM types WHERE app = ? AND name = ?", (app, type)):
            raise NotFound(f"no resource type {app!r}/{type!r} (see: typ_list)")

    def registered_kits(self) -> list[str] | None:
        """The kits (``app/type``) :meth:`register_kits` has registered here; None if it never ran."""
        rows = self._query("SELECT value FROM meta WHERE key = ?", (KITS_KEY,))
        return [str(k) for k in json.loads(rows[0][0])] if rows else None

    def register_kits(self, kits: Iterable[str]) -> list[str]:
        """Create the application and resource type of each kit ``app/type`` not registered before.

        What a kit's installation does in LifeKeeper. Each kit is registered once:
        a type the administrator removes later (``typ_remove``) stays removed. One
        change, and none when nothing is new; returns the kits newly registered.
        """
        wanted = sorted(set(kits))
        for kit in wanted:
            app, sep, type = kit.partition("/")
            if not sep:
                raise IllegalArgument(f"kit {kit!r} is not APP/TYPE")
            check_name(app, "application")
            check_name(type, "resource type")
        registered = self.registered_kits()
        if not wanted or (registered is not None and set(wanted) <= set(registered)):
            return []  # nothing new: no write lock taken (listings run it, on a read-only LCD too)
        try:
            return self._register_new(wanted)
        except _Unchanged:
            return []

    @_write
    def _register_new(self, wanted: list[str]) -> list[str]:
        """:meth:`register_kits`'s writes: the kits of ``wanted`` not registered yet, decided in the transaction."""
        args: dict[str, Any] = {"kits": []}
        with self._change("register_kits", args) as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (KITS_KEY,)).fetchone()
            known = set(json.loads(row[0])) if row else set()
            new = [k for k in wanted if k not in known]
            if not new and row is not None:
                raise _Unchanged
            for kit in new:
                app, _, type = kit.partition("/")
                db.execute("INSERT OR IGNORE INTO apps (name) VALUES (?)", (app,))
                db.execute("INSERT OR IGNORE INTO types (app, name) VALUES (?, ?)", (app, type))
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (KITS_KEY, json.dumps(sorted(known | set(new)))),
            )
            args["kits"] = new  # decided inside the transaction; the change log records it after this block
        return new

    # ------------------------------------------------------------------ resources

    @_write
    def create_resource(
        self,
        tag: str,
        id: str,
        app: str,
        type: str,
        *,
        info: Any = "",
        init: Init = Init.AUTORES_ISP,
        switchback: Switchback = Switchback.INTELLIGENT,
        check_interval: int = 120,
        local_recover: bool = True,
        ensure_type: bool = False,
    ) -> Resource:
        """Create a resource instance, out of service (OSU), with this node as its only equivalent.

        ``ensure_type`` creates the application and resource type too when they
        do not exist (kits do this), in the same transaction.
        """
        resource, args = self._new_resource(
            tag,
            id,
            app,
            type,
            info=info,
            init=init,
            switchback=switchback,
            check_interval=check_interval,
            local_recover=local_recover,
            ensure_type=ensure_type,
        )
        if ensure_type:
            args["ensure_type"] = True
        with self._change("create_resource", args) as db:
            _insert_resource(db, resource, ensure_type)
        return resource

    def _new_resource(
        self,
        tag: str,
        id: str,
        app: str,
        type: str,
        *,
        info: Any,
        init: Init,
        switchback: Switchback,
        check_interval: int,
        local_recover: bool,
        ensure_type: bool,
    ) -> tuple[Resource, dict[str, Any]]:
        """Check a new resource against the rules and the LCD: the record, and its change-log arguments."""
        check_tag(tag)
        check_id(id)
        check_interval_value = check_interval_seconds(check_interval)
        info_json = dump_info(info)
        if ensure_type:
            check_name(app, "application")
            check_name(type, "resource type")
        else:
            self._require_type(app, type)
        if self._exists("SELECT 1 FROM resources WHERE tag = ?", (tag,)):
            raise AlreadyExists(f"a resource tagged {tag!r} exists already")
        clash = self._query("SELECT tag FROM resources WHERE id = ?", (id,))
        if clash:
            raise AlreadyExists(f"id {id!r} is already used by resource {clash[0][0]!r}")
        resource = Resource(
            tag=tag,
            id=id,
            app=app,
            type=type,
            info=json.loads(info_json),
            state=State.OSU,
            reason="created",
            init=Init(init),
            switchback=Switchback(switchback),
            check_interval=check_interval_value,
            local_recover=bool(local_recover),
        )
        args = {
            "tag": tag,
            "id": id,
            "app": app,
            "type": type,
            "info": resource.info,
            "init": resource.init.name,
            "switchback": resource.switchback.name,
            "check_interval": check_interval_value,
            "local_recover": resource.local_recover,
        }
        return resource, args

    @_write
    def create_resources(
        self, resources: Sequence[Mapping[str, Any]], dependencies: Iterable[Sequence[str]] = ()
    ) -> list[Resource]:
        """Create several resources, OSU, and dependencies among them in one transaction: all or none.

        Each mapping holds :meth:`create_resource`'s arguments (``init`` and
        ``switchback`` by name, as the change log has them); applications and
        types are created as needed. A dependency's child may also be a resource
        that exists already. This is how a node takes in a hierarchy extended to it.
        """
        made: list[Resource] = []
        records: list[dict[str, Any]] = []
        for spec in resources:
            fields = _resource_spec(spec)
            resource, args = self._new_resource(**fields, ensure_type=True)
            if any(r.tag == resource.tag for r in made):
                raise AlreadyExists(f"resource {resource.tag!r} is given twice")
            if any(r.id == resource.id for r in made):
                raise AlreadyExists(f"id {resource.id!r} is given twice")
            made.append(resource)
            records.append(args)
        if not made:
            raise IllegalArgument("no resource to create")
        new = {r.tag for r in made}
        edges = self.edges()
        pairs: list[list[str]] = []
        for pair in dependencies:
            if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise IllegalArgument(f"dependency {pair!r} is not a pair of tags")
            parent, child = pair
            for tag in (parent, child):
                if tag not in new:
                    self.resource(tag)
            if (parent, child) in edges:
                raise AlreadyExists(f"{parent!r} already depends on {child!r}")
            if graph.creates_cycle(edges, parent, child):
                raise IllegalArgument(f"{parent!r} -> {child!r} would make a dependency cycle")
            edges.append((parent, child))
            pairs.append([parent, child])
        with self._change("create_resources", {"resources": records, "dependencies": pairs}) as db:
            for resource in made:
                _insert_resource(db, resource, ensure_type=True)
            db.executemany("INSERT INTO dependencies (parent, child) VALUES (?, ?)", pairs)
        return made

    def resource(self, tag: str) -> Resource:
        rows = self._query(f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE tag = ?", (tag,))
        if not rows:
            raise NotFound(f"no resource tagged {tag!r} (see: ins_list)")
        return _resource(rows[0])

    def resources(
        self,
        *,
        app: str | None = None,
        type: str | None = None,
        tag: str | None = None,
        id: str | None = None,
    ) -> list[Resource]:
        """Resources matching every filter given, sorted by tag."""
        where = []
        params: list[str] = []
        for column, value in (("app", app), ("type", type), ("tag", tag), ("id", id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(f"SELECT {_RESOURCE_COLUMNS} FROM resources{clause} ORDER BY tag", params)
        return [_resource(row) for row in rows]

    def summaries(self) -> list[tuple[str, str, State, str]]:
        """``(tag, id, state, reason)`` of every resource, by tag: what status displays need, read cheaply."""
        codes = {s.value: s for s in State}
        rows = self._query("SELECT tag, id, state, reason FROM resources ORDER BY tag")
        return [(tag, rid, codes[state], reason) for tag, rid, state, reason in rows]

    def tag_of(self, id: str) -> str:
        rows = self._query("SELECT tag FROM resources WHERE id = ?", (id,))
        if not rows:
            raise NotFound(f"no resource with id {id!r} (see: ins_list)")
        return str(rows[0][0])

    def removal_order(self, tags: Iterable[str]) -> list[str]:
        """``tags`` and everything that depends on them, in the order to remove them (parents first)."""
        wanted = list(tags)
        for tag in wanted:
            self.resource(tag)
        edges = self.edges()
        parents = graph.parents_of(edges)
        doomed = set(wanted)
        for tag in wanted:
            doomed |= graph.reachable(parents, tag)
        return graph.remove_order(edges, doomed)

    @_write
    def remove_resources(
        self, tags: Iterable[str], *, rooted: bool = False, check: Callable[[list[str]], None] | None = None
    ) -> list[str]:
        """Remove ``tags`` and all their direct and indirect dependents, with their dependencies and equivalencies.

        ``rooted``: the hierarchies rooted at ``tags`` (:func:`graph.rooted_at`:
        children that another resource still needs stay). ``check`` is called
        with what would be removed, parents first, inside the transaction, and
        may refuse by raising (``ins_remove`` makes sure that nothing with a
        delete action it has not run is removed). Returns the removed tags,
        parents first. All or nothing, one change; the change log records every
        tag removed.
        """
        wanted = sorted(set(tags))
        if not wanted:
            raise IllegalArgument("no resource to remove")
        for tag in wanted:
            self.resource(tag)
        doomed = self.removal_order(graph.rooted_at(self.edges(), wanted) if rooted else wanted)
        if check is not None:
            check(doomed)
        with self._change("remove_resources", {"tags": sorted(doomed)}) as db:
            self._delete_resources(db, doomed)
        return doomed

    @staticmethod
    def _delete_resources(db: sqlite3.Connection, tags: list[str]) -> None:
        for tag in tags:
            db.execute("DELETE FROM dependencies WHERE parent = ? OR child = ?", (tag, tag))
            db.execute("DELETE FROM equivalencies WHERE tag = ?", (tag,))
            db.execute("DELETE FROM resources WHERE tag = ?", (tag,))
            # its measurements (measured:KIND:TAG; neither kinds nor tags hold ':')
            db.execute(
                "DELETE FROM meta WHERE substr(key, 1, ?) = ? AND substr(key, -?) = ?",
                (len(MEASURED), MEASURED, len(tag) + 1, f":{tag}"),
            )

    @_write
    def set_state(self, tag: str, state: State, reason: str = "") -> State:
        """Record a new state for ``tag`` with its reason; returns the previous state.

        This is the one place a state changes; it logs ``tag OLD -> NEW (reason)``.
        """
        check_reason(reason)
        new = State(state)
        old = self.resource(tag).state
        with self._change("set_state", {"tag": tag, "state": new.name, "reason": reason}) as db:
            db.execute("UPDATE resources SET state = ?, reason = ? WHERE tag = ?", (int(new), reason, tag))
        self._when_committed(
            lambda: logger.info("%s %s -> %s (%s)", tag, old.name, new.name, reason or "no reason given")
        )
        return old

    def set_states(self, changes: Sequence[tuple[str, State, str]]) -> list[State | HakeeperError]:
        """Several :meth:`set_state` in one write transaction, at the cost of fewer statements (group commit).

        Each is a change of its own — its checks, its change-log record, its
        log line — in the order given; one that fails its checks (an unknown
        tag, a bad reason) is refused alone before it writes anything, and its
        error is returned in place of its previous state.
        """

        def each() -> list[State | HakeeperError]:
            tags = sorted({tag for tag, _state, _reason in changes})
            marks = ", ".join("?" * len(tags))
            now = {
                str(t): State(v)
                for t, v in self._query(f"SELECT tag, state FROM resources WHERE tag IN ({marks})", tags)
            }
            results: list[State | HakeeperError] = []
            for tag, state, reason in changes:
                try:
                    check_reason(reason)
                    if tag not in now:
                        raise NotFound(f"no resource tagged {tag!r} (see: ins_list)")
                except HakeeperError as exc:
                    results.append(exc)
                    continue
                old, new = now[tag], State(state)
                with self._change("set_state", {"tag": tag, "state": new.name, "reason": reason}) as db:
                    db.execute("UPDATE resources SET state = ?, reason = ? WHERE tag = ?", (int(new), reason, tag))
                self._when_committed(functools.partial(_log_state, tag, old, new, reason))
                now[tag] = new
                results.append(old)
            return results

        return self._transaction(each)

    @_write
    def set_info(self, tag: str, info: Any) -> None:
        info_json = dump_info(info)
        self.resource(tag)
        with self._change("set_info", {"tag": tag, "info": json.loads(info_json)}) as db:
            db.execute("UPDATE resources SET info = ? WHERE tag = ?", (info_json, tag))

    @_write
    def set_switchback(self, tag: str, switchback: Switchback) -> None:
        value = Switchback(switchback)
        self.resource(tag)
        with self._change("set_switchback", {"tag": tag, "switchback": value.name}) as db:
            db.execute("UPDATE resources SET switchback = ? WHERE tag = ?", (int(value), tag))

    @_write
    def set_init(self, tag: str, init: Init) -> None:
        value = Init(init)
        self.resource(tag)
        with self._change("set_init", {"tag": tag, "init": value.name}) as db:
            db.execute("UPDATE resources SET init = ? WHERE tag = ?", (int(value), tag))

    @_write
    def set_check_interval(self, tag: str, seconds: int) -> None:
        value = check_interval_seconds(seconds)
        self.resource(tag)
        with self._change("set_check_interval", {"tag": tag, "seconds": value}) as db:
            db.execute("UPDATE resources SET check_interval = ? WHERE tag = ?", (value, tag))

    @_write
    def set_local_recover(self, tag: str, enabled: bool) -> None:
        self.resource(tag)
        with self._change("set_local_recover", {"tag": tag, "enabled": bool(enabled)}) as db:
            db.execute("UPDATE resources SET local_recover = ? WHERE tag = ?", (int(bool(enabled)), tag))

    # ------------------------------------------------------------------ dependencies

    def edges(self) -> list[graph.Edge]:
        return [(p, c) for p, c in self._query("SELECT parent, child FROM dependencies")]

    def dependencies(self) -> list[Dependency]:
        rows = self._query("SELECT parent, child FROM dependencies ORDER BY parent, child")
        return [Dependency(p, c) for p, c in rows]

    @_write
    def create_dependency(self, parent: str, child: str) -> None:
        """Make ``parent`` depend on ``child``; refused if it would close a cycle."""
        self.resource(parent)
        self.resource(child)
        if self._exists("SELECT 1 FROM dependencies WHERE parent = ? AND child = ?", (parent, child)):
            raise AlreadyExists(f"{parent!r} already depends on {child!r}")
        if parent == child:
            raise IllegalArgument(f"{parent!r} cannot depend on itself")
        if self._reaches(child, parent):
            raise IllegalArgument(f"{child!r} already depends on {parent!r}: the dependency would make a cycle")
        with self._change("create_dependency", {"parent": parent, "child": child}) as db:
            db.execute("INSERT INTO dependencies (parent, child) VALUES (?, ?)", (parent, child))

    def _reaches(self, start: str, goal: str) -> bool:
        """Whether ``goal`` is ``start`` or below it, following only ``start``'s own dependencies."""
        rows = self._query(
            "WITH RECURSIVE below(tag) AS (SELECT ? UNION SELECT d.child FROM dependencies d "
            "JOIN below ON d.parent = below.tag) SELECT 1 FROM below WHERE tag = ? LIMIT 1",
            (start, goal),
        )
        return bool(rows)

    @_write
    def remove_dependency(self, parent: str | None = None, child: str | None = None) -> list[Dependency]:
        """Remove one dependency (both given) or every dependency of a parent or of a child.

        Returns the removed dependencies; refuses when none matches.
        """
        if parent is None and child is None:
            raise IllegalArgument("name a parent, a child or both")
        where = []
        params = []
        for column, value in (("parent", parent), ("child", child)):
            if value is not None:
                self.resource(value)
                where.append(f"{column} = ?")
                params.append(value)
        clause = " AND ".join(where)
        rows = self._query(f"SELECT parent, child FROM dependencies WHERE {clause} ORDER BY parent, child", params)
        if not rows:
            described = " -> ".join(v for v in (parent, child) if v is not None)
            raise NotFound(f"no dependency {described} (see: dep_list)")
        with self._change("remove_dependency", {"parent": parent, "child": child}) as db:
            db.execute(f"DELETE FROM dependencies WHERE {clause}", params)
        return [Dependency(p, c) for p, c in rows]

    # ------------------------------------------------------------------ equivalencies

    def equivalencies(self, *, tag: str | None = None, node: str | None = None) -> list[Equivalency]:
        where = []
        params = []
        for column, value in (("tag", tag), ("node", node)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._query(
            f"SELECT tag, node, priority, remote_tag, kind FROM equivalencies{clause} ORDER BY tag, priority", params
        )
        return [Equivalency(t, n, p, r, EqvKind(k)) for t, n, p, r, k in rows]

    def equivalency_rows(self) -> list[tuple[str, str, int, str]]:
        """``(tag, node, priority, remote tag)`` of every equivalency, by tag then priority, read cheaply."""
        rows = self._query("SELECT tag, node, priority, remote_tag FROM equivalencies ORDER BY tag, priority")
        return [(t, n, p, r) for t, n, p, r in rows]

    @_write
    def create_equivalency(
        self,
        tag: str,
        other_node: str,
        *,
        other_tag: str | None = None,
        other_priority: int | None = None,
        node: str | None = None,
        priority: int | None = None,
        others: Mapping[str, Sequence[Any]] | None = None,
    ) -> Equivalency:
        """Declare that ``tag`` can run on ``other_node`` (as ``other_tag``) with ``other_priority``.

        ``node`` (this node by default) gets an entry for ``tag`` too if it has
        none, with ``priority`` (1 by default, as LifeKeeper gives the creating
        server). A priority left out is the next free one. Priorities are
        unique per resource. The change log records the resource's other entries
        (``others``: node -> [remote tag, priority]), so that where it is replayed,
        on ``other_node`` above all, the same entries result: it learns them all.
        """
        this = node if node is not None else self._local
        remote_tag = check_tag(other_tag, "other tag") if other_tag is not None else tag
        self.resource(tag)
        self._require_node(this)
        self._require_node(other_node)
        if this == other_node:
            raise IllegalArgument(f"a resource cannot be equivalent to itself on the same node {this!r}")
        for value in (priority, other_priority):
            if value is not None:
                check_priority(value)
        current = {e.node: e for e in self.equivalencies(tag=tag)}
        if other_node in current:
            raise AlreadyExists(
                f"{tag!r} is already equivalent on {other_node!r} (priority {current[other_node].priority})"
            )
        inserts: list[tuple[str, str, int]] = []
        if others is None:  # made here: the entries there are, besides the two nodes of the change
            others = {n: [e.remote_tag, e.priority] for n, e in current.items() if n not in (this, other_node)}
        else:  # replayed: learn the entries this node lacks; those it has must agree
            for name, (their_tag, their_priority) in sorted(others.items()):
                known = current.get(name)
                if known is None:
                    self._require_node(name)
                    inserts.append((name, str(their_tag), int(their_priority)))
                    current[name] = Equivalency(tag, name, int(their_priority), str(their_tag))
                elif (known.remote_tag, known.priority) != (their_tag, their_priority):
                    raise IllegalArgument(f"{tag!r}'s equivalency on {name} differs between {self._local} and {this}")
        taken = {e.priority for e in current.values()}
        if this in current:
            if priority is not None and priority != current[this].priority:
                raise IllegalArgument(
                    f"{tag!r} already has priority {current[this].priority} on {this!r}; remove the equivalency first"
                )
        else:
            mine = priority if priority is not None else _lowest_free(taken)
            if mine in taken:
                raise AlreadyExists(f"priority {mine} is already used by {tag!r} on another node")
            taken.add(mine)
            inserts.append((this, tag, mine))
        theirs = other_priority if other_priority is not None else _lowest_free(taken)
        if theirs in taken:
            raise AlreadyExists(f"priority {theirs} is already used by {tag!r} on another node")
        inserts.append((other_node, remote_tag, theirs))
        args = {
            "tag": tag,
            "other_node": other_node,
            "other_tag": remote_tag,
            "other_priority": theirs,
            "node": this,
            "priority": next(p for n, _t, p in inserts if n == this) if this not in current else current[this].priority,
            "others": {n: list(v) for n, v in sorted(others.items())},
        }
        with self._change("create_equivalency", args) as db:
            db.executemany(
                "INSERT INTO equivalencies (tag, node, remote_tag, priority, kind) VALUES (?, ?, ?, ?, ?)",
                [(tag, n, r, p, int(EqvKind.SHARED)) for n, r, p in inserts],
            )
        return Equivalency(tag, other_node, theirs, remote_tag)

    @_write
    def remove_equivalency(
        self, tag: str, other_node: str, *, node: str | None = None, other_tag: str | None = None
    ) -> None:
        """Remove ``tag``'s equivalency on ``other_node``; ``node``'s own entry goes too when it is the last one.

        ``other_tag``: refused unless ``tag`` is that tag on ``other_node``.
        """
        this = node if node is not None else self._local
        self.resource(tag)
        current = {e.node: e for e in self.equivalencies(tag=tag)}
        if other_node not in current or this not in current or this == other_node:
            raise NotFound(f"{tag!r} has no equivalency between {this!r} and {other_node!r} (see: eqv_list)")
        if other_tag is not None and current[other_node].remote_tag != other_tag:
            raise NotFound(f"{tag!r} is not equivalent to {other_tag!r} on {other_node!r} (see: eqv_list)")
        args = {"tag": tag, "other_node": other_node, "node": this}
        if other_tag is not None:
            args["other_tag"] = other_tag
        with self._change("remove_equivalency", args) as db:
            db.execute("DELETE FROM equivalencies WHERE tag = ? AND node = ?", (tag, other_node))
            if set(current) == {this, other_node}:
                db.execute("DELETE FROM equivalencies WHERE tag = ? AND node = ?", (tag, this))

    @_write
    def create_equivalencies(
        self,
        tags: Iterable[str],
        other_node: str,
        *,
        other_priority: int | None = None,
        node: str | None = None,
        rows: Mapping[str, Mapping[str, int]] | None = None,
    ) -> int:
        """Declare that every resource of ``tags`` can run on ``other_node``, under its own tag, in one transaction.

        This is ``extend``'s equivalency: one priority on ``other_node`` for the
        whole hierarchy (the lowest that none of them uses, unless given). A
        resource without an entry for ``node`` (this node by default) gets one with
        the lowest free priority, as :meth:`create_equivalency` gives. The change
        log records every resource's other entries (``rows``: tag -> node ->
        priority), so that where it is replayed, the new node learns all of them
        and the others check they agree. All or none; returns ``other_node``'s priority.
        """
        this = node if node is not None else self._local
        wanted = list(dict.fromkeys(tags))
        if not wanted:
            raise IllegalArgument("no resource to make equivalent")
        self._require_node(this)
        self._require_node(other_node)
        if this == other_node:
            raise IllegalArgument(f"a resource cannot be equivalent to itself on the same node {this!r}")
        current: dict[str, dict[str, int]] = {}
        for tag in wanted:
            self.resource(tag)
            current[tag] = {e.node: e.priority for e in self.equivalencies(tag=tag)}
            if other_node in current[tag]:
                there = current[tag][other_node]
                raise AlreadyExists(f"{tag!r} is already equivalent on {other_node!r} (priority {there})")
        if rows is None:  # here, where the change is made: the entries there are, and this node's
            final = {tag: dict(current[tag]) for tag in wanted}
            for entries in final.values():
                if this not in entries:
                    entries[this] = _lowest_free(set(entries.values()))
        else:  # replayed: the same entries as the node where it was made, besides those this node lacks
            final = {tag: _priorities(rows.get(tag), tag) for tag in wanted}
            for tag in wanted:
                for name in final[tag]:
                    self._require_node(name)
                if this not in final[tag] or any(final[tag].get(n) != p for n, p in current[tag].items()):
                    raise IllegalArgument(f"{tag!r}'s equivalencies on {self._local} differ from those on {this}")
        used = {tag: {p: n for n, p in entries.items()} for tag, entries in final.items()}
        if any(len(by_priority) != len(final[tag]) for tag, by_priority in used.items()):
            raise IllegalArgument("two nodes of one resource cannot share a priority")
        theirs = (
            check_priority(other_priority)
            if other_priority is not None
            else _lowest_free({p for by_priority in used.values() for p in by_priority})
        )
        for tag in wanted:
            if theirs in used[tag]:
                raise AlreadyExists(f"priority {theirs} is already used by {tag!r} on {used[tag][theirs]!r}")
        inserts = [(tag, n, p) for tag in wanted for n, p in sorted(final[tag].items()) if n not in current[tag]]
        inserts += [(tag, other_node, theirs) for tag in wanted]
        args = {"tags": wanted, "other_node": other_node, "other_priority": theirs, "node": this, "rows": final}
        with self._change("create_equivalencies", args) as db:
            db.executemany(
                "INSERT INTO equivalencies (tag, node, remote_tag, priority, kind) VALUES (?, ?, ?, ?, ?)",
                [(tag, n, tag, p, int(EqvKind.SHARED)) for tag, n, p in inserts],
            )
        return theirs

    @_write
    def remove_equivalencies(self, tags: Iterable[str], other_node: str, *, node: str | None = None) -> None:
        """:meth:`remove_equivalency` of every resource of ``tags`` on ``other_node``, in one transaction."""
        this = node if node is not None else self._local
        wanted = list(dict.fromkeys(tags))
        if not wanted:
            raise IllegalArgument("no resource to remove the equivalency of")
        doomed: list[tuple[str, str]] = []
        for tag in wanted:
            self.resource(tag)
            current = {e.node for e in self.equivalencies(tag=tag)}
            if other_node not in current or this not in current or this == other_node:
                raise NotFound(f"{tag!r} has no equivalency between {this!r} and {other_node!r} (see: eqv_list)")
            doomed.append((tag, other_node))
            if current == {this, other_node}:
                doomed.append((tag, this))
        with self._change("remove_equivalencies", {"tags": wanted, "other_node": other_node, "node": this}) as db:
            db.executemany("DELETE FROM equivalencies WHERE tag = ? AND node = ?", doomed)

    # ------------------------------------------------------------------ flags

    def flags(self) -> list[str]:
        return [row[0] for row in self._query("SELECT name FROM flags ORDER BY name")]

    def has_flag(self, flag: str) -> bool:
        check_flag(flag)
        return self._exists("SELECT 1 FROM flags WHERE name = ?", (flag,))

    @_write
    def create_flag(self, flag: str) -> None:
        if self.has_flag(flag):
            raise AlreadyExists(f"flag {flag!r} exists already")
        with self._change("create_flag", {"flag": flag}) as db:
            db.execute("INSERT INTO flags (name) VALUES (?)", (flag,))

    @_write
    def remove_flag(self, flag: str) -> None:
        if not self.has_flag(flag):
            raise NotFound(f"no flag {flag!r} (see: flg_list)")
        with self._change("remove_flag", {"flag": flag}) as db:
            db.execute("DELETE FROM flags WHERE name = ?", (flag,))

    # ------------------------------------------------------------------ settings and the change log

    def settings(self) -> dict[str, Any]:
        """Every cluster-wide setting, typed, with defaults for those never set."""
        values = defaults()
        for key, text in self._query("SELECT key, value FROM meta"):
            if key in SETTINGS:
                setting = SETTINGS[key]
                values[key] = text if setting.choices else setting.kind(text)
        return values

    @_write
    def set_settings(self, assignments: dict[str, str]) -> dict[str, Any]:
        """Change settings together, after checking each one's bounds and the timing rules; all or nothing."""
        if not assignments:
            raise IllegalArgument("no setting to change")
        values = self.settings()
        for name, text in assignments.items():
            setting = SETTINGS.get(name)
            if setting is None:
                raise NotFound(f"no setting {name!r} (see: hakeeper settings)")
            values[name] = setting.parse(text)
        check_rules(values)
        with self._change("set_settings", {"assignments": dict(assignments)}) as db:
            db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(name, str(values[name])) for name in assignments],
            )
        return values

    def record_measurements(self, kind: str, seconds: Mapping[str, float]) -> None:
        """Note how long ``kind`` (``remove``, ``cut``) last took here, per tag: bookkeeping, not configuration.

        Kept in ``meta`` under ``measured:KIND:TAG`` (no schema change; :meth:`settings`
        reads only the settings' keys). Like :meth:`delivered`, it is not a change:
        no change-log record, never replicated (each node measures its own).
        """
        rows = [(f"{MEASURED}{kind}:{tag}", f"{float(value):.6f}") for tag, value in seconds.items()]
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", rows)
            self._conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise SystemCallFailed(f"the LCD {self.path} failed to note a measurement: {exc}") from None

    def measurements(self, kind: str) -> dict[str, float]:
        """What :meth:`record_measurements` last noted for ``kind``: tag -> seconds."""
        prefix = f"{MEASURED}{kind}:"
        rows = self._query("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?", (len(prefix), prefix))
        return {str(key)[len(prefix) :]: float(value) for key, value in rows}

    @property
    def shutdown_strategy(self) -> str:
        return str(self.settings()["shutdown_strategy"])

    # ------------------------------------------------------------------ communication paths

    def paths(self, node: str | None = None) -> list[CommPath]:
        """Communication paths to other nodes, by node then priority."""
        clause, params = (" WHERE node = ?", (node,)) if node is not None else ("", ())
        rows = self._query(
            f"SELECT node, kind, local_addr, remote_addr, priority FROM comm_paths{clause} ORDER BY node, priority",
            params,
        )
        return [CommPath(*row) for row in rows]

    @_write
    def create_path(self, node: str, local: str, remote: str, priority: int | None = None) -> CommPath:
        """A TCP path to ``node`` from this node's ``local`` address to its ``remote`` address."""
        self._require_node(node)
        local_ip, remote_ip = check_address(local, "local address"), check_address(remote, "remote address")
        current = self.paths(node)
        self._check_path(node, str(local_ip), str(remote_ip), current)
        taken = {p.priority for p in current}
        chosen = priority if priority is not None else next(p for p in range(1, 101) if p not in taken)
        if not 1 <= chosen <= MAX_PATH_PRIORITY:
            raise OutOfRange(f"path priority {chosen} is outside 1..{MAX_PATH_PRIORITY}")
        if chosen in taken:
            raise AlreadyExists(f"priority {chosen} is already used by another path to {node!r}")
        path = CommPath(node, "TCP", str(local_ip), str(remote_ip), chosen)
        args = {"node": node, "local": path.local, "remote": path.remote, "priority": chosen}
        with self._change("create_path", args) as db:
            db.execute(
                "INSERT INTO comm_paths (node, kind, local_addr, remote_addr, priority) VALUES (?, ?, ?, ?, ?)",
                (node, path.kind, path.local, path.remote, chosen),
            )
        return path

    def _check_path(self, node: str, local: str, remote: str, others: list[CommPath]) -> None:
        """A path to ``node`` from ``local`` to ``remote`` (addresses in normal form) may stand beside ``others``."""
        if node == self._local:
            raise IllegalArgument(f"a communication path goes to another node, not to this node {node!r}")
        if _ip(local).version != _ip(remote).version:
            raise IllegalArgument(f"local address {local} and remote address {remote} are not of one IP version")
        if any(p.local == local and p.remote == remote for p in others):
            raise AlreadyExists(f"a path to {node!r} from {local} to {remote} exists already")

    @_write
    def change_path(
        self,
        node: str,
        local: str,
        remote: str,
        *,
        new_node: str | None = None,
        new_local: str | None = None,
        new_remote: str | None = None,
    ) -> CommPath:
        """Change the path to ``node`` from ``local`` to ``remote``: its addresses, or the node it goes to.

        Its priority stays, unless the new node's paths use it already (then the
        lowest free one). Every check runs inside the one write transaction.
        """
        for text, what in ((local, "local address"), (remote, "remote address"), (new_local, "new local address"),
                           (new_remote, "new remote address")):  # fmt: skip
            if text is not None:
                check_address(text, what)
        self._require_node(node)
        old = next((p for p in self.paths(node) if p.local == _normal(local) and p.remote == _normal(remote)), None)
        if old is None:
            raise NotFound(f"no communication path to {node!r} from {local} to {remote} (see: net_list)")
        target = node if new_node is None else new_node
        self._require_node(target)
        there = _normal(new_local) if new_local is not None else old.local
        to = _normal(new_remote) if new_remote is not None else old.remote
        others = [p for p in self.paths(target) if p != old]
        self._check_path(target, there, to, others)
        taken = {p.priority for p in others}
        free = (p for p in range(1, MAX_PATH_PRIORITY + 1) if p not in taken)
        priority = old.priority if old.priority not in taken else next(free, 0)
        if not priority:
            raise OutOfRange(f"{target!r} has no free path priority in 1..{MAX_PATH_PRIORITY}")
        args = {
            "node": node, "local": local, "remote": remote,
            "new_node": new_node, "new_local": new_local, "new_remote": new_remote,
        }  # fmt: skip
        with self._change("change_path", args) as db:
            db.execute(
                "UPDATE comm_paths SET node = ?, local_addr = ?, remote_addr = ?, priority = ? "
                "WHERE node = ? AND local_addr = ? AND remote_addr = ?",
                (target, there, to, priority, old.node, old.local, old.remote),
            )
        return CommPath(target, old.kind, there, to, priority)

    @_write
    def remove_path(self, node: str, local: str | None = None, remote: str | None = None) -> list[CommPath]:
        """Remove the paths to ``node`` that match the addresses given; refuses when none does."""
        self._require_node(node)
        doomed = [
            p
            for p in self.paths(node)
            if (local is None or p.local == _normal(local)) and (remote is None or p.remote == _normal(remote))
        ]
        if not doomed:
            raise NotFound(f"no communication path to {node!r} matches (see: net_list)")
        with self._change("remove_path", {"node": node, "local": local, "remote": remote}) as db:
            db.executemany(
                "DELETE FROM comm_paths WHERE node = ? AND local_addr = ? AND remote_addr = ?",
                [(p.node, p.local, p.remote) for p in doomed],
            )
        return doomed

    def last_seq(self) -> int:
        return int(self._query("SELECT COALESCE(MAX(seq), 0) FROM changes")[0][0])

    def changes(self, since: int = 0) -> list[Change]:
        """Committed changes with a sequence number above ``since``, oldest first."""
        rows = self._query("SELECT seq, time, actor, op, args FROM changes WHERE seq > ? ORDER BY seq", (since,))
        return [Change(seq, t, actor, op, json.loads(args)) for seq, t, actor, op, args in rows]

    def replay(self, op: str, args: dict[str, Any]) -> None:
        """Apply a change as recorded in another LCD's change log."""
        method = _REPLAYABLE.get(op)
        if method is None:
            raise IllegalArgument(f"change {op!r} cannot be replayed")
        method(self, **args)

    def integrity_ok(self) -> bool:
        return bool(self._query("PRAGMA integrity_check")[0][0] == "ok")


MAX_PATH_PRIORITY = 99


def _ip(text: str) -> IPv4Address | IPv6Address:
    import ipaddress  # only the commands that name addresses need it

    return ipaddress.ip_address(text)


def check_address(text: str, what: str) -> IPv4Address | IPv6Address:
    try:
        return _ip(text)
    except ValueError:
        raise IllegalArgument(f"{what} {text!r} is not an IP address") from None


def _normal(text: str) -> str:
    try:
        return str(_ip(text))
    except ValueError:
        return text


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


def check_interval_seconds(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise IllegalArgument(f"quickCheck interval {seconds!r} is not a whole number of seconds")
    return check_interval(seconds)


def _lowest_free(taken: set[int]) -> int:
    priority = 1
    while priority in taken:
        priority += 1
    return check_priority(priority)


# A row's enum values by dictionary: calling the enum class costs a listing of 1,000 resources milliseconds.
_STATES: dict[Any, State] = {s.value: s for s in State}
_INITS: dict[Any, Init] = {i.value: i for i in Init}
_SWITCHBACKS: dict[Any, Switchback] = {s.value: s for s in Switchback}


def _resource(row: tuple[Any, ...]) -> Resource:
    tag, rid, app, rtype, info, state, reason, init, switchback, interval, local_recover = row
    return Resource(
        tag=tag,
        id=rid,
        app=app,
        type=rtype,
        info="" if info == '""' else json.loads(info),
        state=_STATES.get(state) or State(state),
        reason=reason,
        init=_INITS.get(init) or Init(init),
        switchback=_SWITCHBACKS.get(switchback) or Switchback(switchback),
        check_interval=interval,
        local_recover=bool(local_recover),
    )


_SPEC_KEYS = ("tag", "id", "app", "type", "info", "init", "switchback", "check_interval", "local_recover")


def _resource_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of :meth:`Lcd._new_resource` from a resource as JSON (a change log's, another node's)."""
    if not isinstance(spec, Mapping):
        raise IllegalArgument("a resource to create is a JSON object")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise IllegalArgument(f"a resource to create has no field {unknown[0]!r}")
    for key in ("tag", "id", "app", "type"):
        if not isinstance(spec.get(key), str):
            raise IllegalArgument(f"a resource to create needs {key} (a string)")
    local_recover = spec.get("local_recover", True)
    if not isinstance(local_recover, bool):
        raise IllegalArgument(f"local_recover {local_recover!r} is not true or false")
    return {
        "tag": spec["tag"],
        "id": spec["id"],
        "app": spec["app"],
        "type": spec["type"],
        "info": spec.get("info", ""),
        "init": _named(Init, spec.get("init", Init.AUTORES_ISP.name), "initialization"),
        "switchback": _named(Switchback, spec.get("switchback", Switchback.INTELLIGENT.name), "switchback"),
        "check_interval": spec.get("check_interval", 120),
        "local_recover": local_recover,
    }


def _priorities(entries: object, tag: str) -> dict[str, int]:
    """A resource's equivalencies as a change log records them: node -> priority."""
    if not isinstance(entries, Mapping) or not all(
        isinstance(n, str) and isinstance(p, int) and not isinstance(p, bool) for n, p in entries.items()
    ):
        raise IllegalArgument(f"the equivalencies of {tag!r} are not node -> priority")
    return {n: check_priority(p) for n, p in entries.items()}


def _named(kind: type[E], name: object, what: str) -> E:
    if isinstance(name, str) and name in kind.__members__:
        return kind[name]
    raise IllegalArgument(f"{what} {name!r} is not one of {'|'.join(kind.__members__)}")


def _insert_resource(db: sqlite3.Connection, resource: Resource, ensure_type: bool) -> None:
    if ensure_type:
        db.execute("INSERT OR IGNORE INTO apps (name) VALUES (?)", (resource.app,))
        db.execute("INSERT OR IGNORE INTO types (app, name) VALUES (?, ?)", (resource.app, resource.type))
    db.execute(
        f"INSERT INTO resources ({_RESOURCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            resource.tag,
            resource.id,
            resource.app,
            resource.type,
            dump_info(resource.info),
            int(resource.state),
            resource.reason,
            int(resource.init),
            int(resource.switchback),
            resource.check_interval,
            int(resource.local_recover),
        ),
    )


def _log_state(tag: str, old: State, new: State, reason: str) -> None:
    logger.info("%s %s -> %s (%s)", tag, old.name, new.name, reason or "no reason given")


def _current_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _replay_create_resource(lcd: Lcd, **args: Any) -> None:
    args["init"] = Init[args["init"]]
    args["switchback"] = Switchback[args["switchback"]]
    lcd.create_resource(**args)


def _replay_steps(lcd: Lcd, origin: str, steps: list[dict[str, Any]]) -> None:
    from hakeeper.db import bulk  # the change of hakeeper apply, made of steps

    bulk.replay(lcd, origin, steps)


def _replay_set_state(lcd: Lcd, tag: str, state: str, reason: str) -> None:
    lcd.set_state(tag, State[state], reason)


_REPLAYABLE: dict[str, Callable[..., Any]] = {
    "create_node": Lcd.create_node,
    "remove_node": Lcd.remove_node,
    "create_app": Lcd.create_app,
    "remove_app": Lcd.remove_app,
    "create_type": Lcd.create_type,
    "register_kits": Lcd.register_kits,
    "remove_type": Lcd.remove_type,
    "create_resource": _replay_create_resource,
    "create_resources": Lcd.create_resources,
    "remove_resources": Lcd.remove_resources,
    "set_state": _replay_set_state,
    "set_info": Lcd.set_info,
    "set_switchback": lambda lcd, tag, switchback: lcd.set_switchback(tag, Switchback[switchback]),
    "set_init": lambda lcd, tag, init: lcd.set_init(tag, Init[init]),
    "set_check_interval": Lcd.set_check_interval,
    "set_local_recover": Lcd.set_local_recover,
    "create_dependency": Lcd.create_dependency,
    "remove_dependency": Lcd.remove_dependency,
    "create_equivalency": Lcd.create_equivalency,
    "remove_equivalency": Lcd.remove_equivalency,
    "create_equivalencies": Lcd.create_equivalencies,
    "remove_equivalencies": Lcd.remove_equivalencies,
    "create_flag": Lcd.create_flag,
    "set_settings": Lcd.set_settings,
    "create_path": Lcd.create_path,
    "change_path": Lcd.change_path,
    "remove_path": Lcd.remove_path,
    "remove_flag": Lcd.remove_flag,
    "apply": _replay_steps,
}
