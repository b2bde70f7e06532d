"""``lcdstatus``: the state of every hierarchy, in LifeKeeper's short form (``-e``) or the detailed form.

The short form and ``-q`` read only what they show (tag, id, state, priorities):
on 10,000 resources that is the difference between a tenth and a quarter of a
second (``bench/lcd_scale.py``).

With hakeeperd running, ``-e``, ``-q`` and ``--json`` also say where each hierarchy
extended to another node runs now (:class:`Where`, from what every live peer says
it runs, as ``hakeeper why`` asks): a backup's LCD alone cannot tell, since
PRIMARY is the highest-priority node, not the one that serves. A peer that does
not answer makes it unknown (``?``), never "nowhere". ``-q`` then also reports a
hierarchy left without a live backup.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hakeeper.cli.base import Context, arg, command
from hakeeper.comm.paths import PathState, read_states
from hakeeper.db import graph
from hakeeper.db.model import CommPath, Resource, escape_controls, info_text
from hakeeper.db.states import State
from hakeeper.db.store import Lcd
from hakeeper.errors import InternalError

if TYPE_CHECKING:
    from hakeeper.services import DaemonServices

DASHES = "--"
PROBLEM_STATES = frozenset({State.OSF, State.ILLSTATE, State.ISU})

Summary = tuple[str, str, State, str]  # tag, id, state, reason
Placement = tuple[str, int, str]  # node, priority, tag there


@dataclass(frozen=True)
class Snapshot:
    """What lcdstatus shows, read from the LCD in a few queries (full records only when asked)."""

    node: str
    summaries: dict[str, Summary]
    edges: list[graph.Edge]
    placements: dict[str, list[Placement]]  # by priority
    flags: list[str]
    shutdown_strategy: str
    seq: int
    paths: list[CommPath]
    path_states: dict[str, PathState]
    resources: dict[str, Resource] | None = None
    witnesses: tuple[str, ...] = ()

    @classmethod
    def read(cls, lcd: Lcd, *, full: bool = False) -> Snapshot:
        placements: dict[str, list[Placement]] = {}
        for tag, node, priority, remote in lcd.equivalency_rows():
            placements.setdefault(tag, []).append((node, priority, remote))
        return cls(
            node=lcd.local_node,
            summaries={row[0]: row for row in lcd.summaries()},
            edges=lcd.edges(),
            placements=placements,
            flags=lcd.flags(),
            shutdown_strategy=lcd.shutdown_strategy,
            seq=lcd.last_seq(),
            paths=lcd.paths(),
            path_states=read_states(lcd.path.parent),
            resources={r.tag: r for r in lcd.resources()} if full else None,
            witnesses=tuple(known_witnesses(lcd)) if full else (),
        )

    def full(self) -> dict[str, Resource]:
        if self.resources is None:
            raise RuntimeError("snapshot read without full records")
        return self.resources

    def placement(self, tag: str) -> tuple[str, str, str]:
        """(backup, local priority, primary) as LifeKeeper's short status shows them."""
        entries = self.placements.get(tag)
        if not entries:
            return DASHES, DASHES, self.node
        primary = entries[0][0]
        for i, (node, priority, _) in enumerate(entries):
            if node == self.node:
                backup = entries[i + 1][0] if i + 1 < len(entries) else DASHES
                return backup, str(priority), primary
        return DASHES, DASHES, primary


