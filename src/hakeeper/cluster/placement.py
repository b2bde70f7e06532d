"""Who may run a hierarchy: an ownership record per hierarchy, changed only by a claim a majority accepted.

The record is ``Owner(epoch, node)``: the epoch only grows, and each epoch has
one owner. It is kept by every voter (every node of the cluster, witnesses
included) and changed by a *claim*, a compare-and-set run with Paxos's two
phases (CASPaxos, Rystsov 2018: single-decree Paxos with a change function,
repeated for every change of one register):

1. **prepare** (ballot ``b``): each voter promises to ignore ballots below
   ``b`` and answers with the value it accepted last (and that value's
   ballot). With promises from a majority, the value of the highest accepted
   ballot among them is the register's current value: every value a majority
   accepted is seen by every later majority.
2. the claimant applies its change to that value (``Owner(e, x)`` becomes
   ``Owner(e + 1, me)``), or gives up (the owner is alive, say);
3. **accept** (``b``, new value): each voter that promised nothing higher
   stores it. Accepted by a majority, the claim holds.

Ballots are ``(round, node)`` pairs, so two claimants never share one; a voter
that refuses says what it promised, and the claimant retries above it, a few
times, after a random pause (two claimants duelling give way to each other).

**Invariant** (checked by the model test, ``tests/unit/test_placement_model.py``):
the values that a majority accepted form one chain ``Owner(1, a)``,
``Owner(2, b)``, … — never two different owners with the same epoch, and a
later claim always builds on the latest chosen value. A node acts on a
hierarchy only under an epoch it claimed itself; learning of a higher epoch
owned by another node, it stops at once. A claim does not end the old owner's
right by itself: :mod:`hakeeper.cluster.failover` lets the new owner restore only
once the old owner released, was fenced, or its lease lapsed (it has been DEAD
for ``takeover_delay``, after which a node cut off from a majority has stopped
serving on its own).

This module holds the pure voter (:func:`on_prepare`, :func:`on_accept`), the
claimant (:func:`claim`, over any :class:`Voters` transport), and
:class:`BallotBox`, a voter's durable records (SQLite, ``synchronous=FULL``:
a promise forgotten in a crash could let two claims both win). Anything that
offers :class:`PlacementStore` (an etcd transaction, for large fleets) can
stand in for the voters.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hakeeper.layout import PLACEMENT_NAME

logger = logging.getLogger(__name__)

CLAIM_TRIES = 5  # rounds a claim tries when another claimant's ballot is higher
PAUSE = (0.005, 0.03)  # s: the random pause before such a retry


@dataclass(frozen=True, order=True)
class Ballot:
    round: int
    node: str

    def as_json(self) -> list[Any]:
        return [self.round, self.node]

    @classmethod
    def from_json(cls, data: Any) -> Ballot:
        return cls(int(data[0]), str(data[1]))


ZERO = Ballot(0, "")


@dataclass(frozen=True)
class Owner:
    """Who may run a hierarchy under ``epoch``; ``node`` None: nobody (released, or never claimed).

    ``previous``: the nodes this record took the hierarchy from, until its owner
    confirms it (a record accepted by a minority only can be picked up by a later
    claim: whoever builds on it must still end those nodes' leases).
    """

    epoch: int
    node: str | None
    previous: tuple[str, ...] = ()

    def as_json(self) -> list[Any]:
        return [self.epoch, self.node, list(self.previous)]

    @classmethod
    def from_json(cls, data: Any) -> Owner:
        previous = tuple(str(n) for n in data[2]) if len(data) > 2 else ()
        return cls(int(data[0]), None if data[1] is None else str(data[1]), previous)

    def __str__(self) -> str:
        return f"{self.node or 'nobody'} (epoch {self.epoch})"


NOBODY = Owner(0, None)


@dataclass(frozen=True)
class Slot:
    """One voter's record for one hierarchy."""

    promised: Ballot = ZERO
    accepted: Ballot = ZERO
    value: Owner = NOBODY


# ---------------------------------------------------------------------- the voter (pure)


@dataclass(frozen=True)
class Answer:
    ok: bool
    promised: Ballot  # the voter's promise after the request
    accepted: Ballot = ZERO  # prepare: the ballot of the value below
    value: Owner = NOBODY  # prepare: the value the voter accepted last
    veto: str = ""  # accept: why the voter will not let a previous owner's lease be taken

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "promised": self.promised.as_json(),
            "accepted": self.accepted.as_json(),
            "value": self.value.as_json(),
            "veto": self.veto,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        return cls(
            bool(data["ok"]),
            Ballot.from_json(data["promised"]),
            Ballot.from_json(data["accepted"]),
            Owner.from_json(data["value"]),
            str(data.get("veto") or ""),
        )


def on_prepare(slot: Slot, ballot: Ballot) -> tuple[Slot, Answer]:
    """Phase 1 at a voter: promise ``ballot`` if it is above every promise made; say what was accepted."""
    if ballot <= slot.promised:
        return slot, Answer(False, slot.promised)
    slot = Slot(ballot, slot.accepted, slot.value)
    return slot, Answer(True, ballot, slot.accepted, slot.value)


def on_accept(slot: Slot, ballot: Ballot, value: Owner) -> tuple[Slot, Answer]:
    """Phase 2 at a voter: store ``value`` unless a higher ballot was promised meanwhile."""
    if ballot < slot.promised:
        return slot, Answer(False, slot.promised)
    return Slot(ballot, ballot, value), Answer(True, ballot)


# ---------------------------------------------------------------------- the claimant


class Voters(Protocol):
    """How a claimant reaches the voters; a voter that does not answer raises (any exception)."""

    async def prepare(self, voter: str, key: str, ballot: Ballot) -> Answer: ...

    async def accept(self, voter: str, key: str, ballot: Ballot, value: Owner, *, check: tuple[str, ...]) -> Answer:
        """Phase 2; the voter first checks that the nodes in ``check`` lost their lease (or vetoes)."""


class Refuse(Exception):
    """Raised by a change function: the claim stops, nothing is written."""


Change = Callable[[Owner], Owner]


@dataclass(frozen=True)
class Outcome:
    """What a claim found and did."""

    ok: bool  # the new value holds (a majority accepted it)
    previous: Owner | None  # the value the claim found (None: no majority answered)
    now: Owner | None  # the value it wrote
    why: str = ""
    answered: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.ok:
            return f"claimed: {self.previous} -> {self.now}"
        return self.why


def majority(count: int) -> int:
    return count // 2 + 1


async def claim(
    voters: Voters,
    names: Iterable[str],
    key: str,
    me: str,
    change: Change,
    *,
    need: int | None = None,
    seen: dict[str, int] | None = None,
    tries: int = CLAIM_TRIES,
    pause: tuple[float, float] = PAUSE,
    lease: Callable[[Owner], tuple[str, ...]] | None = None,
) -> Outcome:
    """Change ``key``'s record through ``change`` at a majority of ``names`` (or ``need`` of them).

    ``seen`` keeps the highest round met per key between claims, so the next
    ballot starts above it. ``lease`` names, from the value found, the nodes
    whose lease the claim ends (the owner, and the nodes an unconfirmed record
    took it from, unless they asked): each voter
    checks it before accepting, and one veto ends the claim (nothing chosen
    unless a majority accepted anyway). Never raises for voters that fail: they
    count as not answering.
    """
    everyone = sorted(set(names))
    need = majority(len(everyone)) if need is None else need
    rounds = seen if seen is not None else {}
    why = ""
    for attempt in range(tries):
        if attempt:
            await asyncio.sleep(random.uniform(*pause))
        ballot = Ballot(rounds.get(key, 0) + 1, me)
        rounds[key] = ballot.round

        async def ask_prepare(voter: str, b: Ballot = ballot) -> Answer:
            return await voters.prepare(voter, key, b)

        answers = await _ask(everyone, ask_prepare, enough=need)
        promised = {v: a for v, a in answers.items() if a.ok}
        _note_rounds(rounds, key, answers.values())
        if len(promised) < need:
            higher = any(not a.ok for a in answers.values())
            why = _short(key, "promises", promised, answers, need=need, of=len(everyone))
            if higher:
                continue
            return Outcome(False, None, None, why, tuple(sorted(answers)))
        latest = max(promised.values(), key=lambda a: a.accepted)
        current = latest.value
        try:
            wanted = change(current)
        except Refuse as no:
            return Outcome(False, current, None, str(no), tuple(sorted(answers)))
        if wanted.epoch > current.epoch:  # above any epoch seen, even one a failed claim left behind
            top = max(a.value.epoch for a in promised.values())
            wanted = Owner(max(wanted.epoch, top + 1), wanted.node, wanted.previous)
        check = lease(current) if lease is not None else ()

        async def ask_accept(
            voter: str, b: Ballot = ballot, w: Owner = wanted, check: tuple[str, ...] = check
        ) -> Answer:
            return await voters.accept(voter, key, b, w, check=check)

        accepted = await _ask(sorted(promised), ask_accept, enough=need)
        took = {v: a for v, a in accepted.items() if a.ok}
        _note_rounds(rounds, key, accepted.values())
        if len(took) >= need:
            return Outcome(True, current, wanted, "", tuple(sorted(took)))
        vetoes = sorted(f"{v}: {a.veto}" for v, a in accepted.items() if a.veto)
        if vetoes:
            return Outcome(False, current, None, f"vetoed ({'; '.join(vetoes)})", tuple(sorted(accepted)))
        why = _short(key, "acceptances", took, accepted, need=need, of=len(everyone))
        if not any(not a.ok for a in accepted.values()):
            return Outcome(False, current, None, why, tuple(sorted(accepted)))
    return Outcome(False, None, None, f"{why}; gave way {tries} times to other claimants")


async def _ask(names: list[str], request: Callable[[str], Awaitable[Answer]], *, enough: int) -> dict[str, Answer]:
    """The voters' answers, once ``enough`` of them said yes or every voter answered or failed."""

    async def one(voter: str) -> Answer | None:
        try:
            answer = await request(voter)
        except Exception as exc:  # noqa: BLE001 - a voter that fails, however, is one that did not answer
            logger.debug("voter %s: %s", voter, exc)
            return None
        return answer if isinstance(answer, Answer) else None

    asked = {asyncio.ensure_future(one(v)): v for v in names}
    got: dict[str, Answer] = {}
    pending = set(asked)
    while pending and sum(a.ok for a in got.values()) < enough:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            answer = task.result()
            if answer is not None:
                got[asked[task]] = answer
    for task in pending:  # a slow voter does not hold up the claim, but still hears it (bounded by its timeout)
        _STRAGGLERS.add(task)
        task.add_done_callback(_STRAGGLERS.discard)
    return got


_STRAGGLERS: set[asyncio.Future[Answer | None]] = set()


def _note_rounds(rounds: dict[str, int], key: str, answers: Iterable[Answer]) -> None:
    for a in answers:
        rounds[key] = max(rounds.get(key, 0), a.promised.round)


def _short(key: str, what: str, got: Mapping[str, Answer], asked: Mapping[str, Answer], *, need: int, of: int) -> str:
    refused = sorted(v for v, a in asked.items() if not a.ok)
    extra = f" ({', '.join(refused)} promised a higher ballot)" if refused else ""
    return f"{key}: {len(got)} of {of} voters gave their {what}, {need} needed{extra}"


# ---------------------------------------------------------------------- a voter's durable records


class BallotBox:
    """A voter's records (and what this node runs under which epoch) in ``<root>/placement.db``.

    Every method is one transaction, serialised by a lock, so the daemon can
    run them in a worker thread (:meth:`run`) and keep its event loop free.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / PLACEMENT_NAME
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=2.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS slots (
                key TEXT PRIMARY KEY, promised_round INTEGER NOT NULL, promised_node TEXT NOT NULL,
                accepted_round INTEGER NOT NULL, accepted_node TEXT NOT NULL,
                epoch INTEGER NOT NULL, owner TEXT, previous TEXT NOT NULL DEFAULT '');
            CREATE TABLE IF NOT EXISTS held (key TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS won (key TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
            """
        )
        self.path.chmod(0o600)
        # Only this process writes the file: reads come from memory, not from the disk on the event loop.
        rows = self._conn.execute(
            "SELECT key, promised_round, promised_node, accepted_round, accepted_node, epoch, owner, previous"
            " FROM slots"
        ).fetchall()
        self._slots = {r[0]: _slot_of(r[1:]) for r in rows}
        self._held: dict[str, int] = dict(self._conn.execute("SELECT key, epoch FROM held").fetchall())
        self._won: dict[str, int] = dict(self._conn.execute("SELECT key, epoch FROM won").fetchall())

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def slot(self, key: str) -> Slot:
        return self._slots.get(key, Slot())

    def slots(self) -> dict[str, Slot]:
        return dict(self._slots)

    def _slot(self, key: str) -> Slot:
        return self._slots.get(key, Slot())

    def _store(self, key: str, slot: Slot) -> None:
        self._slots[key] = slot
        self._conn.execute(
            "INSERT OR REPLACE INTO slots VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, slot.promised.round, slot.promised.node, slot.accepted.round, slot.accepted.node,
             slot.value.epoch, slot.value.node, ",".join(slot.value.previous)),
        )  # fmt: skip

    def prepare(self, key: str, ballot: Ballot) -> Answer:
        return self._vote(key, lambda slot: on_prepare(slot, ballot))

    def accept(self, key: str, ballot: Ballot, value: Owner) -> Answer:
        return self._vote(key, lambda slot: on_accept(slot, ballot, value))

    def _vote(self, key: str, step: Callable[[Slot], tuple[Slot, Answer]]) -> Answer:
        """One voter step as one transaction: read the slot, decide, store what changed, commit."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                slot, answer = step(self._slot(key))
                if answer.ok:
                    self._store(key, slot)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                self._reload(key)
                raise
            return answer

    def _reload(self, key: str) -> None:
        row = self._conn.execute(
            "SELECT promised_round, promised_node, accepted_round, accepted_node, epoch, owner, previous FROM slots"
            " WHERE key=?",
            (key,),
        ).fetchone()
        if row is None:
            self._slots.pop(key, None)
        else:
            self._slots[key] = _slot_of(row)

    def held(self) -> dict[str, int]:
        """The hierarchies this node restored, with the epoch it restored them under."""
        return dict(self._held)

    def claimed(self, key: str, epoch: int) -> None:
        """This node's claim of ``key`` under ``epoch`` held: it holds and has won it (one transaction)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("INSERT OR REPLACE INTO held VALUES (?, ?)", (key, epoch))
                self._conn.execute("INSERT OR REPLACE INTO won VALUES (?, ?)", (key, epoch))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._held[key] = self._won[key] = epoch

    def won(self) -> dict[str, int]:
        """The epoch of this node's last claim that held, per hierarchy (kept when it is taken out of service)."""
        return dict(self._won)

    def won_at(self, key: str, epoch: int) -> None:
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO won VALUES (?, ?)", (key, epoch))
            self._won[key] = epoch

    def let_go(self, key: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM held WHERE key=?", (key,))
            self._held.pop(key, None)


def _slot_of(row: Any) -> Slot:
    previous = tuple(n for n in str(row[6] or "").split(",") if n)
    return Slot(Ballot(row[0], row[1]), Ballot(row[2], row[3]), Owner(row[4], row[5], previous))


class PlacementStore(Protocol):
    """What failover needs of the ownership records; :class:`Placement` over the cluster's voters is one."""

    async def claim(
        self, key: str, change: Change, *, lease: Callable[[Owner], tuple[str, ...]] | None = None
    ) -> Outcome: ...

    def known(self, key: str) -> Owner: ...


class Placement:
    """The cluster's voters as a :class:`PlacementStore`: this node's :class:`BallotBox` and its peers'."""

    def __init__(self, me: str, box: BallotBox, voters: Voters, names: Callable[[], list[str]],
                 need: Callable[[list[str]], int] | None = None) -> None:  # fmt: skip
        self.me = me
        self.box = box
        self.voters = voters
        self.names = names
        self.need = need or (lambda everyone: majority(len(everyone)))
        self._rounds: dict[str, int] = {}

    async def claim(
        self, key: str, change: Change, *, lease: Callable[[Owner], tuple[str, ...]] | None = None
    ) -> Outcome:
        everyone = self.names()
        need = self.need(everyone)
        # Start above every ballot this node's own voter has seen (another node's last claim, say): a ballot
        # below it is refused, and the retry costs a random pause and another round.
        slot = self.box.slot(key)
        self._rounds[key] = max(self._rounds.get(key, 0), slot.promised.round, slot.accepted.round)
        return await claim(self.voters, everyone, key, self.me, change, need=need, seen=self._rounds, lease=lease)

    def known(self, key: str) -> Owner:
        """The value this node's own voter accepted last: a hint (another may be newer), never a license to act."""
        return self.box.slot(key).value
