"""``hakeeper apply``'s change: the LCD made as a file describes it, in ONE change.

:func:`apply` decides, inside the LCD's write transaction, what must change
for the LCD to hold a :class:`~hakeeper.db.desired.Desired` — the steps — and
makes them there, each through the LCD method that makes it alone
(``create_resource``, ``set_info``, ``create_dependency``,
``create_equivalency``, ``remove_resources``…), so each step runs the very
checks it runs alone, against the LCD as the steps before it left it. The
change log records one change, ``apply``, whose arguments are the steps as
each method recorded itself, with the other nodes each step concerns. Nothing
is decided from an earlier read: a command that commits between the file
being read and the transaction is seen, as if it had run first.

What the file leaves out is left as it is; ``prune`` removes the resources,
dependencies and equivalencies it does not name (never a resource in service
here). The order: removals first (they free ids and priorities, and break what
would otherwise close a cycle), then creations and changes.

On another node the same change replays only the steps that concern it
(:func:`replay`): a step's ``nodes`` are the nodes the change of that step
alone would have reached (``hakeeper.cluster.configsync.participants``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hakeeper.db.desired import Desired, ResourceSpec
from hakeeper.db.model import Resource, dump_info, info_text
from hakeeper.db.store import Lcd
from hakeeper.errors import AlreadyExists, DeleteRefused, HakeeperError, IllegalArgument, SystemCallFailed

OP = "apply"

#: The nodes besides this one that a change (op, args) concerns, read in the open transaction.
Concerns = Callable[[str, dict[str, Any]], list[str]]


@dataclass(frozen=True)
class Step:
    """One change the apply makes: an LCD method (``op``, its arguments as its change-log record has them)."""

    op: str
    args: dict[str, Any]
    place: str  # where in the file it comes from, for errors: "resources[3] (web)"
    what: str  # one line of the plan: "create resource web (gen/app, id web)"


@dataclass(frozen=True)
class Made:
    """What a kit made of a new resource's parameters before the transaction (``hakeeper create``'s first half)."""

    id: str
    info: Any


@dataclass
class Outcome:
    steps: list[Step] = field(default_factory=list)
    reached: list[str] = field(default_factory=list)  # the other nodes the change concerns
    removed: list[Resource] = field(default_factory=list)  # pruned resources, parents first
    seq: int | None = None  # the change's sequence number (None: nothing changed, or a dry run)


def apply(
    lcd: Lcd,
    desired: Desired,
    *,
    prune: bool = False,
    made: Mapping[str, Made] | None = None,
    concerns: Concerns = lambda op, args: [],
    dry: bool = False,
    alone: Callable[[list[str]], HakeeperError] | None = None,
) -> Outcome:
    """Make the LCD hold ``desired`` in one change (``dry``: decide and check everything, then roll back).

    ``made``: the id and info the kits made for resources given by ``params``
    (a dry run has none: such a resource is checked with its tag as id).
    ``alone``: when set, a change that concerns other nodes is refused with
    the error it returns, after every check (no hakeeperd to reach them).
    """
    outcome = Outcome()

    def work() -> dict[str, Any] | None:
        outcome.steps = plan(lcd, desired, prune=prune, made=made or {}, dry=dry)
        outcome.removed = _pruned(lcd, outcome.steps)
        recorded: list[dict[str, Any]] = []
        reached: set[str] = set()
        for step in outcome.steps:
            nodes = sorted(concerns(step.op, step.args))
            try:
                lcd.replay(step.op, step.args)
            except HakeeperError as exc:
                raise type(exc)(f"{step.place}: {exc}") from None
            op, args = lcd.steps_made()[-1]
            recorded.append({"op": op, "args": args, "nodes": nodes})
            reached.update(nodes)
        outcome.reached = sorted(reached)
        if reached and alone is not None:
            raise alone(outcome.reached)
        if not recorded:
            return None
        outcome.seq = None if dry else lcd.last_seq() + 1  # its record comes next, in this transaction
        return {"origin": lcd.local_node, "steps": recorded}

    lcd.in_one_change(OP, work, dry=dry)
    return outcome


def replay(lcd: Lcd, origin: str, steps: Sequence[Mapping[str, Any]]) -> None:
    """Apply an ``apply`` change as recorded (by node ``origin``): here, only the steps that concern this node."""
    if not isinstance(origin, str) or not isinstance(steps, list):
        raise IllegalArgument("an apply change needs its origin and its steps")
    here = lcd.local_node

    def work() -> dict[str, Any]:
        for step in steps:
            if not isinstance(step, Mapping) or not isinstance(step.get("args"), dict):
                raise IllegalArgument(f"an apply step is not an operation with its arguments: {step!r}")
            if here == origin or here in step.get("nodes", ()):
                lcd.replay(str(step.get("op")), dict(step["args"]))
        return {"origin": origin, "steps": list(steps)}

    lcd.in_one_change(OP, work)


# ---------------------------------------------------------------------- deciding


def plan(lcd: Lcd, desired: Desired, *, prune: bool, made: Mapping[str, Made], dry: bool) -> list[Step]:
    """The steps that make the LCD hold ``desired``, from the LCD as it is now (read in the open transaction)."""
    current = {r.tag: r for r in lcd.resources()}
    named = {r.tag for r in desired.resources}
    doomed = sorted(set(current) - named) if prune else []
    for tag in doomed:
        if current[tag].state.in_service:
            raise DeleteRefused(
                f"--prune: {tag!r} is not in the file but is {current[tag].state.name} here: take it out of "
                f"service first (perform_action -t {tag} -a remove), or name it in the file; nothing was changed"
            )
    gone = set(doomed)
    named_tags = [(d.place, key, getattr(d, key)) for d in desired.dependencies for key in ("parent", "child")]
    named_tags += [(e.place, "tag", e.tag) for e in desired.equivalencies]
    for place, key, tag in named_tags:
        if tag in gone:
            raise IllegalArgument(f"{place}.{key}: {tag!r} is not among the file's resources, and --prune removes it")
    steps: list[Step] = []
    steps += _dependency_removals(lcd, desired, prune, gone)
    steps += _equivalency_steps(lcd, desired, prune, gone, removals=True)
    if doomed:
        what = f"remove resources {', '.join(doomed)} (not in the file)"
        steps.append(Step("remove_resources", {"tags": doomed}, "--prune", what))
    for spec in desired.resources:
        if spec.tag in current:
            steps += _changes(spec, current[spec.tag], made)
        else:
            steps.append(_creation(spec, made, dry))
    edges = set(lcd.edges())
    for dep in desired.dependencies:
        if (dep.parent, dep.child) not in edges:
            args = {"parent": dep.parent, "child": dep.child}
            steps.append(Step("create_dependency", args, dep.place, f"create dependency {dep.parent} -> {dep.child}"))
    steps += _equivalency_steps(lcd, desired, prune, gone, removals=False)
    return steps


def _pruned(lcd: Lcd, steps: list[Step]) -> list[Resource]:
    tags = [t for s in steps if s.op == "remove_resources" for t in s.args["tags"]]
    return [lcd.resource(tag) for tag in lcd.removal_order(tags)] if tags else []


def _creation(spec: ResourceSpec, made: Mapping[str, Made], dry: bool) -> Step:
    place = f"{spec.place} ({spec.tag})"
    args: dict[str, Any] = {"tag": spec.tag, "app": spec.app, "type": spec.type}
    if spec.params is None:
        args.update(id=spec.id if spec.id is not None else spec.tag, info=spec.info if spec.has_info else "")
    elif spec.tag in made:
        args.update(id=made[spec.tag].id, info=made[spec.tag].info, ensure_type=True)
    elif dry:  # the kit makes id and info when it creates the resource; a dry run creates nothing
        args.update(id=spec.id if spec.id is not None else spec.tag, info={}, ensure_type=True)
    else:
        raise SystemCallFailed(f"{place}: removed by another command while apply prepared it; nothing was "
                               "changed (apply again)")  # fmt: skip
    args.update(
        init=(spec.init.name if spec.init else "AUTORES_ISP"),
        switchback=(spec.switchback.name if spec.switchback else "INTELLIGENT"),
        check_interval=spec.check_interval if spec.check_interval is not None else 120,
        local_recover=spec.local_recover if spec.local_recover is not None else True,
    )
    source = "kit parameters" if spec.params is not None else f"id {args['id']}"
    return Step("create_resource", args, place, f"create resource {spec.tag} ({spec.app}/{spec.type}, {source})")


def _changes(spec: ResourceSpec, now: Resource, made: Mapping[str, Made]) -> list[Step]:
    """The settings of an existing resource that differ from the file's; a kind or id that differs is refused."""
    place = f"{spec.place} ({spec.tag})"
    if spec.params is not None and spec.tag in made:
        raise AlreadyExists(f"{place}: created by another command while apply prepared it; nothing was changed "
                            "(apply again)")  # fmt: skip
    if (now.app, now.type) != (spec.app, spec.type):
        raise IllegalArgument(
            f"{spec.place}.type: {spec.tag!r} exists as {now.app}/{now.type}, not {spec.app}/{spec.type}; a "
            "resource's application and type cannot change (remove it, or give another tag)"
        )
    if spec.id is not None and spec.id != now.id:
        raise IllegalArgument(
            f"{spec.place}.id: {spec.tag!r} exists with id {now.id!r}, not {spec.id!r}; an id cannot change "
            "(remove the resource and create it again)"
        )
    steps = []
    if spec.has_info and dump_info(spec.info) != dump_info(now.info):
        shown = f"{_brief(info_text(now.info))} -> {_brief(info_text(spec.info))}"
        steps.append(Step("set_info", {"tag": spec.tag, "info": spec.info}, place, f"change {spec.tag}: info {shown}"))
    settings: list[tuple[str, str, Any, Any, str]] = [
        ("set_init", "init", spec.init, now.init, "init"),
        ("set_switchback", "switchback", spec.switchback, now.switchback, "switchback"),
        ("set_check_interval", "seconds", spec.check_interval, now.check_interval, "quickcheck_interval"),
        ("set_local_recover", "enabled", spec.local_recover, now.local_recover, "local_recover"),
    ]
    for op, key, wanted, there, name in settings:
        if wanted is not None and wanted != there:
            value = getattr(wanted, "name", wanted)
            shown = f"{getattr(there, 'name', there)} -> {value}"
            steps.append(Step(op, {"tag": spec.tag, key: value}, place, f"change {spec.tag}: {name} {shown}"))
    return steps


