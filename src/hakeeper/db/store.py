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

The class is built in four parts, one module each: :mod:`hakeeper.db.journal`
(the connection, transactions, the change log), :mod:`hakeeper.db.catalog`
(nodes, applications and types, flags, settings, communication paths),
:mod:`hakeeper.db.mirrors` (mirrored volumes' definitions) and this
one (resources, dependencies, equivalencies, and replaying changes);
:mod:`hakeeper.db.rows` turns rows into the model's objects.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hakeeper.db import graph
from hakeeper.db.journal import BUSY_TIMEOUT_MS, ChangedMeanwhile, LcdBusy, _write, logger
from hakeeper.db.mirrors import Mirrors
from hakeeper.db.model import (
    Dependency,
    Equivalency,
    Resource,
    check_id,
    check_name,
    check_priority,
    check_reason,
    check_tag,
    dump_info,
)
from hakeeper.db.rows import (
    RESOURCE_COLUMNS,
    check_interval_seconds,
    delete_resources,
    insert_resource,
    lowest_free,
    priorities_of,
    resource_spec,
    row_resource,
)
from hakeeper.db.states import EqvKind, Init, State, Switchback
from hakeeper.errors import AlreadyExists, HakeeperError, IllegalArgument, NotFound

__all__ = ["BUSY_TIMEOUT_MS", "ChangedMeanwhile", "Lcd", "LcdBusy"]


class Lcd(Mirrors):
    """An open LCD. Use as a context manager, or call :meth:`close`.

    ``Lcd(path)`` creates the file if there is none (:meth:`open` creates it
    whole, atomically) and refuses one that is there but damaged. ``readonly``
    opens it for reading only: any change is refused by SQLite. ``verify`` runs
    ``PRAGMA quick_check`` (hakeeperd does, when it starts).
    """

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
            insert_resource(db, resource, ensure_type)
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
            fields = resource_spec(spec)
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
                insert_resource(db, resource, ensure_type=True)
            db.executemany("INSERT INTO dependencies (parent, child) VALUES (?, ?)", pairs)
        return made

    def resource(self, tag: str) -> Resource:
        rows = self._query(f"SELECT {RESOURCE_COLUMNS} FROM resources WHERE tag = ?", (tag,))
        if not rows:
            raise NotFound(f"no resource tagged {tag!r} (see: ins_list)")
        return row_resource(rows[0])

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
        rows = self._query(f"SELECT {RESOURCE_COLUMNS} FROM resources{clause} ORDER BY tag", params)
        return [row_resource(row) for row in rows]

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
            delete_resources(db, doomed)
        return doomed

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
            lambda: logger.info(
                "%s %s -> %s (%s)", tag, old.name, new.name, reason or "no reason given", extra={"tag": tag}
            )
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
            mine = priority if priority is not None else lowest_free(taken)
            if mine in taken:
                raise AlreadyExists(f"priority {mine} is already used by {tag!r} on another node")
            taken.add(mine)
            inserts.append((this, tag, mine))
        theirs = other_priority if other_priority is not None else lowest_free(taken)
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
                    entries[this] = lowest_free(set(entries.values()))
        else:  # replayed: the same entries as the node where it was made, besides those this node lacks
            final = {tag: priorities_of(rows.get(tag), tag) for tag in wanted}
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
            else lowest_free({p for by_priority in used.values() for p in by_priority})
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

    # ------------------------------------------------------------------ changes from elsewhere

    def replay(self, op: str, args: dict[str, Any]) -> None:
        """Apply a change as recorded in another LCD's change log."""
        method = _REPLAYABLE.get(op)
        if method is None:
            raise IllegalArgument(f"change {op!r} cannot be replayed")
        method(self, **args)


def _log_state(tag: str, old: State, new: State, reason: str) -> None:
    logger.info("%s %s -> %s (%s)", tag, old.name, new.name, reason or "no reason given", extra={"tag": tag})


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
    "set_node_settings": Lcd.set_settings,
    "create_path": Lcd.create_path,
    "register_node": Lcd.register_node,
    "change_path": Lcd.change_path,
    "remove_path": Lcd.remove_path,
    "remove_flag": Lcd.remove_flag,
    "apply": _replay_steps,
    "create_mirror": Lcd.create_mirror,
    "delete_mirror": Lcd.delete_mirror,
    "set_mirror_source": Lcd.set_mirror_source,
}
