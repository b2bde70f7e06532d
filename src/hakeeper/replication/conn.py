"""The bookkeeping of one data connection of a source: :class:`Conn` and the replies awaited on it.

Apart from :mod:`.link` (one mirror's state machine and threads) because both the link and
the resync and switchover code hold connections and wait on replies.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass, field

from hakeeper.errors import HakeeperError

from .states import MirrorMode, MirrorState


class MirrorError(HakeeperError):
    """A mirror operation that cannot be done (unknown target, wrong state, split brain)."""

    exit_code = 1


@dataclass
class MirrorStatus:
    """What ``mirror status`` shows for one target."""

    target: str
    mode: MirrorMode
    state: MirrorState
    bytes_dirty: int
    resync_percent: float | None
    resync_bytes_sent: int
    reason: str
    relation: str | None
    last_error: str | None
    split_brain: bool

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "mode": self.mode.value,
            "state": self.state.label,
            "state_code": int(self.state),
            "bytes_dirty": self.bytes_dirty,
            "resync_percent": self.resync_percent,
            "resync_bytes_sent": self.resync_bytes_sent,
            "reason": self.reason,
            "relation": self.relation,
            "last_error": self.last_error,
            "split_brain": self.split_brain,
        }


class Reply:
    """A reply awaited from the target (HASHES, or the ACK of a FLUSH or GEN)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.data: bytes | None = None
        self.ok = False


# completion kinds, kept per connection in sequence order
_W, _P, _R, _F, _H = "write", "piece", "resync", "flush", "reply"


@dataclass(eq=False)
class Conn:
    """One data connection to the target; dead for good once a failure closed it."""

    sock: socket.socket
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    next_seq: int = 1
    acked: int = 0
    alive: bool = True
    completions: deque[tuple[int, str, int, int, Reply | None]] = field(default_factory=deque)
    threads: list[threading.Thread] = field(default_factory=list)
