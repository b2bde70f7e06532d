"""``hakeeper status``: one view of the whole cluster, from any node, the witness included (Pacemaker's ``crm_mon``).

hakeeperd on the node where it is typed makes its own report (:func:`daemon_report`:
what this node sees of the others, its paths, its quorum, the hierarchies its LCD
knows, what it runs under which epoch, the ownership records its voter accepted)
and asks every peer that is not DEAD to it for that peer's own report, all at once,
through the ``run`` request every hakeeperd serves (``status --local``), each within
:data:`STATUS_TIMEOUT` on each of its paths. :func:`merge` — a pure function — makes
one view of them:

- **nodes**: ALIVE, DEAD or UNKNOWN as *this* node sees them; a node says itself
  whether it is a witness (the ``witness`` flag of its own LCD); for one that does
  not answer, this LCD's registration of it says, else ``witness: null``;
- **where each hierarchy runs**: the nodes that answered and run one of its
  resources, each with the epoch it holds it under. A node that did not answer and
  is not DEAD is listed as *unknown*: it may run it. Unknown is never "nothing";
- **the owner**: the ownership record (owner, epoch) with the highest ballot among
  the voters that answered, and how many voters hold it: ``agreed`` when as many
  as a claim needs do (the record a claim read from a majority would find); status
  sends no ballot, so it never disturbs a claim under way;
- **backups**: the other nodes the hierarchy is extended to, by priority, each
  live (ALIVE and answering, none of its resources failed there), not live, or
  unknown (UNKNOWN, or ALIVE but not answering);
- **degraded**: every line an administrator should act on: quorum lost, a node
  DEAD, UNKNOWN or silent, a path DEAD (those to a DEAD node are summed up in its
  line), a resource ISU, OSF or ILLSTATE, a hierarchy with no live backup, in
  service nowhere, unknown, on two nodes, or whose record is not agreed, a blocked
  takeover.

Without hakeeperd on this node, ``status`` shows what its LCD alone says, marked as
such: every other node unknown, the hierarchies in service here and nowhere else
known. ``--json`` prints the view as :func:`merge` returns it (schema: docs/status.md);
``--watch`` redraws it every few seconds, in this process (``--count`` bounds it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hakeeper.cli.base import Context, arg, command
from hakeeper.cli.status import dump_json, known_witnesses
from hakeeper.cluster import decide
from hakeeper.comm.paths import PathState, read_states
from hakeeper.control import forward_to_daemon
from hakeeper.db.catalog import WITNESS
from hakeeper.db.model import CommPath
from hakeeper.db.store import Lcd
from hakeeper.errors import CommunicationFailed, HakeeperError, OutOfRange
from hakeeper.layout import PLACEMENT_NAME

if TYPE_CHECKING:
    from hakeeper.services import DaemonServices

SCHEMA = 1  # bumped only when a field changes meaning or goes away; new fields may be added
STATUS_TIMEOUT = 2.0  # a peer's report, on each of its paths; one that takes longer is unknown
FAILED = frozenset({"OSF", "ILLSTATE"})
PROBLEMS = frozenset({"OSF", "ISU", "ILLSTATE"})
ALIVE, DEAD, UNKNOWN = PathState.ALIVE.value, PathState.DEAD.value, PathState.UNKNOWN.value

Report = dict[str, Any]


# ---------------------------------------------------------------------- one node's own report


def lcd_report(lcd: Lcd, root: Path, *, records: bool = True) -> Report:
    """What this node's LCD and state directory say: everything of a report but what only hakeeperd knows.

    ``records``: read the ownership records from ``placement.db`` (hakeeperd has them in memory).
    """
    me = lcd.local_node
    summaries = {tag: (state.name, reason) for tag, _id, state, reason in lcd.summaries()}
    found = decide.hierarchies(lcd.edges(), lcd.equivalencies())
    members = set().union(*(h.members for h in found)) if found else set()
    states = read_states(root)  # empty unless the heartbeat process that wrote them lives
    in_service = {tag for tag, (state, _reason) in summaries.items() if state in ("ISP", "ISU")}
    held = dict(_placement_rows(root, "SELECT key, epoch FROM held")) if records else {}
    rows = (
        _placement_rows(root, "SELECT key, accepted_round, accepted_node, epoch, owner FROM slots") if records else []
    )
    accepted = {
        str(key): {"ballot": [int(r), str(n)], "epoch": int(epoch), "owner": owner} for key, r, n, epoch, owner in rows
    }
    return {
        "node": me,
        "daemon": False,
        "witness": lcd.has_flag(WITNESS),
        "witnesses": known_witnesses(lcd),
        "nodes": sorted({n.name for n in lcd.nodes()} | {me}),
        "membership": {},
        "paths": [_path(p, states) for p in lcd.paths()],
        "quorum": {
            "mode": str(lcd.settings()["quorum_mode"]),
            "ok": None,
            "why": "hakeeperd is not running here",
            "sees": None,
            "of": None,
        },
        "hierarchies": [
            {"name": h.name, "roots": list(h.roots), "members": sorted(h.members), "priorities": dict(h.priorities)}
            for h in found
        ],
        "resources": {
            tag: [state, reason] for tag, (state, reason) in summaries.items() if tag in members or state in PROBLEMS
        },
        "runs": {h.name: held.get(h.name, 0) for h in found if h.members & in_service},
        "records": accepted,
        "blocked": {},
    }


def _path(p: CommPath, states: Mapping[str, PathState]) -> Report:
    state = states.get(p.key, PathState.UNKNOWN).value
    return {
        "node": p.node,
        "kind": p.kind,
        "local": p.local,
        "remote": p.remote,
        "priority": p.priority,
        "state": state,
    }


def _placement_rows(root: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of this node's ownership records (read-only; none when there is no such file yet)."""
    path = root / PLACEMENT_NAME
    if not path.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)) as conn:
            return list(conn.execute(query).fetchall())
    except sqlite3.Error:
        return []


