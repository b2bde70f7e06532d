"""The LCD's nodes, applications and types, flags, settings and communication paths (the middle of
:class:`hakeeper.db.store.Lcd`, whose resources they describe)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hakeeper.db.journal import Journal, _Unchanged, _write
from hakeeper.db.members import pair, parse_announced
from hakeeper.db.model import CommPath, Node, ResourceType, check_flag, check_name
from hakeeper.db.rows import MAX_PATH_PRIORITY, MEASURED, check_address, delete_resources, ip_of, normal_address
from hakeeper.db.settings import SETTINGS, check_rules, defaults
from hakeeper.errors import AlreadyExists, DeleteRefused, IllegalArgument, NotFound, OutOfRange, SystemCallFailed

ROLE = "role:"  # meta key prefix: a node's role as its registration told it (role:node3 = witness)
WITNESS = "witness"  # the role, and the flag a witness has in its own LCD (flg_create -f witness)
KITS_KEY = "registered_kits"  # meta key: the kits whose application and type register_kits created (JSON list)


class Catalog(Journal):
    """What the LCD knows besides its resources; :class:`hakeeper.db.store.Lcd` adds those."""

    if TYPE_CHECKING:  # defined with the resources

        def removal_order(self, tags: Iterable[str]) -> list[str]: ...

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
        volumes = self._query(
            "SELECT DISTINCT volume FROM mirror_stores WHERE node = ? ORDER BY volume LIMIT 3", (name,)
        )
        if volumes:
            raise DeleteRefused(
                f"node {name!r} is still a node of the mirrored volume {', '.join(v[0] for v in volumes)} "
                "(see: hakeeper mirror delete)"
            )
        users = self._query("SELECT tag FROM equivalencies WHERE node = ? ORDER BY tag LIMIT 3", (name,))
        if users:
            raise DeleteRefused(
                f"node {name!r} is still an equivalent of {', '.join(u[0] for u in users)} (see: eqv_remove)"
            )
        with self._change("remove_node", {"name": name}) as db:
            db.execute("DELETE FROM nodes WHERE name = ?", (name,))

    @_write
    def register_node(
        self,
        node: str,
        addresses: Sequence[str],
        known: Mapping[str, Sequence[str]] | None = None,
        witness: bool = False,
    ) -> list[CommPath]:
        """Know ``node`` and have a path to it on every network both are on (``cluster join``); idempotent.

        ``addresses``: what ``node`` announced (``ADDRESS[/PREFIX]``, one per network, in
        priority order); ``known``: the announced addresses of other nodes, this one's among
        them (the paths' local addresses count too: they are this node's). A path or the node
        that exists already stays as it is; ``witness`` records the node's role. Registering
        this node itself changes nothing. Replicated to every node (hakeeper.cluster.configsync),
        each pairing its own addresses. Returns the paths created here.
        """
        check_name(node, "node name")
        theirs = [parse_announced(a) for a in addresses]
        told = {check_name(str(n), "node name"): [parse_announced(a) for a in v] for n, v in (known or {}).items()}
        args = {"node": node, "addresses": theirs, "known": dict(sorted(told.items())), "witness": bool(witness)}
        if node == self._local:
            return []
        paths = self.paths()
        own = list(dict.fromkeys([p.local for p in paths] + told.get(self._local, [])))
        existing = {(p.local, p.remote) for p in paths if p.node == node}
        new = [(local, remote) for local, remote in pair(own, theirs) if (local, remote) not in existing]
        taken = {p.priority for p in paths if p.node == node}
        free = [p for p in range(1, MAX_PATH_PRIORITY + 1) if p not in taken]
        if len(free) < len(new):
            raise OutOfRange(f"{node!r} has no free path priority in 1..{MAX_PATH_PRIORITY}")
        created = [
            CommPath(node, "TCP", local, remote, priority) for (local, remote), priority in zip(new, free, strict=False)
        ]
        with self._change("register_node", args) as db:
            db.execute("INSERT OR IGNORE INTO nodes (name) VALUES (?)", (node,))
            db.executemany(
                "INSERT INTO comm_paths (node, kind, local_addr, remote_addr, priority) VALUES (?, ?, ?, ?, ?)",
                [(p.node, p.kind, p.local, p.remote, p.priority) for p in created],
            )
            if witness:
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (ROLE + node, WITNESS))
            else:
                db.execute("DELETE FROM meta WHERE key = ?", (ROLE + node,))
        return created

    @_write
    def set_witness(self, witness: bool) -> None:
        """This node becomes a witness (its ``witness`` flag), or stops being one; the members learn it.

        One change, recorded as this node's registration of itself with its role
        (``register_node``, no addresses): replicated to every member, which records
        the role; here it sets or clears the flag. The flag set already, or not set
        when it is cleared, is refused as ``flg_create`` / ``flg_remove`` refuse it.
        """
        has = self.has_flag(WITNESS)
        if witness and has:
            raise AlreadyExists(f"flag {WITNESS!r} exists already")
        if not witness and not has:
            raise NotFound(f"no flag {WITNESS!r} (see: flg_list)")
        args = {"node": self._local, "addresses": [], "known": {}, "witness": witness}
        with self._change("register_node", args) as db:
            if witness:
                db.execute("INSERT INTO flags (name) VALUES (?)", (WITNESS,))
            else:
                db.execute("DELETE FROM flags WHERE name = ?", (WITNESS,))

    def witnesses(self) -> list[str]:
        """The nodes known here as witnesses: this node when it has the ``witness`` flag, others as registered."""
        rows = self._query("SELECT key FROM meta WHERE substr(key, 1, ?) = ? AND value = ?", (len(ROLE), ROLE, WITNESS))
        found = {str(key)[len(ROLE) :] for (key,) in rows}
        found.discard(self._local)
        if self.has_flag(WITNESS):
            found.add(self._local)
        return sorted(found)

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
            delete_resources(db, doomed)
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
        own = sorted(name for name in assignments if SETTINGS[name].node)
        if own and len(own) < len(assignments):
            raise IllegalArgument(
                f"{', '.join(own)} is this node's own setting and the others are the cluster's: change them apart"
            )
        check_rules(values)
        op = "set_node_settings" if own else "set_settings"  # a node's own is never replicated
        with self._change(op, {"assignments": dict(assignments)}) as db:
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
        if ip_of(local).version != ip_of(remote).version:
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
        old = next(
            (p for p in self.paths(node) if p.local == normal_address(local) and p.remote == normal_address(remote)),
            None,
        )
        if old is None:
            raise NotFound(f"no communication path to {node!r} from {local} to {remote} (see: net_list)")
        target = node if new_node is None else new_node
        self._require_node(target)
        there = normal_address(new_local) if new_local is not None else old.local
        to = normal_address(new_remote) if new_remote is not None else old.remote
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
            if (local is None or p.local == normal_address(local))
            and (remote is None or p.remote == normal_address(remote))
        ]
        if not doomed:
            raise NotFound(f"no communication path to {node!r} matches (see: net_list)")
        with self._change("remove_path", {"node": node, "local": local, "remote": remote}) as db:
            db.executemany(
                "DELETE FROM comm_paths WHERE node = ? AND local_addr = ? AND remote_addr = ?",
                [(p.node, p.local, p.remote) for p in doomed],
            )
        return doomed
