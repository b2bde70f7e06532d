"""The configuration file of ``hakeeper apply`` and ``hakeeper export``: resources, dependencies, equivalencies.

A file describes what the LCD should hold (docs/apply.md has the format, with
examples). This module reads one (JSON, or YAML when PyYAML is installed),
checks every field against the LCD's rules before anything is changed, and
turns it into a :class:`Desired`; and it writes the LCD's current
configuration in the same format (:func:`document`), so that a file exported
and applied again changes nothing. Every error names the place in the file
(``resources[3].tag: ...``) and carries the exit code of the check it fails.

What a file holds is configuration only: never a resource's state (that is
what runs), never what a kit keeps outside the LCD (the copies of gen/app's
scripts), never nodes or communication paths.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hakeeper.db import graph
from hakeeper.db.model import check_id, check_interval, check_name, check_priority, check_tag, dump_info
from hakeeper.db.states import Init, Switchback
from hakeeper.db.store import Lcd
from hakeeper.errors import AlreadyExists, HakeeperError, IllegalArgument

FORMAT_VERSION = 1
SECTIONS = ("resources", "dependencies", "equivalencies")
RESOURCE_KEYS = (
    "tag",
    "app",
    "type",
    "id",
    "info",
    "params",
    "init",
    "switchback",
    "quickcheck_interval",
    "local_recover",
)
DEPENDENCY_KEYS = ("parent", "child")
EQUIVALENCY_KEYS = ("tag", "node", "priority", "other_tag")
#: Keys of ``ins_list --json`` that are no configuration: said so, not "unknown".
RUNTIME_KEYS = {"state": "what runs", "reason": "why it is in its state"}


@dataclass(frozen=True)
class ResourceSpec:
    """One resource as the file describes it; ``None`` for a field the file leaves out (not managed)."""

    place: str
    tag: str
    app: str
    type: str
    id: str | None = None  # None: the tag (with info), or the kit's choice (with params)
    info: Any = None
    has_info: bool = False  # info given (it may be null: JSON's null is stored as such)
    params: dict[str, str] | None = None  # a kit's creation parameters (as hakeeper create NAME=VALUE)
    init: Init | None = None
    switchback: Switchback | None = None
    check_interval: int | None = None
    local_recover: bool | None = None


@dataclass(frozen=True)
class DependencySpec:
    place: str
    parent: str
    child: str


@dataclass(frozen=True)
class EquivalencySpec:
    """Resource ``tag`` may run on ``node`` with ``priority``, where its tag is ``other_tag`` (None: the same)."""

    place: str
    tag: str
    node: str
    priority: int
    other_tag: str | None = None

    @property
    def remote_tag(self) -> str:
        return self.other_tag if self.other_tag is not None else self.tag


@dataclass(frozen=True)
class Desired:
    resources: tuple[ResourceSpec, ...] = ()
    dependencies: tuple[DependencySpec, ...] = ()
    equivalencies: tuple[EquivalencySpec, ...] = ()


class _Object(dict[str, Any]):
    """A JSON object or YAML mapping as read, remembering a key given twice (the parsers keep the last)."""

    twice: str | None = None


def _pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    for key, value in pairs:
        if key in obj and obj.twice is None:
            obj.twice = key
        obj[key] = value
    return obj


# ---------------------------------------------------------------------- reading


def load(data: bytes) -> Desired:
    """Read and check a configuration file's content."""
    return validate(parse(data))


