"""This node as a voter of the ownership records, and the peers as voters of this node's claims.

A claim (:mod:`hakeeper.cluster.placement`) runs prepare and accept at a
majority of the voters. :class:`Voter` is this node's side: it answers its
peers' ``ballot_prepare`` and ``ballot_accept`` from its ballot box, and before
it accepts a claim that takes a hierarchy from a node that did not ask, it
checks that node's lease here (:meth:`Voter.lease_veto`). :class:`PeerVoters`
is what a claimant sends: to its own ballot box directly, to the peers through
their hakeeperd.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hakeeper.cluster.placement import Answer, Ballot, BallotBox, Owner
from hakeeper.comm.paths import PathState
from hakeeper.comm.tls import Peer
from hakeeper.db import Lcd
from hakeeper.errors import CommunicationFailed, IllegalArgument

logger = logging.getLogger(__name__)

Send = Callable[[str, str, dict[str, Any], float], Awaitable[Any]]
Membership = Callable[[], dict[str, PathState]]

VOTE_TIMEOUT = 1.0  # a voter's answer to a claim's prepare or accept


class Voter:
    """Answers prepares and accepts from the ballot box; vetoes a claim against a lease that holds here.

    ``dead_since``: when each peer was declared DEAD here (monotonic), kept by
    hakeeperd as heartbeats report; ``on_accepted``: called with each value this
    voter accepted (a node that runs the hierarchy under an older epoch stops).
    """

    def __init__(
        self,
        lcd: Lcd,
        box: BallotBox,
        membership: Membership,
        dead_since: dict[str, float],
        on_accepted: Callable[[str, Owner], None],
    ) -> None:
        self.lcd = lcd
        self.me = lcd.local_node
        self.box = box
        self.membership = membership
        self.dead_since = dead_since
        self.on_accepted = on_accepted

    async def on_ballot_prepare(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        key, ballot = _key(args), Ballot.from_json(args.get("ballot"))
        answer: Answer = await self.box.run(self.box.prepare, key, ballot)
        return answer.as_json()

    async def on_ballot_accept(self, peer: Peer, args: dict[str, Any]) -> dict[str, Any]:
        key, ballot, value = _key(args), Ballot.from_json(args.get("ballot")), Owner.from_json(args.get("value"))
        check = tuple(str(n) for n in args.get("check") or [])
        answer = await self.accept(key, ballot, value, check=check)
        return answer.as_json()

    async def accept(self, key: str, ballot: Ballot, value: Owner, *, check: tuple[str, ...]) -> Answer:
        """Check the leases asked for, accept, tell ``on_accepted``."""
        veto = None
        for node in check:
            veto = veto or await self.lease_veto(node)
        if veto is not None:
            logger.warning("%s: vetoed %s's claim: %s", key, value.node or "nobody", veto)
            return Answer(False, ballot, veto=veto)
        answer: Answer = await self.box.run(self.box.accept, key, ballot, value)
        if answer.ok:
            self.on_accepted(key, value)
        return answer

    async def lease_veto(self, owner: str | None) -> str | None:
        """Why this voter will not let ``owner``'s hierarchy be taken from it; None once its lease lapsed here.

        The lease lapses when this node has seen the owner DEAD for
        ``takeover_delay``: a node that a majority of voters saw dead that long has
        lost its quorum and run its quorum-loss action (or been fenced). The answer
        waits for that (bounded); an owner ALIVE or UNKNOWN here keeps its lease.
        """
        if owner is None:
            return None
        if owner == self.me:
            return f"{self.me} owns it and is alive"
        settings = self.lcd.settings()
        delay, interval = float(settings["takeover_delay"]), float(settings["heartbeat_interval"])
        for _ in range(int(delay / interval) + 3):  # bounded: takeover_delay and a little more
            state = self.membership().get(owner, PathState.UNKNOWN)
            if state is not PathState.DEAD:
                return f"{self.me} sees {owner} {state.value}"
            since = self.dead_since.setdefault(owner, time.monotonic())
            left = since + delay - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(left, interval))
        return f"{owner} has not been DEAD for takeover_delay ({delay:g} s) here yet"


class PeerVoters:
    """The voters of :class:`hakeeper.cluster.placement.Placement`: this node's own, the peers' over RPC."""

    def __init__(self, voter: Voter, send: Send) -> None:
        self.voter = voter
        self.send = send

    def _reachable(self, voter: str) -> None:
        if self.voter.membership().get(voter) is PathState.DEAD:
            raise CommunicationFailed(f"{voter} is DEAD")  # do not wait for a voter known to be silent

    async def prepare(self, voter: str, key: str, ballot: Ballot) -> Answer:
        mine = self.voter
        if voter == mine.me:
            answer: Answer = await mine.box.run(mine.box.prepare, key, ballot)
            return answer
        self._reachable(voter)
        data = await self.send(voter, "ballot_prepare", {"key": key, "ballot": ballot.as_json()}, VOTE_TIMEOUT)
        return Answer.from_json(data)

    async def accept(self, voter: str, key: str, ballot: Ballot, value: Owner, *, check: tuple[str, ...]) -> Answer:
        mine = self.voter
        if voter == mine.me:
            return await mine.accept(key, ballot, value, check=check)
        self._reachable(voter)
        args = {"key": key, "ballot": ballot.as_json(), "value": value.as_json(), "check": list(check)}
        timeout = VOTE_TIMEOUT + float(mine.lcd.settings()["takeover_delay"])  # a voter may wait for the lease
        return Answer.from_json(await self.send(voter, "ballot_accept", args, timeout))


def _key(args: dict[str, Any]) -> str:
    key = args.get("key")
    if not isinstance(key, str) or not key:
        raise IllegalArgument("a ballot names its hierarchy")
    return key
