"""The lease: how long a node that lost quorum has to stop serving before the others take over.

The survivors of a partition take over ``takeover_delay`` after their own
detection; the losing node's detection may come up to one ``heartbeat_interval``
later (with ``tcp_remote``, it learns that it lost only after ``quorum_timeout``
more). What is left is the losing node's **lease**::

    lease = takeover_delay - heartbeat_interval [- quorum_timeout with tcp_remote]

Within it, no client may reach the losing node any more. Stopping an application
can take seconds, so the losing node first **cuts its network face** — removes
every virtual address (comm/ip) it holds, at once, which takes milliseconds — and
only then removes the rest in dependency order
(:meth:`hakeeper.recovery.engine.Engine.cut_then_remove_everything`). The cut is
timed and checked against the lease, and so is the removal of each hierarchy that
has no address to cut: its clients are cut only when its remove ends.

``hakeeper why`` and ``lkstart`` warn (:func:`advice`) about a hierarchy that has
no address and whose last measured remove (or, never measured, its kits' remove
timeouts) does not fit in the lease. The lease covers what clients can reach; an
application that writes to shared storage needs fencing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from hakeeper.cluster import decide
from hakeeper.cluster.decide import Hierarchy
from hakeeper.db import Lcd, State, graph
from hakeeper.recovery import plan
from hakeeper.recovery.engine import Engine, Report

logger = logging.getLogger(__name__)

ADVICE = "add an IP resource below it, or fencing, or raise takeover_delay"
#: The heartbeat process sees a loss of quorum before hakeeperd: a cut it made this long before hakeeperd's counts.
DIRECT_CUT_BEFORE = 2.0


def lease(settings: Mapping[str, Any]) -> float:
    """Seconds the losing side of a partition has, from its own detection, before the others take over."""
    quorum = float(settings["quorum_timeout"]) if settings["quorum_mode"] == "tcp_remote" else 0.0
    return round(float(settings["takeover_delay"]) - float(settings["heartbeat_interval"]) - quorum, 6)


def formula(settings: Mapping[str, Any]) -> str:
    quorum = " - quorum_timeout" if settings["quorum_mode"] == "tcp_remote" else ""
    return f"takeover_delay - heartbeat_interval{quorum}"


def applies(settings: Mapping[str, Any]) -> bool:
    """Whether the lease is what keeps a partition from serving twice.

    Not with ``quorum_mode=none`` (nobody ever loses quorum), nor when a node that
    loses quorum halts (``fastkill``, ``fastboot``), nor with a ``fence_command``
    (the survivors fence the node before they take over).
    """
    return (
        settings["quorum_mode"] != "none"
        and settings["quorum_loss_action"] == "osu"
        and not str(settings["fence_command"]).strip()
    )


def face_of(lcd: Lcd, h: Hierarchy) -> list[str]:
    """The virtual addresses of ``h``: what is cut first when this node loses quorum."""
    return sorted(r.tag for r in lcd.resources() if r.tag in h.members and plan.is_network_face(r))


def longest(members: frozenset[str], edges: list[graph.Edge], seconds: Callable[[str], float]) -> float:
    """The longest chain of ``seconds`` from a root down through ``members`` (a remove runs parents first)."""
    kids = graph.children_of([(p, c) for p, c in edges if p in members and c in members])
    memo: dict[str, float] = {}

    def down(tag: str) -> float:
        if tag not in memo:
            memo[tag] = seconds(tag) + max((down(c) for c in kids.get(tag, ())), default=0.0)
        return memo[tag]

    return max((down(t) for t in members), default=0.0)


def advice(lcd: Lcd, h: Hierarchy, timeout: Callable[[str], float] | None = None) -> str | None:
    """A warning when ``h`` has no virtual address and its remove may not end within the lease; else None.

    ``timeout``: a member's configured remove timeout, used when its remove was never measured here.
    """
    settings = lcd.settings()
    if not applies(settings):
        return None
    limit = lease(settings)
    face = face_of(lcd, h)
    if face:
        cut = lcd.measurements("cut")
        took = max((cut[t] for t in face if t in cut), default=0.0)
        if took <= limit:
            return None
        return (
            f"{h.name}: after the last quorum loss, cutting its clients off (removing {', '.join(face)}) took "
            f"{took:.3f} s, longer than the {limit:.2f} s lease ({formula(settings)}); add fencing, or raise "
            "takeover_delay"
        )
    measured = lcd.measurements("remove")
    known = [measured[t] for t in h.members if t in measured]
    if len(known) == len(h.members):
        took = max(known)
        if took <= limit:
            return None
        how = f"(last took {took:.2f} s), longer than"
    elif timeout is not None:
        bound = longest(h.members, lcd.edges(), lambda t: measured.get(t, timeout(t)))
        if bound <= limit:
            return None
        how = f"(never measured here; its remove timeouts allow {bound:g} s), which may be longer than"
    else:
        how = "(never measured here), which may be longer than"
    return (
        f"{h.name} has no IP resource: after a quorum loss its clients are cut only when its remove ends "
        f"{how} the {limit:.2f} s lease ({formula(settings)}); {ADVICE}"
    )


def cut_line(lcd: Lcd, h: Hierarchy) -> str | None:
    """The ``lease:`` line of ``hakeeper why`` for a hierarchy with a virtual address (None: no lease applies)."""
    settings = lcd.settings()
    face = face_of(lcd, h)
    if not applies(settings) or not face:
        return None
    cut = lcd.measurements("cut")
    known = [cut[t] for t in face if t in cut]
    took = f"last took {max(known):.3f} s" if known else "never measured here"
    return f"after a quorum loss {', '.join(face)} is removed first ({took}); the lease is {lease(settings):.2f} s"


class Face:
    """The virtual addresses in service here (tag -> address), which the heartbeat process cuts by itself
    the moment it hears no majority (:mod:`hakeeper.comm.cut`). Empty unless a quorum loss takes this
    node's resources out of service (``quorum_loss_action=osu``). Asked at every tick: kept until the LCD changes.
    """

    def __init__(self, lcd: Lcd) -> None:
        self.lcd = lcd
        self._kept: tuple[int, dict[str, str]] | None = None

    def __call__(self) -> dict[str, str]:
        seq = self.lcd.last_seq()
        if self._kept is None or self._kept[0] != seq:
            self._kept = (seq, self._read())
        return dict(self._kept[1])

    def _read(self) -> dict[str, str]:
        settings = self.lcd.settings()
        if settings["quorum_mode"] != "majority" or settings["quorum_loss_action"] != "osu":
            return {}
        face = {}
        for r in self.lcd.resources():
            if r.state is not State.OSU and plan.is_network_face(r) and isinstance(r.info, dict):
                address = str(r.info.get("address", ""))
                if address:
                    face[r.tag] = address.split("/", 1)[0]
        return face


class DirectCuts:
    """What the heartbeat process cut by itself and how fast: the lease is checked against the first cut."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last: tuple[float, frozenset[str], float] | None = None  # when heard, tags, seconds it took

    def heard(self, tags: list[str], took: float) -> None:
        self.last = (self.clock(), frozenset(tags), took)

    def covering(self, tags: list[str], since: float) -> float | None:
        """How long the heartbeat process took to cut all of ``tags``, if it did so after ``since``."""
        if self.last is None:
            return None
        when, cut, took = self.last
        return took if when >= since and set(tags) <= cut else None


