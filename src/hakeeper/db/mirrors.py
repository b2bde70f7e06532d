"""Mirrored volumes in the LCD (DataKeeper, issue 14): what the administrator asked for, replicated.

A mirror definition is the *intent*: a volume (a tag-like name), its size in
bytes, its current source node, every node's backing store (a block device or
an image file on that node), and for each target its mode (sync or async), its
bitmap chunk and its bandwidth limit. The live state of a mirror (Mirroring,
Paused...) is not here: the replication process knows it (:mod:`hakeeper.replication.control`).

Two changes, replicated to every node of the mirror by the two-phase commit of
:mod:`hakeeper.cluster.configsync`, all or none:

``create_mirror``
    made on the source: a new volume with its first target, or one more target
    of a volume this node is the source of (DataKeeper's ``CREATEMIRROR``, one
    per target). Its arguments carry the whole definition (``others``: the
    targets there were), so that a node that did not know the volume learns it
    whole and one that did checks that it agrees.
``delete_mirror``
    one target (``target``), or the whole volume; the last target's deletion
    deletes the volume. A node taken out of the mirror forgets the volume.
``set_mirror_source``
    a switchover (``hakeeper mirror switchover``): the target ``source`` becomes
    the source, the old source ``previous`` becomes a target with the mode,
    chunk and limit the new source had as a target. Made by the replication
    side once the old source has handed the volume over; every node checks that
    ``previous`` is the source it knows and ``source`` one of its targets.

Every check runs inside the change's transaction, the LCD's and the stores':
a node checks the backing store *it* has — the source when the change is made
there, a target when it prepares the change (the coordinator's prepare runs
it there: that is how "the target's store is smaller than the volume" is known,
and refused, before anything is written anywhere). A change a node commits
after it prepared it is recorded without looking at its store again: the
coordinator has committed it already, and the replication process checks its
store when it starts.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hakeeper.db.catalog import Catalog
from hakeeper.db.journal import _write, logger
from hakeeper.db.model import check_tag
from hakeeper.errors import AlreadyExists, IllegalArgument, NotFound, OutOfRange
from hakeeper.replication.states import MirrorMode

SECTOR = 512
DEFAULT_CHUNK = 64 * 1024  # DataKeeper for Windows: 64 KB per bit of the intent log
MIN_CHUNK = 4096
MAX_CHUNK = 1 << 30
MAX_LIMIT_MBS = 100_000.0  # 100 GB/s: beyond any link; a larger number is a typing error
MB = 1_000_000  # --limit is in MB/s, decimal, as link speeds are written

#: The changes of this module, replicated to every node of the mirror.
MIRROR_CHANGES = frozenset({"create_mirror", "delete_mirror", "set_mirror_source"})


@dataclass(frozen=True)
class MirrorTarget:
    """One mirror of a volume: its target node, that node's store, and the mirror's parameters."""

    node: str
    store: str
    mode: MirrorMode
    bitmap_chunk: int
    limit: int  # bytes per second; 0: no limit

    def record(self) -> list[Any]:
        """As the change log carries it: ``[store, mode, bitmap_chunk, limit]``."""
        return [self.store, self.mode.value, self.bitmap_chunk, self.limit]


@dataclass(frozen=True)
class Mirror:
    """A mirrored volume: its source and its targets, sorted by node."""

    volume: str
    size: int
    source: str
    store: str  # the source's backing store
    targets: tuple[MirrorTarget, ...]

    @property
    def nodes(self) -> list[str]:
        return sorted({self.source, *(t.node for t in self.targets)})

    def target(self, node: str) -> MirrorTarget | None:
        return next((t for t in self.targets if t.node == node), None)


# ---------------------------------------------------------------------- values and their rules


def check_volume(volume: str) -> str:
    """A volume's name obeys the rules of a resource tag (LifeKeeper's)."""
    return check_tag(volume, "volume")


def check_mode(mode: str) -> MirrorMode:
    """``sync`` or ``async``, exactly (as ``ins_setstate -S`` takes state names: no aliases)."""
    try:
        return MirrorMode(mode)
    except ValueError:
        raise IllegalArgument(f"mode {mode!r} is not sync or async") from None


_SIZE = re.compile(r"([0-9]+)([KMG]?)(i?B)?", re.I)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_chunk(text: str) -> int:
    """A bitmap chunk: bytes, or ``64K``, ``1M`` (binary units); a power of two from 4 KiB to 1 GiB."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise IllegalArgument(f"bitmap chunk {text!r} is not a size such as 64K, 256K or 1M")
    value = int(found.group(1)) * _UNITS[found.group(2).upper()]
    return check_chunk(value)


