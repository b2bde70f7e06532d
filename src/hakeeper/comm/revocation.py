"""Revoked node certificates: ``<root>/cluster/revoked.json``, the same on every member.

A node removed from the cluster still holds a certificate of the cluster CA,
valid for years. ``hakeeper cluster revoke NODE`` records::

    {"version": 1, "nodes": {"node3": {"revoked": 1767225600.0, "by": "node1"}}}

and from then on every certificate naming node3 that was issued at or before
that moment is refused in the TLS handshake, both ways (:mod:`hakeeper.comm.tls`),
as a certificate of another CA is. Revoking by name and time rather than by
serial number covers every certificate the node ever got (a renewal the
revoking member never saw included), and lets a node of that name be admitted
again later with a new token: its new certificate is issued after the
revocation. The issue time of a certificate is its start of validity plus
:data:`~hakeeper.comm.pki.CLOCK_SKEW` (:func:`~hakeeper.comm.pki.issued_at`), on
the issuing member's clock: re-admit a revoked name only after the clocks of
the members have passed the revocation.

Members exchange their lists and keep the union (for one node, the latest
revocation), so lists converge whatever the order: the revoking member pushes
its list to every live peer, and a member whose peer comes back (or that
starts) exchanges lists with it. Nothing is ever taken off the list.

:class:`Revocations` is pure and immutable; the file is read and written here
under the cluster directory's lock, atomically, mode 0600.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from hakeeper.comm.identity import write_private
from hakeeper.comm.pki import attribute, issued_at
from hakeeper.db.model import check_name
from hakeeper.errors import IllegalArgument, SystemCallFailed

REVOKED_FILE = "revoked.json"
MAX_ENTRIES = 10_000  # a list from a peer longer than this is refused (a cluster has a few nodes)


@dataclass(frozen=True)
class Revocation:
    """Node ``node``'s certificates issued at or before ``revoked`` (seconds since the epoch) are refused."""

    node: str
    revoked: float
    by: str

    def covers(self, cert: x509.Certificate) -> bool:
        return issued_at(cert).timestamp() <= self.revoked

    def sentence(self) -> str:
        when = dt.datetime.fromtimestamp(self.revoked, dt.UTC)
        return f"node {self.node}'s certificate was revoked by {self.by} at {when:%Y-%m-%d %H:%M:%S} UTC"


@dataclass(frozen=True)
class Revocations:
    """A revocation list: one entry per node name."""

    entries: Mapping[str, Revocation] = field(default_factory=dict)

    def refusal(self, cert: x509.Certificate) -> str | None:
        """Why ``cert`` is refused (it names a revoked node and is not newer than the revocation), or None."""
        node = attribute(cert.subject, NameOID.COMMON_NAME)
        entry = self.entries.get(node) if node is not None else None
        return entry.sentence() if entry is not None and entry.covers(cert) else None

    def revoke(self, node: str, when: float, by: str) -> Revocations:
        return self.merge(Revocations({node: Revocation(check_name(node, "node name"), float(when), by)}))

    def merge(self, other: Revocations) -> Revocations:
        """The union; for a node in both, the later revocation (it covers more certificates)."""
        merged = dict(self.entries)
        for node, entry in other.entries.items():
            mine = merged.get(node)
            if mine is None or entry.revoked > mine.revoked:
                merged[node] = entry
        return Revocations(merged)

    def as_json(self) -> dict[str, Any]:
        nodes = {n: {"revoked": e.revoked, "by": e.by} for n, e in sorted(self.entries.items())}
        return {"version": 1, "nodes": nodes}

    @classmethod
    def from_json(cls, data: Any) -> Revocations:
        """A list as :meth:`as_json` writes it; :class:`ValueError` saying what is wrong otherwise."""
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, dict):
            raise ValueError("no 'nodes' object")
        if len(nodes) > MAX_ENTRIES:
            raise ValueError(f"more than {MAX_ENTRIES} entries")
        entries = {}
        for node, entry in nodes.items():
            try:
                check_name(node, "node name")
            except IllegalArgument as exc:
                raise ValueError(str(exc)) from None
            if not isinstance(entry, dict) or not isinstance(entry.get("revoked"), (int, float)):
                raise ValueError(f"entry {node!r} has no revocation time")
            entries[node] = Revocation(node, float(entry["revoked"]), str(entry.get("by", "?")))
        return cls(entries)

    def __bool__(self) -> bool:
        return bool(self.entries)


# ---------------------------------------------------------------------- the file


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """The cluster directory's lock (the join tokens take the same one)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SystemCallFailed(f"cannot open {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def load_revocations(directory: Path) -> Revocations:
    """The list in ``directory`` (none: an empty list); a damaged file is an error, never an empty list."""
    path = directory / REVOKED_FILE
    try:
        return Revocations.from_json(json.loads(path.read_bytes()))
    except FileNotFoundError:
        return Revocations()
    except OSError as exc:
        raise SystemCallFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # json's errors are ValueErrors too
        raise SystemCallFailed(f"{path} is damaged ({exc}); copy it from another member") from None


def merge_revocations(directory: Path, other: Revocations) -> tuple[Revocations, bool]:
    """Merge ``other`` into the file (locked, atomic): the list now, and whether the file changed."""
    with _locked(directory):
        current = load_revocations(directory)
        merged = current.merge(other)
        if merged == current:
            return current, False
        write_private(directory / REVOKED_FILE, json.dumps(merged.as_json(), indent=1).encode() + b"\n")
        return merged, True


class RevocationWatch:
    """hakeeperd's copy of the list in memory, checked in every handshake without touching the disk.

    It is read at start and again when the list changes (a peer's list merged,
    ``hakeeper cluster revoke`` run here); :meth:`refusal` is what
    :func:`hakeeper.comm.tls.accept_tls` and the clients call.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.current = load_revocations(directory)

    def refusal(self, cert: x509.Certificate) -> str | None:
        return self.current.refusal(cert)

    def reload(self) -> Revocations:
        self.current = load_revocations(self.directory)
        return self.current

    def merge(self, other: Revocations) -> bool:
        """Merge a peer's list into the file and memory (blocking: run in a thread); whether anything was new."""
        self.current, changed = merge_revocations(self.directory, other)
        return changed
