"""How ``hakeeper mirror`` drives a running mirror: the interface the replication process implements.

The LCD holds what the administrator asked for (:mod:`hakeeper.db.mirrors`); the
live state of a mirror — Mirroring, Paused, how far a resync is — is known only
to the replication process of its volume on this node. hakeeperd finds that
process through :class:`MirrorControls` and the commands call it through
hakeeperd (``hakeeper mirror pause VOL`` runs in hakeeperd, which calls
:meth:`MirrorControl.pause`). Until a volume's process runs, every verb is
refused with :class:`MirrorNotRunning` (exit 1) and nothing changes; ``mirror
status`` shows the definitions with their live state unknown.

Every method blocks until the process has *accepted* the request (a resync is
started, not finished: its progress shows in :meth:`MirrorControl.status`); hakeeperd
calls them in a worker thread, never on its event loop. A method raises a
:class:`~hakeeper.errors.HakeeperError` whose exit code says why it refused
(IllegalArgument: not in a state that allows it, e.g. switchover of a target
that is not Mirroring; NotFound: no such target); what it returns is one line
for the administrator.

This module imports nothing of ours but the states and the errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from hakeeper.errors import SystemCallFailed
from hakeeper.replication.states import MirrorState

#: The verbs of ``hakeeper mirror`` that act on a running mirror (DataKeeper's EMCMD names in the docs).
VERBS = ("pause", "continue", "break", "resync", "verify", "switchover", "resolve")


class MirrorNotRunning(SystemCallFailed):
    """No replication process of the volume runs on this node: a verb cannot be carried out (exit 1)."""


@dataclass(frozen=True)
class TargetStatus:
    """One mirror's live state, as the source's replication process knows it."""

    node: str
    state: MirrorState
    resync_percent: float | None = None  # while RESYNCING: how much of what must be sent was sent
    dirty_bytes: int | None = None  # what the bitmap says the target lacks
    split_brain: bool = False  # both sides wrote independently (data generations differ): resolve first
    resync_bytes_sent: int | None = None  # data the current (or last) resync put on the wire


@dataclass(frozen=True)
class VolumeStatus:
    """A volume's live state on this node: its role here and each mirror's state."""

    volume: str
    role: str  # "source" or "target"
    targets: tuple[TargetStatus, ...]
    device: str | None = None  # on the source: the loop device the administrator mounts (new after a restart)


class MirrorControl(Protocol):
    """The running replication process of one volume, on this node (see the module's docstring).

    ``target`` None means every target of the volume. Each method returns one
    line saying what was done.
    """

    def status(self) -> VolumeStatus:
        """The live state of every mirror of the volume."""
        ...

    def pause(self, target: str | None) -> str:
        """Stop sending to the target; writes are tracked in its bitmap (Paused, 4)."""
        ...

    def resume(self, target: str | None) -> str:
        """``mirror continue``: a partial resync from the bitmap, then Mirroring (EMCMD CONTINUEMIRROR)."""
        ...

    def break_mirror(self, target: str | None) -> str:
        """Stop sending and stop tracking (Broken, 3): only a full resync brings the target back."""
        ...

    def resync(self, target: str | None, *, checksum: bool) -> str:
        """Start a resync: from the bitmap, or of the whole volume after Broken; ``checksum``: send only the
        blocks whose hash differs on the target."""
        ...

    def verify(self, target: str | None) -> str:
        """Start an online compare of source and target; the differing ranges are reported in the log."""
        ...

    def handover(self, to: str, *, timeout: float) -> dict[str, Any]:
        """Switchover, on the source: refuse unless the volume is unused here and ``to`` is Mirroring; else
        stop writes, drain, and hand the volume to ``to`` (durable there). The answer: ``said`` and
        ``targets`` (each target's name, state and bytes to resend). The LCD's source is changed afterwards
        by the ``switchover`` command (:mod:`hakeeper.cli.mirror`)."""
        ...

    def thaw(self) -> str:
        """Switchover, on the source, after the LCD change failed: take writes again."""
        ...

    def forget_handover(self) -> str:
        """Switchover, on the target handed to, after the LCD change failed: drop the handover kept on disk."""
        ...

    def resolve(self, keep: str) -> str:
        """After a split brain: ``keep``'s data survive; the other side is resynced from it."""
        ...


class MirrorControls(Protocol):
    """How hakeeperd finds the replication process of a volume on this node."""

    def control(self, volume: str) -> MirrorControl | None:
        """The running process of ``volume`` here; None when none runs."""
        ...


class NoReplication:
    """The :class:`MirrorControls` of a hakeeperd that runs no replication process (until they are wired)."""

    def control(self, volume: str) -> MirrorControl | None:
        return None
