"""Communication path liveness: the pure state machine, and the runtime state file.

A path is ALIVE while heartbeats arrive on it, DEAD once ``misses`` intervals
pass without one, UNKNOWN before anything was heard (and until the first
budget has run out). A node is DEAD only when every path to it is DEAD; one
dead path only marks that path (LifeKeeper: "failover starts only when ALL
paths to a server are DEAD").

:class:`Dialer` decides, on the sending side of a path, when a connection has
stalled and a fresh one must be dialed beside it.

The component that runs heartbeats writes the states to
``<root>/run/paths.json`` (atomically, with its pid); ``lcdstatus`` reads them
from there, and shows UNKNOWN when nobody alive wrote the file. This module uses
only the standard library, so that reading the states costs nothing.
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


class PathState(enum.Enum):
    UNKNOWN = "UNKNOWN"
    ALIVE = "ALIVE"
    DEAD = "DEAD"


@dataclass
class PathMonitor:
    """Liveness of one path from the heartbeats heard on it. Times are monotonic seconds."""

    interval: float
    misses: int
    started: float
    last_heard: float | None = None
    state: PathState = PathState.UNKNOWN

    @property
    def budget(self) -> float:
        return self.interval * self.misses

    @property
    def deadline(self) -> float:
        """When the path dies if nothing is heard before (monotonic seconds)."""
        return (self.last_heard if self.last_heard is not None else self.started) + self.budget

    def heard(self, now: float) -> PathState | None:
        """A heartbeat arrived; returns the new state if it changed."""
        self.last_heard = now
        if self.state is not PathState.ALIVE:
            self.state = PathState.ALIVE
            return self.state
        return None

    def tick(self, now: float) -> PathState | None:
        """Time passed; returns DEAD when the path just died."""
        if self.state is not PathState.DEAD and now > self.deadline:
            self.state = PathState.DEAD
            return self.state
        return None


#: A connection whose oldest unacknowledged heartbeat is older than this many intervals is stalled.
STALL_INTERVALS = 2
#: For this many detection budgets of trouble a path redials every half interval; then once per budget.
FAST_RETRY_BUDGETS = 10


@dataclass
class Dialer:
    """The sending side of one path: which connections carry the next heartbeat, when to dial another one.

    The peer acknowledges every heartbeat. A connection is *stalled* when its oldest
    unacknowledged heartbeat is older than ``STALL_INTERVALS`` intervals: after a cable
    came back, TCP may wait a second or more for its next retransmission, and the
    kernel as long for its next ARP request. While no connection of the path works,
    a fresh one is dialed every half interval (once per budget after
    ``FAST_RETRY_BUDGETS`` budgets), the old ones kept: the first connection the peer
    answers on carries the heartbeats from then on, and the others are dropped with
    what they still queue. Connections are the caller's small integer ids; times are
    monotonic seconds.
    """

    interval: float
    misses: int
    outstanding: dict[int, deque[tuple[int, float]]] = field(default_factory=dict)
    last_dial: float | None = None
    trouble_since: float | None = None

    @property
    def budget(self) -> float:
        return self.interval * self.misses

    @property
    def stall(self) -> float:
        return self.interval * STALL_INTERVALS

    def opened(self, conn: int) -> None:
        self.outstanding[conn] = deque()

    def closed(self, conn: int) -> None:
        self.outstanding.pop(conn, None)

    def targets(self, now: float) -> list[int]:
        """The connections the next heartbeat goes on: every one whose oldest unanswered frame is within the budget.

        A stalled connection keeps carrying heartbeats while a fresh one is dialed:
        when only the answers are late (a slow reverse direction, a busy peer), the
        frames still arrive and the path stays ALIVE. Once a frame has gone
        unanswered for the whole budget, the peer has declared the path DEAD
        without it; more frames there would be stale.
        """
        return [c for c, queue in self.outstanding.items() if not queue or now - queue[0][1] < self.budget]

    def sent(self, conn: int, seq: int, now: float) -> None:
        self.outstanding[conn].append((seq, now))

    def acked(self, conn: int, seq: int) -> list[int]:
        """The peer acknowledged ``seq`` on ``conn``; returns the other connections, to drop (forgotten here)."""
        queue = self.outstanding.get(conn)
        if queue is None:
            return []
        while queue and queue[0][0] <= seq:
            queue.popleft()
        others = [c for c in self.outstanding if c != conn]
        for other in others:
            del self.outstanding[other]
        return others

    def stalled(self, conn: int, now: float) -> bool:
        queue = self.outstanding.get(conn)
        return queue is not None and bool(queue) and now - queue[0][1] >= self.stall - 1e-9  # next_check's time

    def working(self, now: float) -> bool:
        return any(not self.stalled(c, now) for c in self.outstanding)

    def pace(self, now: float) -> float:
        """How long between two dials while the path is in trouble."""
        if self.trouble_since is not None and now - self.trouble_since >= FAST_RETRY_BUDGETS * self.budget:
            return self.budget
        return self.interval / 2

    def dial_due(self, now: float) -> bool:
        """Whether to dial a fresh connection now (if so, the dial is counted as made)."""
        if self.working(now):
            self.trouble_since = None
            return False
        if self.trouble_since is None:
            self.trouble_since = now
        if self.last_dial is not None and now - self.last_dial < self.pace(now):
            return False
        self.last_dial = now
        return True

    def next_check(self, now: float) -> float:
        """When :meth:`dial_due` may next say yes: from now to one interval from now, never in the past."""
        if self.working(now):
            stalls = [queue[0][1] + self.stall for queue in self.outstanding.values() if queue]
            return min([now + self.interval, *(t for t in stalls if t > now)])
        if self.last_dial is None:
            return now
        return max(now, min(self.last_dial + self.pace(now), now + self.interval))


def node_state(states: Iterable[PathState]) -> PathState:
    """A node is ALIVE if any path to it is, DEAD only if every path is, UNKNOWN otherwise (or with no path)."""
    seen = list(states)
    if any(s is PathState.ALIVE for s in seen):
        return PathState.ALIVE
    if seen and all(s is PathState.DEAD for s in seen):
        return PathState.DEAD
    return PathState.UNKNOWN


STATE_FILE = Path("run") / "paths.json"


def write_states(root: Path, states: dict[str, PathState], *, pid: int | None = None) -> None:
    """Record path states (key: node/local/remote) for readers such as lcdstatus; atomic."""
    path = root / STATE_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = {"pid": pid or os.getpid(), "time": time.time(), "paths": {k: v.value for k, v in states.items()}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_states(root: Path) -> dict[str, PathState]:
    """The states last written by a live writer; empty (all UNKNOWN) otherwise."""
    try:
        data = json.loads((root / STATE_FILE).read_text())
        pid = int(data["pid"])
        os.kill(pid, 0)
        return {str(k): PathState(v) for k, v in dict(data["paths"]).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
