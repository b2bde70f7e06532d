"""Records of the LCD and the rules their fields obey.

Records are frozen dataclasses: what a reader gets is a snapshot, never a live
row. Validation functions raise :mod:`hakeeper.errors` exceptions whose
messages name the offending value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from hakeeper.db.states import EqvKind, Init, State, Switchback
from hakeeper.errors import IllegalArgument, OutOfRange

MAX_TAG = 256
MAX_ID = 256
MAX_NAME = 64
MAX_FLAG = 256
MAX_REASON = 1024
MAX_INFO = 65536
MIN_PRIORITY = 1
MAX_PRIORITY = 1024
MAX_CHECK_INTERVAL = 86400
DEFAULT_CHECK_INTERVAL = 120

_TAG_FORBIDDEN = frozenset("+;:!@#$*= ")


def check_tag(tag: str, what: str = "tag") -> str:
    """Check a resource tag against LifeKeeper's rules and return it.

    At most 256 characters; none of ``+ ; : ! @ # $ * =`` or space; not starting
    with ``.`` or ``/``; no control characters. Multi-byte characters are allowed.
    """
    if not tag:
        raise IllegalArgument(f"{what} is empty")
    if len(tag) > MAX_TAG:
        raise IllegalArgument(f"{what} {_show(tag)} is longer than {MAX_TAG} characters")
    if tag[0] in "./":
        raise IllegalArgument(f"{what} {_show(tag)} must not start with '{tag[0]}'")
    bad = sorted({c for c in tag if c in _TAG_FORBIDDEN or not c.isprintable()})
    if bad:
        shown = " ".join("space" if c == " " else repr(c)[1:-1] for c in bad)
        raise IllegalArgument(f"{what} {_show(tag)} contains characters not allowed in a tag: {shown}")
    return tag


def check_id(rid: str) -> str:
    """Check a resource id: non-empty, printable, at most 256 characters."""
    if not rid:
        raise IllegalArgument("id is empty")
    if len(rid) > MAX_ID:
        raise IllegalArgument(f"id {_show(rid)} is longer than {MAX_ID} characters")
    if not rid.isprintable():
        raise IllegalArgument(f"id {_show(rid)} contains control characters")
    return rid


def check_name(name: str, what: str) -> str:
    """Check an application, resource type or node name: letters, digits, ``-_.``."""
    if not name:
        raise IllegalArgument(f"{what} is empty")
    if len(name) > MAX_NAME:
        raise IllegalArgument(f"{what} {_show(name)} is longer than {MAX_NAME} characters")
    if not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name) or name[0] in ".-":
        raise IllegalArgument(f"{what} {_show(name)} may only hold letters, digits, '-', '_' and '.'")
    return name


def check_flag(flag: str) -> str:
    """Check an operation flag name: printable, no white space, at most 256 characters."""
    if not flag:
        raise IllegalArgument("flag is empty")
    if len(flag) > MAX_FLAG:
        raise IllegalArgument(f"flag {_show(flag)} is longer than {MAX_FLAG} characters")
    if not flag.isprintable() or any(c.isspace() for c in flag):
        raise IllegalArgument(f"flag {_show(flag)} contains white space or control characters")
    return flag


#: Control characters (C0, DEL, C1) and the Unicode line and paragraph separators: none may be
#: stored in a free-text field, so that field output (``ins_list``: one record a line, fields
#: separated by ^A) can never be broken by a field's content.
CONTROL_CHARS = "\x00-\x1f\x7f-\x9f\u2028\u2029"  # as a regular expression's character class
_CONTROL = re.compile(f"[{CONTROL_CHARS}]")


def check_text(text: str, what: str) -> str:
    """Refuse control characters (the field separator ^A, tabs, newlines...) in a free-text field."""
    found = _CONTROL.search(text)
    if found is not None:
        shown = repr(found.group())[1:-1]
        raise IllegalArgument(f"{what} holds a control character ({shown}); it must be one line of printable text")
    return text


def check_reason(reason: str) -> str:
    if len(reason) > MAX_REASON:
        raise IllegalArgument(f"reason is longer than {MAX_REASON} characters")
    return check_text(reason, "reason")


def as_reason(text: str) -> str:
    """A message made by a program (a kit's, a script's last line) as a reason the LCD accepts.

    Control characters are shown escaped (``\\x1b``) and a message too long is cut, so that
    recording why a resource failed never fails itself.
    """
    clean = escape_controls(text)
    return clean if len(clean) <= MAX_REASON else clean[: MAX_REASON - 3] + "..."


def escape_controls(text: str) -> str:
    """``text`` with its control characters shown escaped (for text stored before they were refused)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def check_priority(priority: int) -> int:
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise OutOfRange(f"priority {priority} is outside {MIN_PRIORITY}..{MAX_PRIORITY}")
    return priority