async def daemon_report(services: DaemonServices) -> Report:
    """This node's own report, inside hakeeperd: the LCD's part read off the event loop, then what hakeeperd knows."""
    failover = services.failover
    root = services.lcd.path.parent
    report = await services.db.read(lambda lcd: lcd_report(lcd, root, records=False))
    membership = failover.membership()
    view = failover.view()
    q = await failover.quorum.now()
    report.update(
        daemon=True,
        membership={n: membership.get(n, PathState.UNKNOWN).value for n in report["nodes"] if n != report["node"]},
        quorum={"mode": report["quorum"]["mode"], "ok": q.ok, "why": q.why, "sees": len(view.alive),
                "of": len(view.nodes)},
        runs=failover.runs_here(),  # what its heartbeats say it runs, with the epochs it holds them under
        records={
            name: {"ballot": slot.accepted.as_json(), "epoch": slot.value.epoch, "owner": slot.value.node}
            for name, slot in failover.box.slots().items()
        },
        blocked=dict(failover.blocked),
    )  # fmt: skip
    return report


async def gather(services: DaemonServices, actor: str) -> tuple[dict[str, Report], dict[str, str]]:
    """This node's report and every peer's that is not DEAD here (asked at once); why each other one is missing."""
    import asyncio

    mine = await daemon_report(services)
    me = mine["node"]
    failures: dict[str, str] = {}
    asked = [n for n in mine["nodes"] if n != me and mine["membership"].get(n) != DEAD]
    for node in mine["nodes"]:
        if node != me and node not in asked:
            failures[node] = "DEAD: not asked"

    async def one(node: str) -> Report | str:
        request = {"command": "status", "argv": ["--local"], "user": actor}
        try:
            answer = await services.request(node, "run", request, timeout=STATUS_TIMEOUT)
        except TimeoutError:
            return f"no answer within {STATUS_TIMEOUT:g} s"
        except HakeeperError as exc:
            return str(exc)
        if not isinstance(answer, dict) or answer.get("code") != 0:
            err = str(answer.get("err", "")).strip() if isinstance(answer, dict) else repr(answer)
            return f"its hakeeperd could not say: {err}"
        try:
            report = json.loads(str(answer.get("out", "")))
        except ValueError as exc:
            return f"unreadable answer: {exc}"
        return _checked(report, node)

    answers = await asyncio.gather(*(one(n) for n in asked))
    reports = {me: mine}
    for node, answer in zip(asked, answers, strict=True):
        if isinstance(answer, dict):
            reports[node] = answer
        else:
            failures[node] = answer
    return reports, failures


