"""Mirror states with DataKeeper's numbers (its counters and ``GETMIRRORVOLINFO``). Imports nothing of ours."""

from __future__ import annotations

import enum


class MirrorState(enum.IntEnum):
    """The state of one mirror (one source, one target), as DataKeeper numbers it."""

    NONE = 0  # no mirror: the volume is not mirrored to this target
    MIRRORING = 1  # the target has every acknowledged write (sync) or a consistent prefix of them (async)
    RESYNCING = 2  # the target is being brought up to date from the bitmap (partial) or the whole volume (full)
    BROKEN = 3  # writes are not tracked: only a full resync brings the target back
    PAUSED = 4  # writes are tracked in the bitmap; continue resyncs only what they touched
    RESYNC_PENDING = 5  # a resync is due and waits (the target not connected yet, or a bandwidth slot)

    @property
    def label(self) -> str:
        """DataKeeper's spelling, as ``mirror status`` shows it."""
        return _LABELS[self]


_LABELS = {
    MirrorState.NONE: "None",
    MirrorState.MIRRORING: "Mirroring",
    MirrorState.RESYNCING: "Resynchronizing",
    MirrorState.BROKEN: "Broken",
    MirrorState.PAUSED: "Paused",
    MirrorState.RESYNC_PENDING: "ResyncPending",
}


class MirrorMode(enum.Enum):
    """When a write is acknowledged to the application."""

    SYNC = "sync"  # when the local disk and every Mirroring target have it
    ASYNC = "async"  # when the local disk has it; the targets follow in order