def check_interval(seconds: int) -> int:
    if not 0 <= seconds <= MAX_CHECK_INTERVAL:
        raise OutOfRange(f"quickCheck interval {seconds} s is outside 0..{MAX_CHECK_INTERVAL} (0 turns it off)")
    return seconds


def parse_info(text: str) -> Any:
    """Turn an ``-v`` argument into the info value stored in the LCD.

    A JSON object or array is stored as such (kits keep their data that way);
    anything else is kept as the plain string LifeKeeper scripts expect.
    """
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.loads(stripped)
        except ValueError as exc:
            raise IllegalArgument(f"info looks like JSON but is not valid JSON: {exc}") from None
        except RecursionError:
            raise IllegalArgument("info is JSON nested too deeply") from None
    return text


def dump_info(info: Any) -> str:
    """The JSON text stored for an info value; checks its size, and that a plain string is one printable line.

    (In a JSON object or array, control characters are escaped by JSON itself when printed.)
    """
    if isinstance(info, str):
        check_text(info, "info")
    text = json.dumps(info, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_INFO:
        raise IllegalArgument(f"info is larger than {MAX_INFO} characters")
    return text


def info_text(info: Any) -> str:
    """How an info value is printed: a string as it is, anything else as JSON."""
    return info if isinstance(info, str) else json.dumps(info, separators=(",", ":"), ensure_ascii=False)


def _show(value: str) -> str:
    """A value quoted for a message, shortened when it is long."""
    shown = value if len(value) <= 60 else value[:57] + "..."
    return repr(shown)


@dataclass(frozen=True)
class Node:
    name: str
    local: bool = False


@dataclass(frozen=True)
class ResourceType:
    app: str
    type: str


@dataclass(frozen=True)
class Resource:
    tag: str
    id: str
    app: str
    type: str
    info: Any = ""
    state: State = State.ILLSTATE
    reason: str = ""
    init: Init = Init.INIT_ISP
    switchback: Switchback = Switchback.INTELLIGENT
    check_interval: int = DEFAULT_CHECK_INTERVAL
    local_recover: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "id": self.id,
            "app": self.app,
            "type": self.type,
            "info": self.info,
            "state": self.state.name,
            "reason": self.reason,
            "init": self.init.name,
            "switchback": self.switchback.name,
            "quickcheck_interval": self.check_interval,
            "local_recover": self.local_recover,
        }


@dataclass(frozen=True)
class Dependency:
    parent: str
    child: str


@dataclass(frozen=True)
class Equivalency:
    """Resource ``tag`` can be in service on ``node``, where it is ``remote_tag``."""

    tag: str
    node: str
    priority: int
    remote_tag: str
    kind: EqvKind = EqvKind.SHARED


@dataclass(frozen=True)
class CommPath:
    """A communication path to ``node``: from this node's ``local`` address to its ``remote`` one."""

    node: str
    kind: str
    local: str
    remote: str
    priority: int

    @property
    def key(self) -> str:
        return f"{self.node}/{self.local}/{self.remote}"


@dataclass(frozen=True)
class Change:
    """One committed change of the LCD, as the change log records it."""

    seq: int
    time: float
    actor: str
    op: str
    args: dict[str, Any] = field(default_factory=dict)