def parse(data: bytes) -> Any:
    """The document in ``data``: JSON when it begins with '{' (or '['), else YAML."""
    if not data.strip():
        raise IllegalArgument("the file is empty: it needs at least 'version: 1'")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IllegalArgument(f"the file is not UTF-8 text (byte {exc.start} is not)") from None
    text = text.removeprefix("\ufeff")
    if text.lstrip()[:1] in ("{", "["):
        return _parse_json(text)
    return _parse_yaml(text)


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise IllegalArgument(f"not valid JSON: line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise IllegalArgument("the JSON is nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise IllegalArgument(f"not valid JSON: {name} is not a JSON number")


def _parse_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise IllegalArgument(
            "the file is not JSON (it does not begin with '{'), and YAML needs PyYAML, which is not installed here"
        ) from None

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when there is one

    class Loader(base):  # type: ignore[misc,valid-type]
        """YAML's safe subset, remembering keys given twice."""

    def mapping(loader: Any, node: Any) -> _Object:
        loader.flatten_mapping(node)
        pairs = [(loader.construct_object(k, deep=True), loader.construct_object(v, deep=True)) for k, v in node.value]
        for key, _ in pairs:
            if not isinstance(key, str):
                mark = node.start_mark
                raise IllegalArgument(f"line {mark.line + 1}: the key {key!r} is not a string")
        return _pairs(pairs)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        for event in yaml.parse(text, Loader=base):  # an alias can make a small file expand without bound
            if isinstance(event, yaml.AliasEvent):
                mark = event.start_mark
                raise IllegalArgument(
                    f"not accepted YAML: line {mark.line + 1}, column {mark.column + 1}: "
                    "an alias (*name); write the value out"
                )
        documents = list(yaml.load_all(text, Loader=Loader))  # a safe loader: plain data only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise IllegalArgument(f"not valid YAML: {where}{problem}") from None
    except RecursionError:
        raise IllegalArgument("the YAML is nested too deeply") from None
    if len(documents) != 1:
        raise IllegalArgument(f"the file holds {len(documents)} YAML documents; give one")
    return documents[0]


# ---------------------------------------------------------------------- checking


def validate(doc: Any) -> Desired:
    """Check a document against the format and the LCD's rules for each field: a :class:`Desired`."""
    top = _mapping(doc, "the file", ("version", *SECTIONS))
    if "version" not in top:
        raise IllegalArgument(f"the file has no 'version' (write 'version: {FORMAT_VERSION}' first)")
    version = top["version"]
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise IllegalArgument(f"version: {version!r} is not a version this hakeeper knows ({FORMAT_VERSION})")
    resources = tuple(_resource(item, f"resources[{i}]") for i, item in enumerate(_list(top, "resources")))
    dependencies = tuple(_dependency(item, f"dependencies[{i}]") for i, item in enumerate(_list(top, "dependencies")))
    equivalencies = tuple(
        _equivalency(item, f"equivalencies[{i}]") for i, item in enumerate(_list(top, "equivalencies"))
    )
    _unique(resources, dependencies, equivalencies)
    return Desired(resources, dependencies, equivalencies)


def _mapping(value: Any, place: str, keys: tuple[str, ...], required: tuple[str, ...] = ()) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise IllegalArgument(f"{place}: expected a mapping of {', '.join(keys)}, not {_kind(value)}")
    twice = getattr(value, "twice", None)
    if twice is not None:
        raise AlreadyExists(f"{place}: key {twice!r} is given twice")
    for key in value:
        if key in RUNTIME_KEYS and place.startswith("resources["):
            raise IllegalArgument(
                f"{place}.{key}: a resource's {key} is {RUNTIME_KEYS[key]}, not configuration: leave it out "
                "(perform_action and ins_setstate change it)"
            )
        if key not in keys:
            close = difflib.get_close_matches(str(key), keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(keys)})"
            raise IllegalArgument(f"{place}: unknown key {key!r}{hint}")
    for key in required:
        if key not in value:
            raise IllegalArgument(f"{place}: {key} is missing")
    return value