#: What every report holds, with the type of each (a peer of another version may answer otherwise: unknown then).
REPORT_FIELDS: dict[str, type] = {
    "node": str, "daemon": bool, "witness": bool, "nodes": list, "membership": dict, "paths": list,
    "hierarchies": list, "resources": dict, "runs": dict, "records": dict, "blocked": dict,
}  # fmt: skip


def _checked(report: object, node: str) -> Report | str:
    """``report`` if it is a report of ``node`` this version can read; else why not (the node is then unknown)."""
    if not isinstance(report, dict):
        return "unreadable answer: not a report"
    wrong = sorted(k for k, kind in REPORT_FIELDS.items() if not isinstance(report.get(k), kind))
    if wrong:
        return f"unreadable answer: no {', '.join(wrong)} (another version of hakeeper?)"
    if report["node"] != node:
        return f"an answer from {report['node']!r}, not {node!r}"
    return report


# ---------------------------------------------------------------------- one view of them (pure)


def majority(count: int) -> int:
    """As :func:`hakeeper.cluster.placement.majority` (not imported here: that module loads asyncio)."""
    return count // 2 + 1


def merge(me: str, reports: Mapping[str, Report], failures: Mapping[str, str], *, now: float) -> dict[str, Any]:
    """The cluster as ``me`` sees it, from the reports of the nodes that answered (``me``'s included).

    The result is the ``--json`` document (schema :data:`SCHEMA`, see docs/status.md).
    """
    mine = reports[me]
    daemon = bool(mine.get("daemon"))
    names = sorted(set(mine["nodes"]) | set(reports) | {me})
    membership: Mapping[str, str] = mine.get("membership", {})
    registered = set(mine.get("witnesses", []))  # a node that does not answer: what its registration said

    def seen(node: str) -> str:
        return ALIVE if node == me else str(membership.get(node, UNKNOWN))

    nodes = [
        {
            "name": n,
            "state": seen(n),
            "this": n == me,
            "witness": bool(reports[n].get("witness")) if n in reports else (True if n in registered else None),
            "answered": n in reports,
            "daemon": bool(reports[n].get("daemon")) if n in reports else None,
            "error": None if n in reports else failures.get(n, "not asked: hakeeperd is not running here"),
        }
        for n in names
    ]
    paths = [{"from": node, **p} for node in sorted(reports) for p in reports[node].get("paths", [])]
    mode = str((mine.get("quorum") or {}).get("mode", "majority"))
    need = majority(len(names) if mode == "majority" else len([n for n in names if seen(n) != DEAD]))
    hierarchies = [_hierarchy(h, names, reports, seen, need) for h in _definitions(me, reports)]
    degraded = _degraded(me, mine, nodes=nodes, paths=paths, hierarchies=hierarchies, reports=reports)
    return {
        "schema": SCHEMA,
        "node": me,
        "daemon": daemon,
        "time": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "quorum": mine.get("quorum"),
        "nodes": nodes,
        "paths": paths,
        "hierarchies": hierarchies,
        "degraded": degraded,
    }


def _definitions(me: str, reports: Mapping[str, Report]) -> list[Report]:
    """Every hierarchy any report knows (a witness's LCD knows none: its peers tell), this node's own first."""
    found: dict[str, Report] = {}
    for node in [me, *sorted(set(reports) - {me})]:
        for h in reports[node].get("hierarchies", []):
            found.setdefault(str(h["name"]), h)
    return [found[name] for name in sorted(found)]


