"""Communication path liveness: the pure state machine, and the runtime state file.

A path is ALIVE while heartbeats arrive on it, DEAD once ``misses`` intervals
pass without one, UNKNOWN before anything was heard (and until the first
budget has run out). A node is DEAD only when every path to it is DEAD; one
dead path only marks that path (LifeKeeper: "failover starts only when ALL
paths to a server are DEAD").

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
from collections.abc import Iterable
from dataclasses import dataclass
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

    def heard(self, now: float) -> PathState | None:
        """A heartbeat arrived; returns the new state if it changed."""
        self.last_heard = now
        if self.state is not PathState.ALIVE:
            self.state = PathState.ALIVE
            return self.state
        return None

    def tick(self, now: float) -> PathState | None:
        """Time passed; returns DEAD when the path just died."""
        reference = self.last_heard if self.last_heard is not None else self.started
        if self.state is not PathState.DEAD and now - reference > self.budget:
            self.state = PathState.DEAD
            return self.state
        return None


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
