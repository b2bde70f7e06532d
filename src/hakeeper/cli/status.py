"""``lcdstatus``: the state of every hierarchy, in LifeKeeper's short form (``-e``) or the detailed form."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from hakeeper.cli.base import Context, arg, command
from hakeeper.db import graph
from hakeeper.db.model import Equivalency, Resource, info_text
from hakeeper.db.states import State
from hakeeper.db.store import Lcd

DASHES = "--"
PROBLEM_STATES = frozenset({State.OSF, State.ILLSTATE, State.ISU})


@dataclass(frozen=True)
class Snapshot:
    """Everything lcdstatus shows, read from the LCD in a few queries."""

    node: str
    resources: dict[str, Resource]
    edges: list[graph.Edge]
    equivalencies: dict[str, list[Equivalency]]
    flags: list[str]
    shutdown_strategy: str
    seq: int

    @classmethod
    def read(cls, lcd: Lcd) -> Snapshot:
        eqvs: dict[str, list[Equivalency]] = {}
        for e in lcd.equivalencies():
            eqvs.setdefault(e.tag, []).append(e)
        return cls(
            node=lcd.local_node,
            resources={r.tag: r for r in lcd.resources()},
            edges=lcd.edges(),
            equivalencies=eqvs,
            flags=lcd.flags(),
            shutdown_strategy=lcd.shutdown_strategy,
            seq=lcd.last_seq(),
        )

    def placement(self, tag: str) -> tuple[str, str, str]:
        """(backup, local priority, primary) as LifeKeeper's short status shows them."""
        entries = sorted(self.equivalencies.get(tag, []), key=lambda e: e.priority)
        if not entries:
            return DASHES, DASHES, self.node
        primary = entries[0].node
        mine = next((i for i, e in enumerate(entries) if e.node == self.node), None)
        if mine is None:
            return DASHES, DASHES, primary
        backup = entries[mine + 1].node if mine + 1 < len(entries) else DASHES
        return backup, str(entries[mine].priority), primary


def _scope(snap: Snapshot, top: str | None) -> set[str]:
    if top is None:
        return set(snap.resources)
    snap_kids = graph.children_of(snap.edges)
    return graph.reachable(snap_kids, top) | {top}


def short_form(snap: Snapshot, tags: set[str]) -> list[str]:
    rows = [("BACKUP", "TAG", "ID", "STATE", "PRIO", "PRIMARY")]
    for depth, tag, _repeated in graph.tree_lines(snap.edges, tags):
        r = snap.resources[tag]
        backup, prio, primary = snap.placement(tag)
        rows.append((backup, " " * depth + tag, r.id, r.state.name, prio, primary))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    return [
        f"{b:<{widths[0]}}  {t:<{widths[1]}}  {i:<{widths[2]}}  {s:<{widths[3]}}  {p:>{widths[4]}}  {pr}"
        for b, t, i, s, p, pr in rows
    ]


def long_form(snap: Snapshot, tags: set[str]) -> list[str]:
    kids = graph.children_of(snap.edges)
    lines = [f"LCD of node {snap.node} (change {snap.seq})", ""]
    lines.append("Resource hierarchy information:")
    lines += ["  " + line for line in short_form(snap, tags)] if tags else ["  (no resources)"]
    lines.append("")
    for _depth, tag, repeated in graph.tree_lines(snap.edges, tags):
        if repeated:
            continue
        r = snap.resources[tag]
        eqvs = sorted(snap.equivalencies.get(tag, []), key=lambda e: e.priority)
        where = ", ".join(
            f"{e.node} (priority {e.priority}{', this node' if e.node == snap.node else ''}"
            f"{'' if e.remote_tag == tag else ', as ' + e.remote_tag})"
            for e in eqvs
        )
        lines += [
            f"{tag}",
            f"    id              {r.id}",
            f"    app/type        {r.app}/{r.type}",
            f"    state           {r.state.name}" + (f" ({r.reason})" if r.reason else ""),
            f"    initialize      {r.init.name}",
            f"    switchback      {r.switchback.name}",
            "    quickCheck      " + (f"every {r.check_interval} s" if r.check_interval else "off"),
            f"    local recovery  {'Y' if r.local_recover else 'N'}",
            f"    info            {info_text(r.info) or '-'}",
            f"    depends on      {', '.join(sorted(kids.get(tag, ()))) or '-'}",
            f"    equivalencies   {where or '- (this node only)'}",
            "",
        ]
    lines += [
        "Communication paths:",
        "  (none)",
        "",
        "Flags:",
        *(["  " + f for f in snap.flags] or ["  (none)"]),
        "",
        f"Shutdown strategy: {snap.shutdown_strategy}",
    ]
    return lines


def problems(snap: Snapshot, tags: set[str]) -> list[str]:
    return [
        f"{tag} {snap.resources[tag].state.name}"
        + (f" ({snap.resources[tag].reason})" if snap.resources[tag].reason else "")
        for tag in sorted(tags)
        if snap.resources[tag].state in PROBLEM_STATES
    ]


def as_json(snap: Snapshot, tags: set[str]) -> dict[str, Any]:
    def tree(tag: str) -> dict[str, Any]:
        return {"tag": tag, "children": [tree(c) for c in sorted(kids.get(tag, ())) if c in tags]}

    kids = graph.children_of(snap.edges)
    resources = []
    for tag in sorted(tags):
        backup, prio, primary = snap.placement(tag)
        record = snap.resources[tag].as_json()
        record.update(
            backup=None if backup == DASHES else backup,
            priority=None if prio == DASHES else int(prio),
            primary=primary,
            equivalencies=[
                {"node": e.node, "priority": e.priority, "tag": e.remote_tag}
                for e in sorted(snap.equivalencies.get(tag, []), key=lambda e: e.priority)
            ],
        )
        resources.append(record)
    return {
        "node": snap.node,
        "seq": snap.seq,
        "resources": resources,
        "dependencies": [{"parent": p, "child": c} for p, c in sorted(snap.edges) if p in tags and c in tags],
        "hierarchies": [tree(t) for t in graph.roots(snap.edges, tags)],
        "paths": [],
        "flags": snap.flags,
        "shutdown_strategy": snap.shutdown_strategy,
    }


@command(
    "lcdstatus",
    "show every resource hierarchy: state, priorities and where it would go",
    arg("-e", dest="short", action="store_true", help="the short form: one line a resource, children indented"),
    arg(
        "-q", dest="quiet", action="store_true", help="only resources in trouble (OSF, ISU, ILLSTATE); none: no output"
    ),
    arg("-r", dest="root_tag", metavar="TAG", help="only the hierarchy under TAG"),
    arg("--json", action="store_true", help="print JSON instead"),
    epilog="Short form columns: BACKUP = the next node by priority after this one (-- if none),\n"
    "PRIO = this node's priority, PRIMARY = the node with the highest priority.",
)
def _lcdstatus(ctx: Context, args: argparse.Namespace) -> int:
    lcd = ctx.lcd
    if args.root_tag is not None:
        lcd.resource(args.root_tag)
    snap = Snapshot.read(lcd)
    tags = _scope(snap, args.root_tag)
    if args.json:
        ctx.print(json.dumps(as_json(snap, tags), indent=2, ensure_ascii=False))
    elif args.quiet:
        ctx.out.write("".join(line + "\n" for line in problems(snap, tags)))
    elif args.short:
        ctx.out.write("".join(line + "\n" for line in short_form(snap, tags)))
    else:
        ctx.out.write("".join(line + "\n" for line in long_form(snap, tags)))
    return 0