def _hierarchy(
    h: Report, names: list[str], reports: Mapping[str, Report], seen: Callable[[str], str], need: int
) -> dict[str, Any]:
    name = str(h["name"])
    members = [str(t) for t in h["members"]]
    priorities = {str(n): int(p) for n, p in dict(h["priorities"]).items()}
    running = [{"node": n, "epoch": int(reports[n]["runs"][name])} for n in sorted(reports)
               if name in reports[n].get("runs", {})]  # fmt: skip
    on: set[str] = {str(r["node"]) for r in running}
    unknown = sorted(n for n in priorities if n not in reports and seen(n) != DEAD)
    resources = [
        {"tag": tag, "node": n, "state": reports[n]["resources"][tag][0], "reason": reports[n]["resources"][tag][1]}
        for n in sorted(reports)
        if n in priorities
        for tag in members
        if tag in reports[n].get("resources", {})
    ]
    failed_on = {r["node"] for r in resources if r["state"] in FAILED}
    backups: list[dict[str, Any]] = []
    for priority, node in sorted((p, n) for n, p in priorities.items() if n not in on):
        state = seen(node)
        live: bool | None = None  # UNKNOWN, or ALIVE but its hakeeperd did not say
        if state == DEAD or node in failed_on:
            live = False
        elif node in reports and state == ALIVE:
            live = True
        backups.append({"node": node, "priority": priority, "state": state, "live": live})
    owner = _owner(name, names, reports, need)
    where = _where(running, unknown)
    degraded = []
    if len(running) > 1:
        degraded.append(f"{name}: {where}")
    elif not running and unknown:
        degraded.append(f"{name}: where it runs is {where}")
    elif not running:
        degraded.append(f"{name}: in service nowhere")
    if not any(b["live"] for b in backups):
        maybe = [b["node"] for b in backups if b["live"] is None]
        why = ", ".join(f"{b['node']} {'failed there' if b['node'] in failed_on else b['state']}" for b in backups
                        if b["live"] is False)  # fmt: skip
        if maybe:
            why = ", ".join(filter(None, [why, f"{', '.join(maybe)} unknown"]))
        what = "no backup known to be live" if maybe else "no live backup"
        degraded.append(f"{name}: {what}" + (f" ({why})" if why else " (extended to no other node)"))
    if owner is not None and not owner["agreed"]:
        degraded.append(
            f"{name}: ownership record {owner['node'] or 'nobody'} (epoch {owner['epoch']}) held by only "
            f"{owner['votes']} of {owner['voters']} voters that answered"
        )
    if owner is not None and running and owner["agreed"] and owner["node"] not in on:
        degraded.append(f"{name}: in service on {', '.join(sorted(on))}, but owned by {owner['node'] or 'nobody'}")
    return {
        "name": name,
        "roots": list(h["roots"]),
        "members": members,
        "priorities": priorities,
        "where": where,
        "running": running,
        "unknown": unknown,
        "owner": owner,
        "backups": backups,
        "resources": resources,
        "blocked": {n: str(r["blocked"][name]) for n, r in sorted(reports.items()) if name in r.get("blocked", {})},
        "degraded": degraded,
    }


def _where(running: list[dict[str, Any]], unknown: list[str]) -> str:
    """Where a hierarchy runs, in words: on one node (with its epoch), on several (!), nowhere, or unknown."""
    shown = [f"{r['node']}" + (f" (epoch {r['epoch']})" if r["epoch"] else " (no claim)") for r in running]
    if len(running) > 1:
        return f"IN SERVICE ON {len(running)} NODES: {', '.join(shown)}"
    if running:
        return f"in service on {shown[0]}"
    if unknown:
        return f"unknown: {', '.join(unknown)} did not say what they run"
    return "in service nowhere"


def _owner(name: str, names: list[str], reports: Mapping[str, Report], need: int) -> dict[str, Any] | None:
    """The record with the highest ballot among the voters that answered, and how many of all voters hold it.

    ``need``: how many a claim needs (a majority of all voters; with quorum_mode tcp_remote or none, of the
    live ones, as :meth:`hakeeper.cluster.quorum.QuorumWatch.voters_needed` counts them).
    """
    records = {n: r["records"][name] for n, r in reports.items() if name in r.get("records", {})}
    if not records:
        return None
    best = max(records.values(), key=lambda r: (int(r["ballot"][0]), str(r["ballot"][1])))
    holders = sorted(n for n, r in records.items() if (r["epoch"], r["owner"]) == (best["epoch"], best["owner"]))
    voters = len(names)
    return {
        "node": best["owner"],
        "epoch": int(best["epoch"]),
        "votes": len(holders),
        "voters": voters,
        "held_by": holders,
        "needed": need,
        "agreed": len(holders) >= need,
    }


