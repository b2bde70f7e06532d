"""Data generations: which copy of a volume descends from which (as DRBD's UUIDs).

Each node keeps, per volume, a small record: the *current* generation (a random 64-bit id
naming the data as it is now), the *history* of the generations it came from (newest first),
and whether the data is *inconsistent* (a resync into it began and did not finish).

* A new generation starts when the data goes its own way: a mirror leaves Mirroring (the
  target stops following, the source goes on writing), or a node becomes source without its
  peer (promotion after the source died).
* A target brought in sync takes the source's current generation and history.

On connect the two records say what may happen (:func:`compare`): equal -> in sync (the bitmap
still resends what it holds); the target's current in the source's history -> the source is
ahead (partial resync from the bitmap); the reverse -> the target is ahead (refused: roles are
wrong); both moved on from a common generation -> **split brain**: never resynced
automatically, only after an administrator chose the survivor (``resolve``); no relation at
all -> unrelated data (refused unless resolved; then a full resync). A target that never held
data (no generation) gets a full resync.

The record is a JSON file beside the bitmap, replaced atomically (write, fsync, rename, fsync dir).
"""

from __future__ import annotations

import enum
import json
import logging
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hakeeper.errors import HakeeperError
from hakeeper.replication.files import replace_durably

logger = logging.getLogger(__name__)

HISTORY = 32


class GenerationError(HakeeperError):
    """A generation record that cannot be read."""

    exit_code = 1


class Relation(enum.Enum):
    IN_SYNC = "in sync"
    SOURCE_AHEAD = "source ahead"
    NEW_TARGET = "new target"  # the target never held data of this volume: full resync
    TARGET_AHEAD = "target ahead"
    SPLIT_BRAIN = "split brain"
    UNRELATED = "unrelated data"


class PromotionRefused(GenerationError):
    """This node's copy must not become the source: the message says why and what to do
    (one sentence, shown as is by ``hakeeper why``)."""

    exit_code = 1

    def __init__(self, message: str, *, state: str) -> None:
        super().__init__(message)
        self.state = state  # the copy's state as a target: "Resynchronizing", "Broken", "Paused"


# what a target's copy was, last it heard from its source (Generation.state)
MIRRORING, RESYNCING, PAUSED, BROKEN = "Mirroring", "Resynchronizing", "Paused", "Broken"


@dataclass
class Generation:
    current: str = ""  # "" : never held data
    history: list[str] = field(default_factory=list)
    inconsistent: bool = False
    # as a target, the state of the mirror last the source said ("" on a source or a new node)
    state: str = ""
    # the node this one took over from (switchover or promotion), for status and the log
    previous_source: str = ""
    # since this node last took over: the targets whose bitmaps were made anew (None: never took over).
    # A bitmap left from an earlier time as source knows nothing of what the old source wrote since.
    renewed_bitmaps: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "history": list(self.history),
            "inconsistent": self.inconsistent,
            "state": self.state,
            "previous_source": self.previous_source,
            "renewed_bitmaps": self.renewed_bitmaps,
        }

    def copy(self) -> Generation:
        renewed = None if self.renewed_bitmaps is None else list(self.renewed_bitmaps)
        return Generation(
            self.current, list(self.history), self.inconsistent, self.state, self.previous_source, renewed
        )

    @classmethod
    def from_json(cls, value: object) -> Generation:
        if not isinstance(value, dict):
            raise GenerationError("a generation record is not an object")
        current, history = value.get("current", ""), value.get("history", [])
        if (
            not isinstance(current, str)
            or not isinstance(history, list)
            or not all(isinstance(h, str) for h in history)
        ):
            raise GenerationError("a generation record has a malformed current/history")
        state, previous = value.get("state", ""), value.get("previous_source", "")
        renewed = value.get("renewed_bitmaps")
        return cls(
            current,
            list(history),
            bool(value.get("inconsistent", False)),
            state if isinstance(state, str) else "",
            previous if isinstance(previous, str) else "",
            [str(r) for r in renewed] if isinstance(renewed, list) else None,
        )


def compare(source: Generation, target: Generation) -> Relation:
    """What the two records say about a source and a target about to connect."""
    if not target.current:
        return Relation.NEW_TARGET
    if not source.current:
        return Relation.TARGET_AHEAD
    if source.current == target.current:
        return Relation.IN_SYNC
    if target.current in source.history:
        return Relation.SOURCE_AHEAD
    if source.current in target.history:
        return Relation.TARGET_AHEAD
    if set(source.history) & set(target.history):
        return Relation.SPLIT_BRAIN
    return Relation.UNRELATED


