"""Switchover: the source hands a volume to one of its Mirroring targets, and the roles swap.

On the old source A, for a switchover to B (:func:`prepare`, :meth:`.mirror.Mirror.prepare_switchover`):

1. refused, nothing changed, unless the mirror A->B is Mirroring;
2. A refuses new writes (``EROFS``) and waits for those under way: the caller stops the
   application first (LifeKeeper takes the hierarchy out of service on A), the engine makes
   sure no write slips in after the handover, where B would never see it;
3. A flushes and drains every target that is Mirroring (sync and async: a FLUSH behind
   everything queued); B must answer within the timeout, else the switchover is refused and
   A takes writes again;
4. what each target may lack is read from A's bitmaps (bits the drain proved clean are
   cleared first: normally B's is empty, a Paused target's holds what it missed);
5. the :class:`Handover` goes to B over the data connection A->B (a ``GEN`` frame "handover",
   ``DIRTY`` frames with each target's regions, a ``GEN`` "handover_commit" that B acks once it
   has written the handover beside its generation record). A stays frozen: the caller closes
   its mirror and serves the volume as B's target (:class:`.target.MirrorTarget`).

On B (:func:`take_over`, :meth:`.mirror.Mirror.from_handover`), once A has closed its side:
a bitmap per new target is written from the handover (for A: A->B's regions; for every other
target C: A->C's regions merged with A->B's, since B and C can differ only where A differed
from one of them); B takes a new generation whose history holds A's (``take_over``: A, as B's
target, is then "source ahead", never split brain; C likewise); B builds its
:class:`.mirror.Mirror` with those targets: each starts with a partial resync of its regions only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bitmap import IntentLog
from .conn import MirrorError
from .device import LocalStore
from .files import replace_durably
from .generations import Generation, GenerationStore
from .protocol import MAX_DATA, Op, pack_ranges
from .resync import gen_payload
from .states import MirrorMode, MirrorState

if TYPE_CHECKING:
    from .link import TargetLink
    from .mirror import Mirror

logger = logging.getLogger(__name__)

RANGES_PER_FRAME = MAX_DATA // 16


class SwitchoverRefused(MirrorError):
    """A switchover that cannot be done now; nothing was changed."""


Ranges = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class HandedTarget:
    """One target of the old source as it was at the handover."""

    name: str
    mode: MirrorMode
    chunk: int
    state: MirrorState
    dirty: Ranges  # byte ranges (offset, length) this target may lack: the old source's intent log for it

    @property
    def dirty_bytes(self) -> int:
        return sum(n for _o, n in self.dirty)


@dataclass(frozen=True)
class Handover:
    """What the new source needs from the old one: generation, targets and their dirty regions."""

    volume: str
    size: int
    source: str  # the old source (A)
    to: str  # the new source (B)
    generation: Generation  # A's when it stopped writing: B's data is that
    targets: tuple[HandedTarget, ...]  # every target of A, B included

    def target(self, name: str) -> HandedTarget:
        for t in self.targets:
            if t.name == name:
                return t
        raise MirrorError(f"the handover of {self.volume} from {self.source} names no target {name}")

    def plan(self) -> dict[str, HandedTarget]:
        """The new source's targets: the old source (what may differ between it and the new source)
        and every other target (its own regions and the new source's, merged)."""
        mine = self.target(self.to)
        plan = {self.source: HandedTarget(self.source, mine.mode, mine.chunk, MirrorState.MIRRORING, mine.dirty)}
        for t in self.targets:
            if t.name != self.to:
                plan[t.name] = HandedTarget(t.name, t.mode, t.chunk, t.state, merge(t.dirty, mine.dirty))
        return plan

    def header(self) -> dict[str, Any]:
        return {
            "volume": self.volume,
            "size": self.size,
            "source": self.source,
            "to": self.to,
            "generation": self.generation.to_json(),
            "targets": [
                {"name": t.name, "mode": t.mode.value, "chunk": t.chunk, "state": int(t.state)} for t in self.targets
            ],
        }

    def to_json(self) -> dict[str, Any]:
        value = self.header()
        for entry, t in zip(value["targets"], self.targets, strict=True):
            entry["dirty"] = [list(r) for r in t.dirty]
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any], dirty: list[list[tuple[int, int]]] | None = None) -> Handover:
        """From :meth:`to_json`, or from :meth:`header` and the regions received in DIRTY frames."""
        try:
            entries = list(value["targets"])
            targets = tuple(
                HandedTarget(
                    str(e["name"]),
                    MirrorMode(e["mode"]),
                    int(e["chunk"]),
                    MirrorState(int(e["state"])),
                    tuple((int(o), int(n)) for o, n in (dirty[i] if dirty is not None else e["dirty"])),
                )
                for i, e in enumerate(entries)
            )
            return cls(
                str(value["volume"]),
                int(value["size"]),
                str(value["source"]),
                str(value["to"]),
                Generation.from_json(value["generation"]),
                targets,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MirrorError(f"a malformed handover: {exc!r}") from None

    def save(self, path: Path) -> None:
        replace_durably(path, json.dumps(self.to_json()).encode())

    @classmethod
    def load(cls, path: Path | str) -> Handover:
        try:
            value = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise MirrorError(f"cannot read the handover {path}: {exc}") from None
        if not isinstance(value, dict):
            raise MirrorError(f"the handover {path} is not an object")
        return cls.from_json(value)


def handover_path(generations: GenerationStore) -> Path:
    """Where a target keeps the handover it received: beside its generation record."""
    return generations.path.with_name(generations.path.name + ".handover")


def merge(*sets: Iterable[tuple[int, int]]) -> Ranges:
    """The union of byte ranges, sorted and coalesced."""
    out: list[tuple[int, int]] = []
    for o, n in sorted(r for s in sets for r in s if r[1] > 0):
        if out and o <= out[-1][0] + out[-1][1]:
            last_o, last_n = out[-1]
            out[-1] = (last_o, max(last_o + last_n, o + n) - last_o)
        else:
            out.append((o, n))
    return tuple(out)


def bitmap_ranges(bitmap: IntentLog) -> Ranges:
    """The dirty regions of a bitmap as byte ranges."""
    return merge(bitmap.chunk_span(first, last) for first, last in bitmap.runs())


def seed_bitmap(path: Path | str, *, size: int, chunk: int, dirty: Iterable[tuple[int, int]]) -> int:
    """Write the bitmap at ``path`` (replacing any) with exactly the chunks ``dirty`` touches; how many."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    log = IntentLog.open(path, size=size, chunk=chunk, new_dirty=False)
    try:
        for offset, length in dirty:
            log.set_range(*log.chunk_range(offset, length))
        log.sync()
        return log.dirty_chunks
    finally:
        log.close()


# -- on the old source ------------------------------------------------------------------------


def prepare(mirror: Mirror, to: str, *, timeout: float) -> Handover:
    """Stop writes, flush, drain, and hand the volume to ``to`` (see the module's docstring).

    :class:`SwitchoverRefused`, and writes taken again, if anything fails before ``to`` has the handover.
    """
    link = mirror.link(to)
    with link.lock:
        state = link.state
    if state is not MirrorState.MIRRORING:
        raise SwitchoverRefused(
            f"{mirror.volume} cannot switch over to {to}: the mirror to {to} is {state.label}, not Mirroring "
            f"(wait for the resync to finish, or continue it; see: hakeeper mirror status {mirror.volume})"
        )
    try:
        mirror.freeze(f"switching over to {to}", timeout)
    except MirrorError as exc:
        raise SwitchoverRefused(f"{mirror.volume} cannot switch over to {to}: {exc}") from None
    try:
        mirror.flush()
        for other in mirror.links:
            drained = other.drain(timeout)
            if other is link and not drained:
                raise SwitchoverRefused(
                    f"{mirror.volume} cannot switch over to {to}: {to} did not confirm every write within "
                    f"{timeout:.1f} s ({link.state.label}: {link.reason}); nothing changed, {mirror.node} "
                    "stays the source"
                )
            if drained:
                _settle(other)
        handover = Handover(
            volume=mirror.volume,
            size=mirror.size,
            source=mirror.node,
            to=to,
            generation=mirror.generations.value,
            targets=tuple(
                HandedTarget(t.name, t.mode, t.bitmap.chunk, t.state, bitmap_ranges(t.bitmap)) for t in mirror.links
            ),
        )
        _send(link, handover)
    except BaseException:
        mirror.thaw()
        raise
    mirror.handed_over(to)
    logger.info(
        "mirror %s: %s handed over to %s (switchover): %s",
        mirror.volume,
        mirror.node,
        to,
        ", ".join(f"{t.name} {t.state.label} {t.dirty_bytes} bytes dirty" for t in handover.targets),
    )
    return handover


def _settle(link: TargetLink) -> None:
    """After a drain with writes stopped: clear every bit the target provably has (acked and
    flushed) or that no write touched (marked ahead); what stays is what it may lack."""
    with link.lock:
        clean = link.durable_clean | link.spec_new | link.spec_old
        link.durable_clean, link.spec_new, link.spec_old = set(), set(), set()
        if clean:
            link.bitmap.clear_chunks(clean)
    link.bitmap.sync()


def _send(link: TargetLink, handover: Handover) -> None:
    """The handover over the data connection to the new source; returns once it acked the commit."""
    conn = link.conn
    to = handover.to
    if conn is None or not conn.alive:
        raise SwitchoverRefused(f"{handover.volume} cannot switch over to {to}: the connection to it is gone")
    replies = [link.request(conn, Op.GEN, 0, gen_payload("handover", None, handover=handover.header()))]
    for i, t in enumerate(handover.targets):
        for k in range(0, len(t.dirty), RANGES_PER_FRAME):
            replies.append(link.request(conn, Op.DIRTY, i, pack_ranges(list(t.dirty[k : k + RANGES_PER_FRAME]))))
    commit = link.request(conn, Op.GEN, 0, gen_payload("handover_commit", None))
    if any(r is None for r in replies) or commit is None or not link.wait_reply(conn, commit):
        raise SwitchoverRefused(
            f"{handover.volume} cannot switch over to {to}: {to} did not take the handover ({link.reason}); "
            f"nothing changed, {handover.source} stays the source"
        )


# -- on the new source ------------------------------------------------------------------------


def take_over(
    local: LocalStore,
    handover: Handover,
    *,
    generations: GenerationStore,
    node: str,
    connect: Mapping[str, Callable[[], socket.socket]],
    bitmap_path: Callable[[str], Path | str],
    **options: Any,
) -> Mirror:
    """Become the source of ``handover.volume`` with the old source's targets; the new :class:`.mirror.Mirror`.

    ``connect[name]`` opens a data connection to each target (the old source included),
    ``bitmap_path(name)`` says where its bitmap goes; ``options`` go to ``add_target`` (a
    target's mode and chunk are the old source's unless given). Nothing is changed if a
    connection is missing or this node is not the one handed to.
    """
    from .mirror import Mirror

    if handover.to != node:
        raise MirrorError(f"the handover of {handover.volume} from {handover.source} is for {handover.to}, not {node}")
    if local.size != handover.size:
        raise MirrorError(
            f"{node}'s store of {handover.volume} has {local.size} bytes, the volume handed over {handover.size}"
        )
    plan = handover.plan()
    missing = sorted(set(plan) - set(connect))
    if missing:
        raise MirrorError(f"no data connection given for {', '.join(missing)}, a target of {handover.volume}")
    gen = generations.take_over(handover.generation, peer=handover.source)  # refused: nothing changed yet
    for name, t in plan.items():
        seed_bitmap(bitmap_path(name), size=handover.size, chunk=options.get("chunk", t.chunk), dirty=t.dirty)
        generations.bitmap_renewed(name)
    logger.info(
        "mirror %s: %s is the source now, taken over from %s (generation %s): targets %s",
        handover.volume,
        node,
        handover.source,
        gen.current,
        ", ".join(f"{name} ({t.dirty_bytes} bytes to resend)" for name, t in plan.items()),
    )
    mirror = Mirror(local, volume=handover.volume, node=node, generations=generations)
    for name, t in plan.items():
        kw = {"mode": t.mode, "chunk": t.chunk, **options}
        mirror.add_target(name, connect[name], bitmap_path(name), **kw)
    with contextlib.suppress(FileNotFoundError):
        handover_path(generations).unlink()
    return mirror