def _degraded(
    me: str,
    mine: Report,
    *,
    nodes: list[dict[str, Any]],
    paths: list[dict[str, Any]],
    hierarchies: list[dict[str, Any]],
    reports: Mapping[str, Report],
) -> list[str]:
    lines = []
    q = mine.get("quorum") or {}
    if q.get("ok") is False:
        lines.append(f"no quorum on {me} ({q.get('why')}): it takes nothing over")
    if not mine.get("daemon"):
        lines.append(f"hakeeperd is not running on {me}: only its LCD was read; the other nodes are unknown")
    dead_to: dict[str, set[str]] = {n: {p for p, s in r.get("membership", {}).items() if s == DEAD}
                                     for n, r in reports.items()}  # fmt: skip
    for n in nodes:
        if n["this"]:
            continue
        if n["state"] == DEAD:
            lines.append(f"{n['name']} is DEAD (all paths from {me} DEAD)")
        elif n["state"] == UNKNOWN and mine.get("daemon"):
            lines.append(f"{n['name']} is UNKNOWN to {me} (no path heard yet)")
        if n["state"] != DEAD and not n["answered"] and mine.get("daemon"):
            lines.append(f"{n['name']} did not answer: {n['error']}")
    for p in paths:
        if p["state"] != ALIVE and p["node"] not in dead_to.get(p["from"], set()) and reports[p["from"]].get("daemon"):
            lines.append(f"path {p['from']} -> {p['node']} ({p['local']}/{p['remote']}) {p['state']}")
    for node in sorted(reports):
        for tag, (state, reason) in sorted(reports[node].get("resources", {}).items()):
            if state in PROBLEMS:
                lines.append(f"{tag} {state} on {node}" + (f" ({reason})" if reason else ""))
    for h in hierarchies:
        lines += h["degraded"]
        lines += [f"{h['name']}: blocked on {n}: {why}" for n, why in h["blocked"].items()]
    return lines


# ---------------------------------------------------------------------- as text


def render(status: Mapping[str, Any]) -> list[str]:
    """The view as a person reads it: nodes, paths, quorum, hierarchies, then what is degraded."""
    me = status["node"]
    lines = [f"Cluster status from {me} at {status['time']}"]
    if not status["daemon"]:
        lines.append(f"hakeeperd is not running on {me}: what its LCD says; the other nodes are unknown (see: lkstart)")
    q = status.get("quorum") or {}
    if q.get("ok") is None:
        lines.append(f"Quorum: unknown ({q.get('why')}, quorum_mode={q.get('mode')})")
    else:
        lines.append(f"Quorum: {'yes' if q['ok'] else 'NO'} ({q['why']}, quorum_mode={q['mode']})")
    lines += ["", "Nodes:"]
    width = max(len(n["name"]) for n in status["nodes"])
    for n in status["nodes"]:
        notes = []
        if n["this"]:
            notes.append("this node" + ("" if n["daemon"] else ", hakeeperd not running"))
        if n["witness"]:
            notes.append("witness")
        if not n["answered"] and not n["this"] and status["daemon"] and n["state"] != DEAD:
            notes.append(f"did not answer: {n['error']}")
        lines.append((f"  {n['name']:<{width}}  {n['state']:<7}" + (f"  {'; '.join(notes)}" if notes else "")).rstrip())
    own = [p for p in status["paths"] if p["from"] == me]
    lines += ["", f"Communication paths from {me}:"]
    if own:
        rows = [(p["node"], p["kind"], f"{p['local']}/{p['remote']}", p["state"], str(p["priority"])) for p in own]
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        lines += [f"  {a:<{w[0]}}  {b:<{w[1]}}  {c:<{w[2]}}  {d:<{w[3]}}  {e:>3}" for a, b, c, d, e in rows]
    else:
        lines.append("  (none: see net_create)")
    lines += ["", "Hierarchies:"]
    if not status["hierarchies"]:
        lines.append(
            "  (none extended to more than one node)" if status["daemon"] else "  (none known to this LCD alone)"
        )
    for h in status["hierarchies"]:
        lines.append(f"  {h['name']}: {h['where']}")
        owner = h["owner"]
        if owner is not None:
            agreed = "agreed by" if owner["agreed"] else "NOT agreed: only"
            lines.append(f"    owner: {owner['node'] or 'nobody'} (epoch {owner['epoch']}), {agreed} "
                         f"{owner['votes']} of {owner['voters']} voters")  # fmt: skip
        else:
            lines.append("    owner: no record (never claimed)")
        backups = [
            f"{b['node']} (priority {b['priority']}, {b['state']}"
            + ("" if b["live"] else ", unknown" if b["live"] is None else ", not live")
            + ")"
            for b in h["backups"]
        ]
        lines.append(f"    backups: {', '.join(backups) or 'none'}")
        shown = [r for r in h["resources"] if r["node"] in {x["node"] for x in h["running"]} or r["state"] in PROBLEMS]
        if shown:
            lines.append(
                "    resources: "
                + ", ".join(f"{r['tag']} {r['state']} on {r['node']}" for r in sorted(shown, key=_by_node_tag))
            )
    lines += ["", "Degraded:" if status["degraded"] else "Degraded: nothing"]
    lines += [f"  {line}" for line in status["degraded"]]
    return lines


