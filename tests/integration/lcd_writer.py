"""A process that changes an LCD until it is killed, for tests/integration/test_lcd_crash.py.

``python lcd_writer.py STATE_DIR SEED PROGRESS_FILE [AIM]`` opens the LCD of
STATE_DIR, finds the last operation that committed (each change-log row names
its operation, ``op<index>``, as its actor), prints ``ready <next index>`` and
then applies :func:`operation` ``(SEED, index)`` for index = next, next + 1, …
until it is killed (or its parent dies, or a minute has passed).

The operations are a pure function of the seed and the index, and an operation
the LCD refuses is refused again given the same state, so a writer that starts
again where the last one stopped makes the same changes; the test applies the
same operations to a reference LCD and compares.

To tell the test where a kill landed, the writer appends one line to
PROGRESS_FILE per step with unbuffered ``os.write`` calls (what the kernel has
accepted survives SIGKILL): ``open T`` before opening the LCD, ``ready N T``
once it is open (T is ``time.monotonic()``, one clock for every process),
``op I`` before operation I, ``begin``/``commit``/``rollback`` when the LCD's
connection starts such a statement, and ``done I 1`` (committed) or ``done I 0``
(refused) after it.

With AIM the writer SIGKILLs itself, after appending ``kill W`` (W being how
many data-changing statements of the current operation had run): with
``write:N`` just before the N-th INSERT, UPDATE or DELETE it starts (all are
inside a change's transaction), a kill aimed at the middle of some change; with
``removal:W`` just before a DELETE of a removal (``remove_resources``,
``remove_type``) that has run W statements already, a kill aimed
at the middle of a multi-row change.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hakeeper.db import Init, Lcd, State, Switchback
from hakeeper.errors import AlreadyExists, DeleteRefused, IllegalArgument, NotFound, OutOfRange

OPEN_ACTOR = "crash-writer"
LOCAL_NODE = "node1"
APP = "app"
TYPES = ("t1", "t2")
NODES = ("node2", "node3", "node4")
TAGS = (*(f"r{n:02d}" for n in range(36)), "ü-web", "日本-db", "x.y_z-1", "ip-10.0.0.1")
FLAGS = ("!maintenance", "shutdown_switchover", "ü-flag", "x")
#: How the LCD refuses an operation that does not fit the current state; anything else is a failure.
REFUSALS = (AlreadyExists, DeleteRefused, IllegalArgument, NotFound, OutOfRange)
REMOVALS = ("remove_resources", "remove_type")
RUN_LIMIT_SECONDS = 60.0

_KINDS = {
    "create_resource": 20,
    "create_dependency": 22,
    "set_state": 9,
    "set_info": 8,
    "create_equivalency": 7,
    "remove_resources": 3,
    "remove_dependency": 2,
    "remove_equivalency": 2,
    "create_flag": 5,
    "remove_flag": 3,
    "set_switchback": 2,
    "set_init": 2,
    "set_check_interval": 2,
    "set_local_recover": 2,
    "create_node": 1,
    "remove_node": 1,
    "create_type": 1,
    "remove_type": 0.15,
}
_KIND_NAMES = tuple(_KINDS)
_KIND_WEIGHTS = tuple(_KINDS.values())


@dataclass(frozen=True)
class Op:
    """Operation number ``index``: the call ``Lcd.<method>(*args, **kwargs)``."""

    index: int
    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        shown = [_short(a) for a in self.args] + [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        return f"op{self.index} {self.method}({', '.join(shown)})"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...<{len(text)} chars>"


def _info(rng: random.Random) -> Any:
    """An info value: usually small, sometimes tens of kilobytes, now and then too large (refused)."""
    roll = rng.random()
    if roll < 0.35:
        return f"/srv/{rng.choice(TAGS)}/{rng.randrange(1000)}"
    if roll < 0.85:
        return {"port": rng.randrange(1, 65536), "path": f"/srv/é{rng.randrange(100)}", "opts": [rng.random()]}
    if roll < 0.98:
        size = rng.randrange(2_000, 30_000)
        return {"blob": rng.randbytes(size).hex(), "note": "ü" * rng.randrange(50)}
    return {"blob": "x" * 70_000}  # over the 64 KiB limit: refused


def operation(seed: int, index: int) -> Op:
    """Operation ``index`` of the sequence ``seed``: the same on every call and in every process."""
    if index == 0:
        return Op(0, "create_app", (APP,))
    if index == 1:
        return Op(1, "create_type", (APP, TYPES[0]))
    rng = random.Random(f"lcd-crash:{seed}:{index}")
    kind = rng.choices(_KIND_NAMES, _KIND_WEIGHTS)[0]
    tag = rng.choice(TAGS)
    other = rng.choice(TAGS)
    node = rng.choice((*NODES, LOCAL_NODE) if rng.random() < 0.1 else NODES)
    if kind == "create_resource":
        rid = f"id-{other}" if rng.random() < 0.05 else f"id-{tag}"  # sometimes an id clash
        interval = rng.randrange(0, 86_401) if rng.random() < 0.97 else 100_000
        kwargs = {
            "info": _info(rng),
            "init": rng.choice(list(Init)),
            "switchback": rng.choice(list(Switchback)),
            "check_interval": interval,
            "local_recover": rng.random() < 0.5,
        }
        return Op(index, kind, (tag, rid, APP, rng.choice(TYPES)), kwargs)
    if kind == "create_dependency":
        return Op(index, kind, (tag, other))
    if kind == "set_state":
        reason = f"reason of op{index}" if rng.random() < 0.95 else "two\nlines"
        return Op(index, kind, (tag, rng.choice(list(State)), reason))
    if kind == "set_info":
        return Op(index, kind, (tag, _info(rng)))
    if kind == "create_equivalency":
        kwargs = {"other_priority": rng.randrange(1, 6)} if rng.random() < 0.3 else {}
        return Op(index, kind, (tag, node), kwargs)
    if kind == "remove_equivalency":
        return Op(index, kind, (tag, node))
    if kind == "remove_resources":
        return Op(index, kind, (rng.sample(TAGS, rng.choice((1, 1, 1, 2, 3))),))
    if kind == "remove_dependency":
        which = rng.choice(({"parent": tag}, {"child": tag}, {"parent": tag, "child": other}))
        return Op(index, kind, (), which)
    if kind in ("create_flag", "remove_flag"):
        return Op(index, kind, (rng.choice(FLAGS),))
    if kind == "set_switchback":
        return Op(index, kind, (tag, rng.choice(list(Switchback))))
    if kind == "set_init":
        return Op(index, kind, (tag, rng.choice(list(Init))))
    if kind == "set_check_interval":
        return Op(index, kind, (tag, rng.randrange(0, 86_401)))
    if kind == "set_local_recover":
        return Op(index, kind, (tag, rng.random() < 0.5))
    if kind in ("create_node", "remove_node"):
        return Op(index, kind, (node,))
    return Op(index, kind, (APP, TYPES[1]))  # create_type, remove_type: t2 comes and goes with its resources


def apply(lcd: Lcd, op: Op) -> tuple[bool, Any]:
    """Apply ``op`` as actor ``op<index>``: ``(True, result)`` if it committed, ``(False, None)`` if refused."""
    lcd.actor = f"op{op.index}"
    try:
        result = getattr(lcd, op.method)(*op.args, **op.kwargs)
    except REFUSALS:
        return False, None
    return True, result


def last_op_index(lcd: Lcd) -> int:
    """The index of the last operation committed to ``lcd``, -1 if none."""
    last = lcd.changes(since=lcd.last_seq() - 1)
    if not last or not last[0].actor.startswith("op"):
        return -1
    return int(last[0].actor[2:])


def main(argv: list[str]) -> int:
    root, seed, progress = argv[1], int(argv[2]), argv[3]
    aim, _, number = (argv[4] if len(argv) > 4 else "none").partition(":")
    kill_at_write = int(number) if aim == "write" else 0
    kill_in_removal = int(number) if aim == "removal" else 0
    fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    parent = os.getppid()
    writes = 0  # data-changing statements started since the LCD was opened
    in_operation = 0  # of which since the current operation started
    method = ""  # of the operation being applied

    def mark(line: str) -> None:
        os.write(fd, f"{line}\n".encode())

    def trace(statement: str) -> None:
        nonlocal writes, in_operation
        word = statement.split(None, 1)[0].upper() if statement.strip() else ""
        if word in ("BEGIN", "COMMIT", "ROLLBACK"):
            mark(word.lower())
        elif word in ("INSERT", "UPDATE", "DELETE"):
            writes += 1
            if writes == kill_at_write or (
                method in REMOVALS and word == "DELETE" and in_operation == kill_in_removal > 0
            ):
                mark(f"kill {in_operation}")
                os.kill(os.getpid(), signal.SIGKILL)
            in_operation += 1

    mark(f"open {time.monotonic()}")
    lcd = Lcd.open(root, actor=OPEN_ACTOR, node=LOCAL_NODE)
    index = last_op_index(lcd) + 1
    lcd._conn.set_trace_callback(trace)  # observes the LCD's own statements; changes nothing
    mark(f"ready {index} {time.monotonic()}")
    sys.stdout.write(f"ready {index}\n")
    sys.stdout.flush()
    deadline = time.monotonic() + RUN_LIMIT_SECONDS
    while time.monotonic() < deadline and os.getppid() == parent:
        op = operation(seed, index)
        method, in_operation = op.method, 0
        mark(f"op {index}")
        committed, _ = apply(lcd, op)
        mark(f"done {index} {int(committed)}")
        index += 1
    lcd.close()
    return 3  # the test kills the writer long before: ending by itself is a failure


if __name__ == "__main__":
    sys.exit(main(sys.argv))