def check_chunk(value: int) -> int:
    if value < MIN_CHUNK or value > MAX_CHUNK:
        raise OutOfRange(f"bitmap chunk {value} bytes is outside 4K..1G")
    if value & (value - 1):
        raise IllegalArgument(f"bitmap chunk {value} bytes is not a power of two (e.g. 64K, 256K)")
    return value


def parse_limit(text: str) -> int:
    """A bandwidth limit in MB/s (decimal; ``0``: none) as bytes per second."""
    try:
        value = float(text.strip().removesuffix("MB/s").strip())
    except ValueError:
        raise IllegalArgument(f"limit {text!r} is not a number of MB/s (0: no limit)") from None
    if not math.isfinite(value) or value < 0 or value > MAX_LIMIT_MBS:
        raise OutOfRange(f"limit {text} MB/s is outside 0..{MAX_LIMIT_MBS:g} (0: no limit)")
    return check_limit(round(value * MB))


def check_limit(value: int) -> int:
    if value < 0 or value > MAX_LIMIT_MBS * MB:
        raise OutOfRange(f"limit {value} bytes/s is outside 0..{MAX_LIMIT_MBS * MB:g}")
    return value


def check_store_path(path: str) -> str:
    """A backing store is named by its absolute path on its node (hakeeperd's working directory is not yours)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise IllegalArgument(f"backing store {path!r} is not an absolute path")
    if "\0" in path or not path.isprintable():
        raise IllegalArgument(f"backing store {path!r} holds a control character")
    return os.path.normpath(path)


def probe_store(path: str) -> int:
    """The size of the backing store at ``path`` on this node: an image file or a block device.

    Raises NotFound when there is nothing there, IllegalArgument when it is
    something else or its size is no volume's (empty, not a multiple of 512).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound(f"no backing store at {path} on this node (an image file or a block device)") from None
    except OSError as exc:
        raise IllegalArgument(f"cannot open the backing store {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise IllegalArgument(f"{path} is neither an image file nor a block device")
        size = os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
    if size == 0 or size % SECTOR:
        raise IllegalArgument(f"{path} has {size} bytes: a volume needs a positive multiple of {SECTOR}")
    return size


# ---------------------------------------------------------------------- the LCD's part


class Mirrors(Catalog):
    """The mirror definitions of the LCD (see the module's docstring)."""

    def mirrors(self) -> list[Mirror]:
        """Every mirror definition, by volume."""
        return [self._mirror(v) for (v,) in self._query("SELECT volume FROM mirrors ORDER BY volume")]

    def has_mirror(self, volume: str) -> bool:
        return self._exists("SELECT 1 FROM mirrors WHERE volume = ?", (volume,))

    def mirror(self, volume: str) -> Mirror:
        if not self.has_mirror(volume):
            raise NotFound(f"no mirrored volume {volume!r} (see: hakeeper mirror status)")
        return self._mirror(volume)

    def _mirror(self, volume: str) -> Mirror:
        size, source = self._query("SELECT size, source FROM mirrors WHERE volume = ?", (volume,))[0]
        stores = dict(self._query("SELECT node, store FROM mirror_stores WHERE volume = ?", (volume,)))
        rows = self._query(
            "SELECT node, mode, bitmap_chunk, rate_limit FROM mirror_targets WHERE volume = ? ORDER BY node", (volume,)
        )
        targets = tuple(MirrorTarget(n, str(stores[n]), MirrorMode(m), int(c), int(r)) for n, m, c, r in rows)
        return Mirror(volume, int(size), str(source), str(stores.get(source, "")), targets)

    @_write
    def create_mirror(
        self,
        volume: str,
        target: str,
        *,
        mode: str = "sync",
        bitmap_chunk: int = DEFAULT_CHUNK,
        limit: int = 0,
        store: str | None = None,
        target_store: str | None = None,
        source: str | None = None,
        size: int | None = None,
        others: Mapping[str, list[Any]] | None = None,
    ) -> Mirror:
        """Mirror ``volume`` from ``source`` (this node by default) to ``target``: a new volume, or one more target.

        Made here (``others`` None): this node must be the source; a new volume
        needs ``store`` (its size is the store's), one that exists keeps its store
        and size (``store``, when given, must be the one it has). ``target_store``
        defaults to the same path. Replayed (``others``: the targets there were,
        node -> [store, mode, chunk, limit]): this node learns the volume whole,
        or checks that what it has agrees. A node checks its own store (module docstring).
        """
        check_volume(volume)
        chosen = check_mode(mode)
        check_chunk(int(bitmap_chunk))
        check_limit(int(limit))
        this = self._local
        source = source if source is not None else this
        self._require_node(source)
        if target not in {n.name for n in self.nodes()}:
            raise NotFound(f"no node named {target!r} (see: sys_list)")
        if target == source:
            raise IllegalArgument(f"{target} is the source of {volume!r}: a volume cannot be mirrored to itself")
        existing = self.mirror(volume) if self.has_mirror(volume) else None
        made_here = others is None
        if existing is not None:
            if existing.source != source:
                where = "run it on the source" if made_here else "it differs here"
                raise IllegalArgument(f"{volume!r} is mirrored from {existing.source}, not {source}: {where}")
            if existing.target(target) is not None:
                raise AlreadyExists(
                    f"{volume!r} is mirrored to {target} already (see: hakeeper mirror status {volume})"
                )
            if store is not None and check_store_path(store) != existing.store:
                raise IllegalArgument(f"{volume!r} has the backing store {existing.store} on {source}, not {store}")
            if size is not None and size != existing.size:
                raise IllegalArgument(f"{volume!r} has {existing.size} bytes here, not {size}")
        if store is None:
            if existing is None:
                raise IllegalArgument(f"a new mirrored volume needs its backing store on {source} (--store PATH)")
            store = existing.store
        store = check_store_path(store)
        target_store = check_store_path(target_store) if target_store is not None else store
        current = {t.node: t.record() for t in existing.targets} if existing is not None else {}
        if made_here:
            if source != this:
                raise IllegalArgument(f"run it on {source}, the source of {volume!r}: a mirror is created there")
            others = current
            found = probe_store(store)  # this node's store: the size of a new volume
            if existing is None:
                size = found
            else:
                size = existing.size
                if found < size:
                    raise IllegalArgument(f"{store} on {this} has {found} bytes, less than {volume!r}'s {size}")
        else:  # replayed: the same targets as where it was made (a node that lacked the volume learns them)
            assert others is not None
            if existing is not None and {n: list(v) for n, v in others.items()} != current:
                raise IllegalArgument(f"{volume!r}'s targets on {this} differ from those on {source}")
            if size is None:
                raise IllegalArgument("a replicated create_mirror carries the volume's size")
            for name, record in others.items():
                self._require_node(name)
                MirrorTarget(name, check_store_path(record[0]), check_mode(record[1]), check_chunk(int(record[2])),
                             check_limit(int(record[3])))  # fmt: skip
        assert size is not None
        if size <= 0 or size % SECTOR:
            raise IllegalArgument(f"a volume's size is a positive multiple of {SECTOR} bytes, not {size}")
        if this == target and self._applying is None:  # the target's side, checked as it prepares the change
            found = probe_store(target_store)
            if found < size:
                raise IllegalArgument(
                    f"{target_store} on {target} has {found} bytes, less than {volume!r}'s {size} on {source}"
                )
        new = MirrorTarget(target, target_store, chosen, int(bitmap_chunk), int(limit))
        args = {
            "volume": volume,
            "target": target,
            "mode": chosen.value,
            "bitmap_chunk": new.bitmap_chunk,
            "limit": new.limit,
            "store": store,
            "target_store": target_store,
            "source": source,
            "size": size,
            "others": {n: list(v) for n, v in sorted(others.items())},
        }
        with self._change("create_mirror", args) as db:
            if existing is None:
                db.execute("INSERT INTO mirrors (volume, size, source) VALUES (?, ?, ?)", (volume, size, source))
                rows = [(source, store), *((n, str(r[0])) for n, r in others.items())]
                db.executemany("INSERT INTO mirror_stores (volume, node, store) VALUES (?, ?, ?)",
                               [(volume, n, s) for n, s in rows])  # fmt: skip
                db.executemany(
                    "INSERT INTO mirror_targets (volume, node, mode, bitmap_chunk, rate_limit) VALUES (?, ?, ?, ?, ?)",
                    [(volume, n, str(r[1]), int(r[2]), int(r[3])) for n, r in others.items()],
                )
            db.execute(
                "INSERT INTO mirror_stores (volume, node, store) VALUES (?, ?, ?)", (volume, target, target_store)
            )
            db.execute(
                "INSERT INTO mirror_targets (volume, node, mode, bitmap_chunk, rate_limit) VALUES (?, ?, ?, ?, ?)",
                (volume, target, new.mode.value, new.bitmap_chunk, new.limit),
            )
        shown = f"mirror {volume}: {source} -> {target} ({chosen.value}, {size} bytes) defined by {self.actor}"
        self._when_committed(lambda: logger.info("%s", shown))
        return self._mirror(volume)  # read in the change's transaction (a dry run's too, before its rollback)

    @_write
    def delete_mirror(self, volume: str, target: str | None = None, *, nodes: list[str] | None = None) -> list[str]:
        """Delete ``volume``'s mirror to ``target``, or the whole volume; returns the targets deleted.

        The last target's deletion deletes the volume; a node taken out of the
        mirror forgets the volume. ``nodes``: the mirror's nodes where it was made
        (replayed: they must be the ones this node knows).
        """
        check_volume(volume)
        existing = self.mirror(volume)
        if nodes is not None and sorted(nodes) != existing.nodes:
            raise IllegalArgument(f"{volume!r}'s nodes on {self._local} differ from those where it was deleted")
        if target is not None:
            if existing.target(target) is None:
                raise NotFound(f"{volume!r} is not mirrored to {target!r} (see: hakeeper mirror status {volume})")
            doomed = [target]
        else:
            doomed = [t.node for t in existing.targets]
        whole = set(doomed) == {t.node for t in existing.targets} or self._local in doomed
        args: dict[str, Any] = {"volume": volume, "target": target, "nodes": existing.nodes}
        with self._change("delete_mirror", args) as db:
            if whole:  # the last target, or this node leaves the mirror: the volume goes (here)
                db.execute("DELETE FROM mirror_targets WHERE volume = ?", (volume,))
                db.execute("DELETE FROM mirror_stores WHERE volume = ?", (volume,))
                db.execute("DELETE FROM mirrors WHERE volume = ?", (volume,))
            else:
                db.executemany(
                    "DELETE FROM mirror_targets WHERE volume = ? AND node = ?", [(volume, n) for n in doomed]
                )
                db.executemany("DELETE FROM mirror_stores WHERE volume = ? AND node = ?", [(volume, n) for n in doomed])
        gone = f"mirror {volume}: -> {', '.join(doomed)} deleted{' with the volume' if whole else ''} by {self.actor}"
        self._when_committed(lambda: logger.info("%s", gone))
        return doomed

    @_write
    def set_mirror_source(self, volume: str, source: str, previous: str, *, nodes: list[str] | None = None) -> Mirror:
        """Make the target ``source`` the source of ``volume`` and the source ``previous`` a target (switchover).

        ``previous`` takes the mode, bitmap chunk and limit ``source`` had; the stores stay each node's.
        ``nodes``: the mirror's nodes where it was made (replayed: they must be the ones this node knows).
        """
        check_volume(volume)
        existing = self.mirror(volume)
        if nodes is not None and sorted(nodes) != existing.nodes:
            raise IllegalArgument(f"{volume!r}'s nodes on {self._local} differ from those where it was switched over")
        if existing.source != previous:
            raise IllegalArgument(f"{volume!r} is mirrored from {existing.source} on {self._local}, not {previous}")
        new = existing.target(source)
        if new is None:
            raise IllegalArgument(f"{source} is not a target of {volume!r}: only a target can become its source")
        args: dict[str, Any] = {"volume": volume, "source": source, "previous": previous, "nodes": existing.nodes}
        with self._change("set_mirror_source", args) as db:
            db.execute("UPDATE mirrors SET source = ? WHERE volume = ?", (source, volume))
            db.execute("DELETE FROM mirror_targets WHERE volume = ? AND node = ?", (volume, source))
            db.execute(
                "INSERT INTO mirror_targets (volume, node, mode, bitmap_chunk, rate_limit) VALUES (?, ?, ?, ?, ?)",
                (volume, previous, new.mode.value, new.bitmap_chunk, new.limit),
            )
        shown = f"mirror {volume}: switched over from {previous} to {source} by {self.actor}"
        self._when_committed(lambda: logger.info("%s", shown))
        return self._mirror(volume)


def mirror_nodes(op: str, args: Mapping[str, Any]) -> set[str]:
    """The nodes a mirror change concerns, from its arguments alone: the source, every target, the new one."""
    if op == "create_mirror":
        return {str(args["source"]), str(args["target"]), *(str(n) for n in args.get("others") or {})}
    return {str(n) for n in args.get("nodes") or []}