@dataclass(frozen=True)
class Where:
    """Where one extended hierarchy runs now, as hakeeperd on this node learnt it from every live peer."""

    hierarchy: str
    members: frozenset[str]
    running: tuple[tuple[str, int], ...]  # (node, epoch it holds it under; 0: no claim), by node
    unknown: tuple[str, ...]  # nodes it is extended to, not DEAD, that did not say what they run
    backups: tuple[tuple[str, str], ...]  # (node, ALIVE | DEAD | UNKNOWN | OSF) of the others, by priority

    @property
    def live_backups(self) -> list[str]:
        return [node for node, state in self.backups if state == "ALIVE"]

    def shown(self) -> tuple[str, str]:
        """(IN SERVICE ON, EPOCH) for the short form: ``?`` when a node that may run it did not answer."""
        if self.running:
            epochs = {epoch for _node, epoch in self.running}
            return ",".join(n for n, _e in self.running), ",".join(str(e) if e else DASHES for e in sorted(epochs))
        return ("?" if self.unknown else DASHES), DASHES

    def trouble(self) -> str | None:
        """Why the hierarchy has no live backup (for -q), or None when it has one."""
        if self.live_backups:
            return None
        if self.running:
            here = f"in service on {', '.join(n for n, _e in self.running)}"
        else:
            here = f"{', '.join(self.unknown)} did not answer" if self.unknown else "in service nowhere"
        others = ", ".join(f"{node} {state}" for node, state in self.backups) or "extended to no other node"
        unknown = any(state == "UNKNOWN" for _node, state in self.backups)
        what = "no backup known to be live" if unknown else "no live backup"
        return f"hierarchy {self.hierarchy}: {what} ({here}; {others})"

    def as_json(self) -> dict[str, Any]:
        return {
            "hierarchy": self.hierarchy,
            "in_service_on": None if self.unknown and not self.running else [n for n, _e in self.running],
            "epoch": max((e for _n, e in self.running), default=None),
            "live_backups": self.live_backups,
            "unknown": list(self.unknown),
        }


def where_table(places: Sequence[Where]) -> list[str]:
    """HIERARCHY IN SERVICE ON EPOCH: one line for each extended hierarchy, in LifeKeeper's table style."""
    rows = [("HIERARCHY", "IN SERVICE ON", "EPOCH")] + [(w.hierarchy, *w.shown()) for w in places]
    w0, w1 = (max(len(r[i]) for r in rows) for i in range(2))
    return [f"{h:<{w0}}  {o:<{w1}}  {e:>5}" for h, o, e in rows]


async def where_now(services: DaemonServices) -> list[Where]:
    """Where each hierarchy extended to another node runs: what this node and every live peer say they run."""
    from hakeeper.cluster.decide import Hierarchy, hierarchies

    failover = services.failover
    me = services.lcd.local_node

    def read(lcd: Lcd) -> tuple[list[Hierarchy], dict[str, str]]:
        equivalencies = lcd.equivalencies()
        if all(e.node == me for e in equivalencies):  # nothing extended: nothing runs elsewhere (and no graph to walk)
            return [], {}
        found = hierarchies(lcd.edges(), equivalencies)
        return found, {tag: state.name for tag, _id, state, _reason in lcd.summaries()}

    found, here = await services.db.read(read)
    found = [h for h in found if set(h.priorities) - {me}]
    if not found:
        return []
    views = await failover.views()
    membership = failover.membership()
    runs: dict[str, dict[str, int]] = {
        peer: {str(k): int(v) for k, v in dict(answer.get("runs") or {}).items()} for peer, answer in views.items()
    }
    runs[me] = failover.runs_here()  # what this node's heartbeats say it runs (kept until the LCD changes)
    silent = set(failover.unknown(views))
    places = []
    for h in found:
        running = tuple((n, runs[n][h.name]) for n in sorted(runs) if h.name in runs[n])
        on = {n for n, _e in running}
        backups = []
        for _priority, node in h.by_priority(set(h.priorities) - on):
            state = membership.get(node, PathState.UNKNOWN).value if node != me else "ALIVE"
            if node in silent:
                state = "UNKNOWN"
            elif node == me and any(here.get(t) in ("OSF", "ILLSTATE") for t in h.members):
                state = "OSF"
            backups.append((node, state))
        unknown = tuple(sorted(silent & set(h.priorities)))
        places.append(Where(h.name, h.members, running, unknown, tuple(backups)))
    return places


def known_witnesses(lcd: Lcd) -> list[str]:
    """The nodes this LCD knows as witnesses: itself with the ``witness`` flag, others as their join registered them."""
    return lcd.witnesses()


def _scope(snap: Snapshot, top: str | None) -> set[str]:
    if top is None:
        return set(snap.summaries)
    return graph.reachable(graph.children_of(snap.edges), top) | {top}


def short_form(snap: Snapshot, lines: list[tuple[int, str, bool]]) -> list[str]:
    rows = [("BACKUP", "TAG", "ID", "STATE", "PRIO", "PRIMARY")]
    for depth, tag, _repeated in lines:
        _, rid, state, _ = snap.summaries[tag]
        backup, prio, primary = snap.placement(tag)
        rows.append((backup, " " * depth + tag, rid, state.name, prio, primary))
    widths = [max(map(len, column)) for column in list(zip(*rows, strict=True))[:5]]
    w0, w1, w2, w3, w4 = widths
    return [f"{b:<{w0}}  {t:<{w1}}  {i:<{w2}}  {s:<{w3}}  {p:>{w4}}  {pr}" for b, t, i, s, p, pr in rows]