def _brief(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _dependency_removals(lcd: Lcd, desired: Desired, prune: bool, gone: set[str]) -> list[Step]:
    """With --prune, the dependencies the file does not name (those of a removed parent go with it)."""
    if not prune:
        return []
    named = {(d.parent, d.child) for d in desired.dependencies}
    doomed = [(p, c) for p, c in sorted(lcd.edges()) if (p, c) not in named and p not in gone]
    return [
        Step(
            "remove_dependency", {"parent": p, "child": c}, "--prune", f"remove dependency {p} -> {c} (not in the file)"
        )
        for p, c in doomed
    ]


@dataclass(frozen=True)
class _Row:
    priority: int
    remote: str


def _equivalency_steps(lcd: Lcd, desired: Desired, prune: bool, gone: set[str], *, removals: bool) -> list[Step]:
    """The removals (``removals``) or the creations that make each resource's equivalencies the file's.

    A resource's rows are one per node (priority, its tag there), this node's
    among them; the LCD's methods change them from this node (the anchor: the
    local node, or for a resource this node has no row of, its first node).
    A row that differs is removed and made again; when the anchor's own
    priority changes, all its other rows are made again (the LCD drops the
    anchor's row with its last other one, and the first creation sets it anew).
    """
    current: dict[str, dict[str, _Row]] = {}
    for tag, node, priority, remote in lcd.equivalency_rows():
        current.setdefault(tag, {})[node] = _Row(priority, remote)
    wanted: dict[str, dict[str, _Row]] = {}
    places: dict[tuple[str, str], str] = {}
    for e in desired.equivalencies:
        wanted.setdefault(e.tag, {})[e.node] = _Row(e.priority, e.remote_tag)
        places[e.tag, e.node] = e.place
    tags = sorted((set(wanted) | (set(current) if prune else set())) - gone)
    steps: list[Step] = []
    for tag in tags:
        have, want = current.get(tag, {}), wanted.get(tag, {})
        anchor = _anchor(lcd.local_node, have, want)
        kept = {n: r for n, r in have.items() if n != anchor and n not in want and not prune}
        others = {**kept, **{n: r for n, r in want.items() if n != anchor}}
        if anchor in want and not others:
            raise IllegalArgument(
                f"{places[tag, anchor]}: {tag!r} on {anchor} alone is no equivalency: name the other nodes it may "
                "run on, or leave the row out"
            )
        rebuild = anchor in have and anchor in want and have[anchor].priority != want[anchor].priority
        doomed = [n for n in have if n != anchor and (rebuild or (n in want and have[n] != want[n]) or n not in others)]
        if removals:
            for node in sorted(doomed, key=lambda n: (have[n].priority, n)):
                if node in want:
                    place, why = places[tag, node], ""
                elif prune:
                    place, why = "--prune", " (not in the file)"
                else:
                    place, why = f"the equivalencies of {tag}", f" (made again: {anchor}'s priority changes)"
                what = f"remove equivalency {tag} on {node}{why}"
                removal = {"tag": tag, "other_node": node, "node": anchor}
                steps.append(Step("remove_equivalency", removal, f"{place} ({tag} on {node})", what))
            continue
        left = {n for n in have if n not in doomed}  # what stays after the removals (the anchor's row, if any other)
        anchored = anchor in left and bool(left - {anchor})
        made = [n for n in others if n not in left]
        for node in sorted(made, key=lambda n: (others[n].priority, n)):
            row = others[node]
            args: dict[str, Any] = {"tag": tag, "other_node": node, "other_tag": row.remote,
                                    "other_priority": row.priority, "node": anchor}  # fmt: skip
            if not anchored and anchor in want:
                args["priority"] = want[anchor].priority
            anchored = True
            there = f" as {row.remote}" if row.remote != tag else ""
            own = f"; {anchor}: priority {args['priority']}" if "priority" in args else ""
            place = places.get((tag, node), f"the equivalencies of {tag}")
            steps.append(Step("create_equivalency", args, f"{place} ({tag} on {node})",
                              f"create equivalency {tag} on {node}{there} (priority {row.priority}{own})"))  # fmt: skip
    return steps


def _anchor(local: str, have: Mapping[str, _Row], want: Mapping[str, _Row]) -> str:
    """The node whose row the LCD's methods change a resource's rows from: this one, as eqv_create does,
    unless the resource has rows that leave this node out (made with eqv_create -s): then its first."""
    if local in have or local in want or not have:
        return local
    return min(have, key=lambda n: (have[n].priority, n))


def summary(outcome: Outcome) -> str:
    """How many of what the steps create, change and remove: ``2 resources created, 1 changed; ...``."""
    counts: dict[str, dict[str, int]] = {}
    for step in outcome.steps:
        verb, _, kind = step.op.partition("_")
        noun = {"resource": "resources", "resources": "resources", "dependency": "dependencies",
                "equivalency": "equivalencies"}.get(kind, "resources")  # fmt: skip
        done = {"create": "created", "remove": "removed"}.get(verb, "changed")
        number = len(step.args["tags"]) if step.op == "remove_resources" else 1
        counts.setdefault(noun, {}).setdefault(done, 0)
        counts[noun][done] += number
    parts = []
    for noun in ("resources", "dependencies", "equivalencies"):
        if noun in counts:
            told = ", ".join(f"{n} {done}" for done, n in counts[noun].items())
            parts.append(f"{noun}: {told}")
    return "; ".join(parts) or "nothing to change"