async def take_out_of_service(lcd: Lcd, engine: Engine, *, reason: str, direct: DirectCuts | None = None) -> None:
    """Quorum lost, ``quorum_loss_action=osu``: cut the network face at once, then remove the rest; check the lease.

    The heartbeat process has usually cut the addresses already (``direct``): their remove here then finds
    them gone, and the lease is checked against the heartbeat process's cut, which is what clients saw.
    """
    settings = lcd.settings()
    limit = lease(settings)
    checked = applies(settings)  # not with a fence_command: the others fence this node before they take over
    since = time.monotonic() - DIRECT_CUT_BEFORE

    def after_cut(cut: Report, took: float) -> None:
        if not cut.done:
            return
        first = direct.covering(cut.done, since) if direct is not None else None
        by = ""
        if first is not None and first < took:
            took, by = first, " by the heartbeat process"
        logger.warning(
            "quorum lost: clients cut in %.3f s%s (%s removed first), %s the %.2f s lease; now the rest",
            took, by, ", ".join(cut.done), "within" if took <= limit else "NOT within", limit,
        )  # fmt: skip
        if checked and took > limit:
            logger.error(
                "ALERT: cutting clients off (removing %s) took %.3f s, more than the %.2f s lease (%s): "
                "both sides may have served at once",
                ", ".join(cut.done), took, limit, formula(settings),
            )  # fmt: skip

    result = await engine.cut_then_remove_everything(reason=reason, after_cut=after_cut)
    logger.warning("quorum lost: everything out of service after %.2f s", result.took)
    if not result.ok:
        failed = "; ".join(r.summary() for r in (result.cut, result.rest) if not r.ok)
        logger.error("ALERT: quorum lost and not everything is out of service: %s", failed)
    if not checked:
        return
    finished = result.finished()
    resources = lcd.resources()
    for h in decide.hierarchies(lcd.edges(), lcd.equivalencies()):
        if any(r.tag in h.members and plan.is_network_face(r) for r in resources):
            continue
        took = max((finished[t] for t in h.members if t in finished), default=0.0)  # 0.0: not in service here
        if took > limit:
            logger.error(
                "ALERT: %s has no IP resource: its clients were cut only when its remove ended, %.2f s after "
                "quorum was lost, more than the %.2f s lease (%s): both sides may have served at once; %s",
                h.name, took, limit, formula(settings), ADVICE,
            )  # fmt: skip