def path_lines(snap: Snapshot) -> list[str]:
    """LifeKeeper's path table: MACHINE NETWORK ADDRESSES/DEVICE STATE PRIO."""
    rows = [("MACHINE", "NETWORK", "ADDRESSES/DEVICE", "STATE", "PRIO")]
    for p in snap.paths:
        state = snap.path_states.get(p.key, PathState.UNKNOWN).value
        rows.append((p.node, p.kind, f"{p.local}/{p.remote}", state, str(p.priority)))
    w0, w1, w2, w3 = (max(map(len, column)) for column in list(zip(*rows, strict=True))[:4])
    return [f"{m:<{w0}}  {n:<{w1}}  {a:<{w2}}  {s:<{w3}}  {pr:>4}" for m, n, a, s, pr in rows]


def long_form(snap: Snapshot, tags: set[str]) -> list[str]:
    resources = snap.full()
    kids = graph.children_of(snap.edges)
    tree = graph.tree_lines(snap.edges, tags)
    lines = [f"LCD of node {snap.node} (change {snap.seq})", "", "Resource hierarchy information:"]
    lines += ["  " + line for line in short_form(snap, tree)] if tags else ["  (no resources)"]
    lines.append("")
    for _depth, tag, repeated in tree:
        if repeated:
            continue
        r = resources[tag]
        where = ", ".join(
            f"{node} (priority {priority}{', this node' if node == snap.node else ''}"
            f"{'' if remote == tag else ', as ' + remote})"
            for node, priority, remote in snap.placements.get(tag, [])
        )
        lines += [
            f"{tag}",
            f"    id              {r.id}",
            f"    app/type        {r.app}/{r.type}",
            f"    state           {r.state.name}" + (f" ({escape_controls(r.reason)})" if r.reason else ""),
            f"    initialize      {r.init.name}",
            f"    switchback      {r.switchback.name}",
            "    quickCheck      " + (f"every {r.check_interval} s" if r.check_interval else "off"),
            f"    local recovery  {'Y' if r.local_recover else 'N'}",
            f"    info            {escape_controls(info_text(r.info)) or '-'}",
            f"    depends on      {', '.join(sorted(kids.get(tag, ()))) or '-'}",
            f"    equivalencies   {where or '- (this node only)'}",
            "",
        ]
    lines += [
        "Communication paths:",
        *(["  " + line for line in path_lines(snap)] if snap.paths else ["  (none: see net_create)"]),
        "",
        *(
            [f"Witnesses: {', '.join(snap.witnesses)} (count for quorum, hold no resources)", ""]
            if snap.witnesses
            else []
        ),
        "Flags:",
        *(["  " + f for f in snap.flags] or ["  (none)"]),
        "",
        f"Shutdown strategy: {snap.shutdown_strategy}",
    ]
    return lines


def problems(snap: Snapshot, tags: set[str]) -> list[str]:
    """One line for each resource of ``tags`` (those in trouble, for -q): tag, state and reason."""
    out = []
    for tag in sorted(tags):
        _, _, state, reason = snap.summaries[tag]
        out.append(f"{tag} {state.name}" + (f" ({escape_controls(reason)})" if reason else ""))
    return out


def as_json(snap: Snapshot, tags: set[str], places: Sequence[Where] | None = None) -> dict[str, Any]:
    resources = snap.full()
    kids = graph.children_of(snap.edges)

    def tree(tag: str) -> dict[str, Any]:
        return {"tag": tag, "children": [tree(c) for c in sorted(kids.get(tag, ())) if c in tags]}

    records = []
    for tag in sorted(tags):
        backup, prio, primary = snap.placement(tag)
        record = resources[tag].as_json()
        record.update(
            backup=None if backup == DASHES else backup,
            priority=None if prio == DASHES else int(prio),
            primary=primary,
            equivalencies=[
                {"node": node, "priority": priority, "tag": remote}
                for node, priority, remote in snap.placements.get(tag, [])
            ],
        )
        records.append(record)
    return {
        "node": snap.node,
        "seq": snap.seq,
        "resources": records,
        "dependencies": [{"parent": p, "child": c} for p, c in sorted(snap.edges) if p in tags and c in tags],
        "hierarchies": [tree(t) for t in graph.roots(snap.edges, tags)],
        "paths": [
            {
                "node": p.node,
                "kind": p.kind,
                "local": p.local,
                "remote": p.remote,
                "priority": p.priority,
                "state": snap.path_states.get(p.key, PathState.UNKNOWN).value,
            }
            for p in snap.paths
        ],
        "flags": snap.flags,
        "witnesses": list(snap.witnesses),
        "shutdown_strategy": snap.shutdown_strategy,
        "placement": None if places is None else [w.as_json() for w in places],
    }