def _by_node_tag(r: Mapping[str, Any]) -> tuple[str, str]:
    return str(r["node"]), str(r["tag"])


# ---------------------------------------------------------------------- the command


def _check(args: argparse.Namespace) -> None:
    if args.watch is not None and not 0.1 <= args.watch <= 3600:
        raise OutOfRange(f"--watch {args.watch:g} must be within 0.1..3600 s")
    if args.count is not None and args.count < 1:
        raise OutOfRange(f"--count {args.count} must be 1 or more")


async def _status_in_daemon(ctx: Context, args: argparse.Namespace) -> int:
    _check(args)
    if args.local:  # a peer asks for this node's own report
        ctx.print(json.dumps(await daemon_report(ctx.daemon), ensure_ascii=False, separators=(",", ":")))
        return 0
    reports, failures = await gather(ctx.daemon, ctx.actor)
    status = merge(ctx.lcd.local_node, reports, failures, now=time.time())
    ctx.out.write(_shown(status, args, ctx.out))
    return 0


def _shown(status: Mapping[str, Any], args: argparse.Namespace, out: Any) -> str:
    if args.json:
        return dump_json(status, out) + "\n"
    return "".join(line + "\n" for line in render(status))


def once(ctx: Context) -> dict[str, Any]:
    """The view from hakeeperd on this node, or, without it, from this node's LCD alone."""
    answer = forward_to_daemon(ctx.root, "status", ["--json"])
    if answer is None:
        report = lcd_report(ctx.lcd, ctx.root)
        return merge(report["node"], {report["node"]: report}, {}, now=time.time())
    if answer.code != 0:
        raise CommunicationFailed(answer.err.strip().removeprefix("status: ") or f"hakeeperd answered {answer.code}")
    status: dict[str, Any] = json.loads(answer.out)
    return status


@command(
    "status",
    "one view of the whole cluster: nodes, paths, quorum, where each hierarchy runs, its backups, what is degraded",
    arg("--json", action="store_true", help="print the view as JSON (schema: docs/status.md; one line unless "
        "at a terminal)"),
    arg("--watch", nargs="?", type=float, const=2.0, metavar="SECONDS",
        help="redraw the view every SECONDS (default 2) until interrupted"),
    arg("--count", type=int, metavar="N", help="with --watch: stop after N views"),
    arg("--local", action="store_true", help=argparse.SUPPRESS),  # a peer's hakeeperd asks for this node's report
    epilog="Runs on any node, a witness too. hakeeperd here asks every node it does not see DEAD\n"
    "for its own report (all at once, 2 s a path): a node that does not answer is shown as\n"
    "unknown, never as running nothing. Without hakeeperd here, it shows what this node's\n"
    "LCD says, marked as such. 'Degraded' lists what an administrator should act on.\n"
    "With --watch and --json, one JSON document a line.",
    local=True,  # it asks hakeeperd itself, once or again and again (--watch)
    in_daemon=_status_in_daemon,
)  # fmt: skip
def _status(ctx: Context, args: argparse.Namespace) -> int:
    _check(args)
    if args.local:
        report = lcd_report(ctx.lcd, ctx.root)
        ctx.print(json.dumps(report, ensure_ascii=False, separators=(",", ":")))
        return 0
    if args.watch is None:
        ctx.out.write(_shown(once(ctx), args, ctx.out))
        return 0
    terminal = getattr(ctx.out, "isatty", lambda: False)()
    shown = 0
    try:
        while args.count is None or shown < args.count:
            if shown:
                time.sleep(args.watch)
            text = _shown(once(ctx), args, ctx.out)
            if terminal and not args.json:
                text = "\x1b[H\x1b[2J" + text  # redraw in place
            elif shown and not args.json:
                text = "\n" + text
            ctx.out.write(text)
            ctx.out.flush()
            shown += 1
    except KeyboardInterrupt:  # how a watch ends
        return 0
    return 0
