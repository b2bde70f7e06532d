"""How the LCD's rows become the model's objects and back, and the checks of values that several tables share."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from hakeeper.db.model import Resource, check_interval, check_priority, dump_info
from hakeeper.db.states import Init, State, Switchback
from hakeeper.errors import IllegalArgument

if TYPE_CHECKING:
    import enum
    from ipaddress import IPv4Address, IPv6Address

E = TypeVar("E", bound="enum.Enum")

MEASURED = "measured:"  # meta keys of this node's measurements (measured:KIND:TAG), not settings
RESOURCE_COLUMNS = "tag, id, app, type, info, state, reason, init, switchback, check_interval, local_recover"


def check_interval_seconds(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise IllegalArgument(f"quickCheck interval {seconds!r} is not a whole number of seconds")
    return check_interval(seconds)


def lowest_free(taken: set[int]) -> int:
    priority = 1
    while priority in taken:
        priority += 1
    return check_priority(priority)


# A row's enum values by dictionary: calling the enum class costs a listing of 1,000 resources milliseconds.
_STATES: dict[Any, State] = {s.value: s for s in State}
_INITS: dict[Any, Init] = {i.value: i for i in Init}
_SWITCHBACKS: dict[Any, Switchback] = {s.value: s for s in Switchback}


def row_resource(row: tuple[Any, ...]) -> Resource:
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


SPEC_KEYS = ("tag", "id", "app", "type", "info", "init", "switchback", "check_interval", "local_recover")


def resource_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of :meth:`Lcd._new_resource` from a resource as JSON (a change log's, another node's)."""
    if not isinstance(spec, Mapping):
        raise IllegalArgument("a resource to create is a JSON object")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
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
        "init": named(Init, spec.get("init", Init.AUTORES_ISP.name), "initialization"),
        "switchback": named(Switchback, spec.get("switchback", Switchback.INTELLIGENT.name), "switchback"),
        "check_interval": spec.get("check_interval", 120),
        "local_recover": local_recover,
    }


def priorities_of(entries: object, tag: str) -> dict[str, int]:
    """A resource's equivalencies as a change log records them: node -> priority."""
    if not isinstance(entries, Mapping) or not all(
        isinstance(n, str) and isinstance(p, int) and not isinstance(p, bool) for n, p in entries.items()
    ):
        raise IllegalArgument(f"the equivalencies of {tag!r} are not node -> priority")
    return {n: check_priority(p) for n, p in entries.items()}


def named(kind: type[E], name: object, what: str) -> E:
    if isinstance(name, str) and name in kind.__members__:
        return kind[name]
    raise IllegalArgument(f"{what} {name!r} is not one of {'|'.join(kind.__members__)}")


def insert_resource(db: sqlite3.Connection, resource: Resource, ensure_type: bool) -> None:
    if ensure_type:
        db.execute("INSERT OR IGNORE INTO apps (name) VALUES (?)", (resource.app,))
        db.execute("INSERT OR IGNORE INTO types (app, name) VALUES (?, ?)", (resource.app, resource.type))
    db.execute(
        f"INSERT INTO resources ({RESOURCE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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


def delete_resources(db: sqlite3.Connection, tags: list[str]) -> None:
    for tag in tags:
        db.execute("DELETE FROM dependencies WHERE parent = ? OR child = ?", (tag, tag))
        db.execute("DELETE FROM equivalencies WHERE tag = ?", (tag,))
        db.execute("DELETE FROM resources WHERE tag = ?", (tag,))
        # its measurements (measured:KIND:TAG; neither kinds nor tags hold ':')
        db.execute(
            "DELETE FROM meta WHERE substr(key, 1, ?) = ? AND substr(key, -?) = ?",
            (len(MEASURED), MEASURED, len(tag) + 1, f":{tag}"),
        )


MAX_PATH_PRIORITY = 99


def ip_of(text: str) -> IPv4Address | IPv6Address:
    import ipaddress  # only the commands that name addresses need it

    return ipaddress.ip_address(text)


def check_address(text: str, what: str) -> IPv4Address | IPv6Address:
    try:
        return ip_of(text)
    except ValueError:
        raise IllegalArgument(f"{what} {text!r} is not an IP address") from None


def normal_address(text: str) -> str:
    try:
        return str(ip_of(text))
    except ValueError:
        return text