def dump_json(data: Any, out: Any) -> str:
    """JSON indented for a person at a terminal, compact (and much faster) for programs."""
    terminal = getattr(out, "isatty", lambda: False)()
    return json.dumps(data, indent=2 if terminal else None, ensure_ascii=False)


async def _lcdstatus_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    """In hakeeperd: where each hierarchy runs, asked on the event loop; the LCD read in a worker thread."""
    import asyncio

    places = await where_now(ctx.daemon) if (args.short or args.quiet or args.json) else None

    def work() -> int:
        own = Context(ctx.root, ctx.out, ctx.err, actor=ctx.actor, readonly=True)
        try:
            return show(own, args, places)
        finally:
            own.close()

    return await asyncio.to_thread(work)


@command(
    "lcdstatus",
    "show every resource hierarchy: state, priorities and where it would go",
    arg("-e", dest="short", action="store_true", help="the short form: one line a resource, children indented"),
    arg(
        "-q",
        dest="quiet",
        action="store_true",
        help="only resources in trouble (OSF, ISU, ILLSTATE); none: no output (with --json: an empty list)",
    ),
    arg("-r", dest="root_tag", metavar="TAG", help="only the hierarchy under TAG"),
    arg("--json", action="store_true", help="print JSON instead (indented at a terminal)"),
    epilog="Short form columns: BACKUP = the next node by priority after this one (-- if none),\n"
    "PRIO = this node's priority, PRIMARY = the node with the highest priority.\n"
    "With hakeeperd running, -e adds HIERARCHY / IN SERVICE ON / EPOCH: where each hierarchy\n"
    "extended to another node runs now (? : a node that could run it did not answer;\n"
    "-- : in service nowhere), and -q reports a hierarchy without a live backup.\n"
    "With -q, --json prints the JSON of --json holding only the resources in trouble.",
    in_daemon=_lcdstatus_in_daemon,
)
def _lcdstatus(ctx: Context, args: argparse.Namespace) -> int:
    return show(ctx, args, None)


def show(ctx: Context, args: argparse.Namespace, places: Sequence[Where] | None) -> int:
    """lcdstatus in any form; ``places``: where the hierarchies run (None: unknown, hakeeperd is not running)."""
    lcd = ctx.lcd
    if args.root_tag is not None:
        lcd.resource(args.root_tag)
    full = args.json or not (args.quiet or args.short)
    snap = Snapshot.read(lcd, full=full)
    tags = _scope(snap, args.root_tag)
    cycle = graph.cyclic(snap.edges, tags)
    if cycle:  # no tree can show it: say so, rather than leave the resources out
        raise InternalError(
            f"dependency cycle among {', '.join(cycle)}: the LCD is damaged and these hierarchies cannot be shown; "
            "remove one of these dependencies (see: dep_list, dep_remove)"
        )
    if places is not None:  # the hierarchies shown (-r: only the one under TAG)
        places = [w for w in places if w.members & tags]
    if args.quiet:
        tags = {tag for tag in tags if snap.summaries[tag][2] in PROBLEM_STATES}
        if places is not None:
            places = [w for w in places if w.trouble()]
    if args.json:
        ctx.print(dump_json(as_json(snap, tags, places), ctx.out))
    elif args.quiet:
        troubles = [w.trouble() or "" for w in places or ()]
        ctx.out.write("".join(line + "\n" for line in [*problems(snap, tags), *troubles]))
    elif args.short:
        lines = short_form(snap, graph.tree_lines(snap.edges, tags))
        if places:
            lines += where_table(places)
        if snap.paths:
            lines += path_lines(snap)
        ctx.out.write("".join(line + "\n" for line in lines))
    else:
        ctx.out.write("".join(line + "\n" for line in long_form(snap, tags)))
    return 0