class GenerationStore:
    """The generation record of one volume on this node, persisted at ``path``. Thread-safe."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.exists():
            try:
                self._gen = Generation.from_json(json.loads(self.path.read_text()))
            except (ValueError, OSError) as exc:
                raise GenerationError(f"cannot read the generation record {self.path}: {exc}") from None
        else:
            self._gen = Generation()

    @property
    def value(self) -> Generation:
        with self._lock:
            return self._gen.copy()

    def start_data(self) -> Generation:
        """Give data that has no generation yet its first one (a new volume on its first source)."""
        with self._lock:
            if not self._gen.current:
                self._gen = Generation(_new_id(), [], False)
                self._save()
            return self._gen.copy()

    def new_generation(self, why: str, *, previous_source: str | None = None) -> Generation:
        """Start a new generation (the data goes its own way); the old one goes into the history."""
        with self._lock:
            old = self._gen
            history = ([old.current] if old.current else []) + old.history
            taken_over = previous_source is not None  # a promotion or switchover: every bitmap is stale
            self._gen = Generation(
                _new_id(),
                history[:HISTORY],
                old.inconsistent,
                "",
                previous_source if previous_source is not None else old.previous_source,
                [] if taken_over else old.renewed_bitmaps,
            )
            self._save()
            logger.info("data generation %s -> %s (%s)", old.current or "none", self._gen.current, why)
            return self._gen.copy()

    def adopt(self, source: Generation) -> None:
        """This node's data is now a copy of the source's: take its generation, consistent."""
        with self._lock:
            self._gen = Generation(source.current, list(source.history[:HISTORY]), False, MIRRORING)
            self._save()

    def set_inconsistent(self) -> None:
        """A resync into this node's data begins: until it ends the data is no point-in-time image."""
        with self._lock:
            if not self._gen.inconsistent or self._gen.state != RESYNCING:
                self._gen.inconsistent = True
                self._gen.state = RESYNCING
                self._save()

    def bitmap_renewed(self, target: str) -> None:
        """The bitmap for ``target`` was made anew since this node took over: it may be reopened."""
        with self._lock:
            renewed = self._gen.renewed_bitmaps
            if renewed is not None and target not in renewed:
                renewed.append(target)
                self._save()

    def bitmap_is_stale(self, target: str) -> bool:
        """True if a bitmap for ``target`` on this node predates its taking over (see renewed_bitmaps)."""
        with self._lock:
            renewed = self._gen.renewed_bitmaps
            return renewed is not None and target not in renewed

    def set_state(self, state: str) -> None:
        """As a target: the source says the mirror left Mirroring on purpose (Paused, Broken)."""
        with self._lock:
            if self._gen.state != state:
                self._gen.state = state
                self._save()

    def promote(self, *, peer: str, force: bool = False, volume: str = "", node: str = "") -> Generation:
        """This node becomes the source without ``peer`` (the source died): a new generation, so
        that the old source, back, is told apart (source ahead if it wrote nothing since, split
        brain if it did).

        Only a copy that was Mirroring when it last heard from ``peer`` may be promoted:
        :class:`PromotionRefused` while it is inconsistent (a resync into it did not finish: no
        point-in-time image; DataKeeper: no failover to a target mid-resync), or when the source
        had paused or broken the mirror (the copy is older than what the applications saw),
        unless ``force``. ``volume`` and ``node`` name things in the message.
        """
        gen = self.value
        what = f"{node or 'this node'}'s copy of {volume or self.path.stem}"
        if not force:
            if gen.inconsistent:
                raise PromotionRefused(
                    f"{what} is inconsistent (a resync from {peer} did not finish: it is no point-in-time "
                    f"image); bring {peer} back, or promote only with force, "
                    "accepting a filesystem check and lost writes",
                    state=RESYNCING,
                )
            if gen.state in (PAUSED, BROKEN):
                raise PromotionRefused(
                    f"{what} is older than {peer}'s: {peer} had {'broken' if gen.state == BROKEN else 'paused'} "
                    f"the mirror and went on writing without it; bring {peer} back, or promote only with force, "
                    "accepting the loss of the writes made since",
                    state=gen.state,
                )
        return self.new_generation(
            f"promoted to source without {peer}{' (forced)' if force else ''}", previous_source=peer
        )

    def take_over(self, handed: Generation, *, peer: str) -> Generation:
        """Switchover: ``peer`` handed this node its data (``handed`` is ``peer``'s generation when it
        stopped writing); a new generation whose history holds ``handed``, so that ``peer``, as this
        node's target, is "source ahead" (never split brain). Idempotent: done already -> no change.
        """
        with self._lock:
            gen = self._gen.copy()
        if gen.previous_source == peer and gen.history[:1] == [handed.current]:
            return gen  # taken over already (a restart between promotion and cleanup)
        if gen.current != handed.current or gen.inconsistent:
            raise PromotionRefused(
                f"this node's data (generation {gen.current or 'none'}"
                f"{', inconsistent' if gen.inconsistent else ''}) is not the data {peer} handed over "
                f"(generation {handed.current}): switch over again from {peer}",
                state=gen.state,
            )
        return self.new_generation(f"switchover from {peer}", previous_source=peer)

    def _save(self) -> None:
        replace_durably(self.path, json.dumps(self._gen.to_json()).encode())


def _new_id() -> str:
    return secrets.token_hex(8)