def _list(top: Mapping[str, Any], key: str) -> list[Any]:
    value = top.get(key, [])
    if value is None:  # YAML's "resources:" with nothing after it
        return []
    if not isinstance(value, list):
        raise IllegalArgument(f"{key}: expected a list, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({value!r})"
    names = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "a mapping"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return f"{name} ({_short(value)})" if kind in (str, int, float) else name
    return f"a {type(value).__name__}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _string(value: Any, place: str) -> str:
    if not isinstance(value, str):
        raise IllegalArgument(f"{place}: expected a string, not {_kind(value)}")
    return value


def _checked(place: str, check: Any, *args: Any) -> Any:
    """``check(*args)`` with the place in the file before its message (same error, same exit code)."""
    try:
        return check(*args)
    except HakeeperError as exc:
        raise type(exc)(f"{place}: {exc}") from None


def _resource(item: Any, place: str) -> ResourceSpec:
    spec = _mapping(item, place, RESOURCE_KEYS, ("tag", "app", "type"))
    tag = _checked(f"{place}.tag", check_tag, _string(spec["tag"], f"{place}.tag"))
    app = _checked(f"{place}.app", check_name, _string(spec["app"], f"{place}.app"), "application")
    rtype = _checked(f"{place}.type", check_name, _string(spec["type"], f"{place}.type"), "resource type")
    rid = None
    if "id" in spec:
        rid = _checked(f"{place}.id", check_id, _string(spec["id"], f"{place}.id"))
    if "info" in spec and "params" in spec:
        raise IllegalArgument(
            f"{place}: give info (the LCD's record, as ins_create -v) or params (the kit's, as hakeeper create), "
            "not both"
        )
    info = spec.get("info")
    if "info" in spec:
        _json_value(info, f"{place}.info")
        _checked(f"{place}.info", dump_info, info)
    params = _params(spec["params"], f"{place}.params") if "params" in spec else None
    interval = None
    if "quickcheck_interval" in spec:
        seconds = _integer(spec, "quickcheck_interval", place)
        interval = _checked(f"{place}.quickcheck_interval", check_interval, seconds)
    local_recover = spec.get("local_recover")
    if "local_recover" in spec and not isinstance(local_recover, bool):
        raise IllegalArgument(f"{place}.local_recover: expected true or false, not {_kind(local_recover)}")
    return ResourceSpec(
        place,
        tag,
        app,
        rtype,
        id=rid,
        info=info,
        has_info="info" in spec,
        params=params,
        init=_enum(Init, spec, "init", place),
        switchback=_enum(Switchback, spec, "switchback", place),
        check_interval=interval,
        local_recover=local_recover,
    )


def _integer(spec: Mapping[str, Any], key: str, place: str) -> int:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise IllegalArgument(f"{place}.{key}: expected a whole number, not {_kind(value)}")
    return value


def _enum(kind: type[Init] | type[Switchback], spec: Mapping[str, Any], key: str, place: str) -> Any:
    if key not in spec:
        return None
    value = spec[key]
    if isinstance(value, str) and value in kind.__members__:
        return kind[value]
    raise IllegalArgument(f"{place}.{key}: {_short(value)} is not one of {' | '.join(kind.__members__)}")


def _params(value: Any, place: str) -> dict[str, str]:
    """A kit's parameters as ``hakeeper create`` takes them (NAME=VALUE): the kit checks them."""
    if not isinstance(value, dict):
        raise IllegalArgument(f"{place}: expected a mapping of NAME: VALUE, not {_kind(value)}")
    if getattr(value, "twice", None) is not None:
        raise AlreadyExists(f"{place}: parameter {value.twice!r} is given twice")  # type: ignore[attr-defined]
    texts: dict[str, str] = {}
    for name, text in value.items():
        if isinstance(text, bool):
            texts[name] = "yes" if text else "no"
        elif isinstance(text, int | str):
            texts[name] = str(text)
        else:
            raise IllegalArgument(f"{place}.{name}: expected a string, a whole number or a boolean, not {_kind(text)}")
    return texts


def _json_value(value: Any, place: str, depth: int = 0) -> None:
    """Refuse what JSON cannot hold (YAML's dates, binary, sets; NaN): info is kept as JSON."""
    if depth > 100:
        raise IllegalArgument(f"{place}: nested too deeply")
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise IllegalArgument(f"{place}: {value!r} is not a JSON number")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _json_value(item, f"{place}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        if getattr(value, "twice", None) is not None:
            raise AlreadyExists(f"{place}: key {value.twice!r} is given twice")  # type: ignore[attr-defined]
        for key, item in value.items():
            _json_value(item, f"{place}.{key}", depth + 1)
        return
    raise IllegalArgument(f"{place}: {_kind(value)} cannot be stored as JSON")


def _dependency(item: Any, place: str) -> DependencySpec:
    spec = _mapping(item, place, DEPENDENCY_KEYS, DEPENDENCY_KEYS)
    parent = _checked(f"{place}.parent", check_tag, _string(spec["parent"], f"{place}.parent"))
    child = _checked(f"{place}.child", check_tag, _string(spec["child"], f"{place}.child"))
    if parent == child:
        raise IllegalArgument(f"{place}: {parent!r} cannot depend on itself")
    return DependencySpec(place, parent, child)


def _equivalency(item: Any, place: str) -> EquivalencySpec:
    spec = _mapping(item, place, EQUIVALENCY_KEYS, ("tag", "node", "priority"))
    tag = _checked(f"{place}.tag", check_tag, _string(spec["tag"], f"{place}.tag"))
    node = _checked(f"{place}.node", check_name, _string(spec["node"], f"{place}.node"), "node name")
    priority = _checked(f"{place}.priority", check_priority, _integer(spec, "priority", place))
    other = None
    if "other_tag" in spec:
        other = _checked(f"{place}.other_tag", check_tag, _string(spec["other_tag"], f"{place}.other_tag"), "other tag")
    return EquivalencySpec(place, tag, node, priority, other)


def _unique(
    resources: tuple[ResourceSpec, ...],
    dependencies: tuple[DependencySpec, ...],
    equivalencies: tuple[EquivalencySpec, ...],
) -> None:
    """Nothing given twice, and no dependency cycle among the file's own dependencies."""
    tags: dict[str, str] = {}
    ids: dict[str, str] = {}
    for r in resources:
        if r.tag in tags:
            raise AlreadyExists(f"{r.place}.tag: {r.tag!r} is given twice (also {tags[r.tag]})")
        tags[r.tag] = r.place
        rid = r.id if r.id is not None else (r.tag if r.params is None else None)
        if rid is not None:
            if rid in ids:
                raise AlreadyExists(f"{r.place}.id: id {rid!r} is given twice (also {ids[rid]})")
            ids[rid] = r.place
    pairs: dict[tuple[str, str], str] = {}
    for d in dependencies:
        if (d.parent, d.child) in pairs:
            raise AlreadyExists(f"{d.place}: {d.parent} -> {d.child} is given twice (also {pairs[d.parent, d.child]})")
        pairs[d.parent, d.child] = d.place
    edges = list(pairs)
    on_cycle = graph.cyclic(edges, {t for edge in edges for t in edge})
    if on_cycle:
        raise IllegalArgument(f"dependencies: {', '.join(on_cycle)} depend on each other in a cycle")
    rows: dict[tuple[str, str], str] = {}
    priorities: dict[tuple[str, int], str] = {}
    for e in equivalencies:
        if (e.tag, e.node) in rows:
            raise AlreadyExists(f"{e.place}: {e.tag!r} on {e.node} is given twice (also {rows[e.tag, e.node]})")
        rows[e.tag, e.node] = e.place
        if (e.tag, e.priority) in priorities:
            raise AlreadyExists(
                f"{e.place}.priority: {e.tag!r} has priority {e.priority} on two nodes "
                f"(also {priorities[e.tag, e.priority]})"
            )
        priorities[e.tag, e.priority] = e.place


# ---------------------------------------------------------------------- writing


def document(lcd: Lcd) -> dict[str, Any]:
    """The LCD's configuration as a file of this format: applying it to the same LCD changes nothing."""
    resources = [
        {
            "tag": r.tag,
            "app": r.app,
            "type": r.type,
            "id": r.id,
            "info": r.info,
            "init": r.init.name,
            "switchback": r.switchback.name,
            "quickcheck_interval": r.check_interval,
            "local_recover": r.local_recover,
        }
        for r in lcd.resources()
    ]
    dependencies = [{"parent": d.parent, "child": d.child} for d in lcd.dependencies()]
    equivalencies = []
    for tag, node, priority, remote in lcd.equivalency_rows():
        row: dict[str, Any] = {"tag": tag, "node": node, "priority": priority}
        if remote != tag:
            row["other_tag"] = remote
        equivalencies.append(row)
    return {"version": FORMAT_VERSION, "resources": resources, "dependencies": dependencies,
            "equivalencies": equivalencies}  # fmt: skip


YAML_HEADER = "# hakeeper configuration: hakeeper apply FILE makes the LCD hold it (docs/apply.md)\n"


def dump(doc: Mapping[str, Any], fmt: str) -> str:
    """``doc`` as the text of a file: ``json`` or ``yaml``."""
    if fmt == "json":
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    try:
        import yaml
    except ImportError:
        raise IllegalArgument("YAML needs PyYAML, which is not installed here: use --format json") from None
    text: str = yaml.safe_dump(dict(doc), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return YAML_HEADER + text
