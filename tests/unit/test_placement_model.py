"""The ownership register under hostile schedules: the real claimant and voters, a network that the test drives.

Each example runs the real :func:`placement.claim` of several claimants at once
against five voters (the pure :func:`on_prepare` / :func:`on_accept`), over a
simulated network that hypothesis controls message by message: a request or an
answer is delivered, lost, or left waiting while others overtake it; a claimant
crashes (its task is cancelled) mid-claim; a voter crashes and comes back with
its records (they are durable) or stays down. After every step the invariant of
``docs/failover.md`` is checked on everything the voters ever accepted:

- a value accepted by a majority at one ballot is *chosen*; chosen values form
  one chain: never two owners with the same epoch, and a value chosen at a
  higher ballot has a higher epoch;
- a claim that reported success wrote a chosen value, and the value it found
  was the latest chosen one before it.

Once faults stop (every message delivered, every voter up), a new claim always
succeeds, and builds on the latest chosen value.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hakeeper.cluster import placement
from hakeeper.cluster.placement import Answer, Ballot, Owner, Slot
from hakeeper.layout import PLACEMENT_NAME

VOTERS = ["v1", "v2", "v3", "v4", "v5"]
CLAIMANTS = ["a", "b", "c"]
KEY = "web"


@dataclass
class Message:
    voter: str
    kind: str  # prepare / accept
    ballot: Ballot
    value: Owner | None
    reply: asyncio.Future[Answer]


@dataclass
class Net:
    slots: dict[str, Slot] = field(default_factory=lambda: {v: Slot() for v in VOTERS})
    down: set[str] = field(default_factory=set)
    pending: list[Message] = field(default_factory=list)
    accepted: list[tuple[str, Ballot, Owner]] = field(default_factory=list)  # every accept any voter stored

    async def prepare(self, voter: str, key: str, ballot: Ballot) -> Answer:
        return await self._send(voter, "prepare", ballot, None)

    async def accept(self, voter: str, key: str, ballot: Ballot, value: Owner, *, check: tuple[str, ...]) -> Answer:
        return await self._send(voter, "accept", ballot, value)

    async def _send(self, voter: str, kind: str, ballot: Ballot, value: Owner | None) -> Answer:
        reply: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.pending.append(Message(voter, kind, ballot, value, reply))
        return await reply

    def deliver(self, m: Message, *, answer_lost: bool = False) -> None:
        """The voter handles ``m`` (also when its claimant stopped waiting: the request was sent)."""
        if m.voter in self.down:
            if not m.reply.done():
                m.reply.set_exception(ConnectionError(f"{m.voter} is down"))
            return
        if m.kind == "prepare":
            self.slots[m.voter], answer = placement.on_prepare(self.slots[m.voter], m.ballot)
        else:
            assert m.value is not None
            self.slots[m.voter], answer = placement.on_accept(self.slots[m.voter], m.ballot, m.value)
            if answer.ok:
                self.accepted.append((m.voter, m.ballot, m.value))
        if m.reply.done():
            return
        if answer_lost:
            m.reply.set_exception(TimeoutError("answer lost"))
        else:
            m.reply.set_result(answer)

    def chosen(self) -> dict[Ballot, Owner]:
        """Values a majority of voters accepted at the same ballot."""
        counts = Counter((b, v) for voter, b, v in set(self.accepted))
        need = placement.majority(len(VOTERS))
        found: dict[Ballot, Owner] = {}
        for (b, v), n in counts.items():
            if n >= need:
                assert b not in found or found[b] == v, f"two values chosen at ballot {b}"
                found[b] = v
        return found


def check_chain(net: Net) -> None:
    chosen = sorted(net.chosen().items())
    owners_by_epoch: dict[int, str | None] = {}
    for (_b1, v1), (_b2, v2) in itertools.pairwise(chosen):
        assert v2.epoch > v1.epoch, f"chosen out of order: {chosen}"
    for _b, v in chosen:
        assert owners_by_epoch.setdefault(v.epoch, v.node) == v.node, f"two owners for epoch {v.epoch}: {chosen}"


def take(current: Owner, me: str) -> Owner:
    return Owner(current.epoch + 1, me)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("claim"), st.sampled_from(CLAIMANTS)),
        st.tuples(st.just("deliver"), st.integers(0, 30)),
        st.tuples(st.just("lose"), st.integers(0, 30)),
        st.tuples(st.just("lose_answer"), st.integers(0, 30)),
        st.tuples(st.just("crash_claimant"), st.sampled_from(CLAIMANTS)),
        st.tuples(st.just("voter_down"), st.sampled_from(VOTERS)),
        st.tuples(st.just("voter_up"), st.sampled_from(VOTERS)),
    ),
    max_size=120,
)


async def run(schedule: list[tuple[str, Any]]) -> None:
    net = Net()
    tasks: dict[str, asyncio.Task[placement.Outcome]] = {}
    results: list[tuple[str, placement.Outcome]] = []
    seen: dict[str, dict[str, int]] = {c: {} for c in CLAIMANTS}

    def start(who: str) -> None:
        async def one() -> placement.Outcome:
            return await placement.claim(
                net, VOTERS, KEY, who, lambda cur: take(cur, who), seen=seen[who], pause=(0, 0)
            )

        tasks[who] = asyncio.create_task(one())

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        for who, task in list(tasks.items()):
            if task.done():
                del tasks[who]
                if not task.cancelled():
                    results.append((who, task.result()))

    async def quiet(rounds: int) -> None:
        """No more faults: deliver every message in order until the claims end (at most ``rounds`` rounds)."""
        for _ in range(rounds):
            if not tasks:
                return
            while net.pending:
                net.deliver(net.pending.pop(0))
            await settle()

    for kind, arg in schedule:
        if kind == "claim" and arg not in tasks:
            start(arg)
        elif kind in ("deliver", "lose", "lose_answer") and net.pending:
            m = net.pending.pop(arg % len(net.pending))
            if kind == "lose":
                if not m.reply.done():
                    m.reply.set_exception(TimeoutError("request lost"))
            else:
                net.deliver(m, answer_lost=kind == "lose_answer")
        elif kind == "crash_claimant" and arg in tasks:
            tasks.pop(arg).cancel()
        elif kind == "voter_down":
            net.down.add(arg)
        elif kind == "voter_up":
            net.down.discard(arg)
        await settle()
        check_chain(net)

    # Faults stop: every voter up, every message delivered in order, until every claim ended.
    net.down.clear()
    await quiet(1000)
    assert not tasks, "claims still running after the faults stopped"
    check_chain(net)
    chosen = net.chosen()
    for who, outcome in results:
        if outcome.ok:
            assert outcome.now in chosen.values(), f"{who} reported a claim that no majority holds"
            assert outcome.now is not None and outcome.now.node == who
    # A claim on a quiet cluster succeeds and builds on the latest chosen value.
    latest = chosen[max(chosen)] if chosen else placement.NOBODY
    start("a")
    await quiet(100)
    final = results[-1][1]
    assert final.ok, final.why
    assert final.previous is not None and final.previous.epoch >= latest.epoch
    assert final.now is not None and final.now.node == "a" and final.now.epoch > final.previous.epoch
    check_chain(net)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_chosen_owners_form_one_chain_under_any_schedule(schedule: list[tuple[str, Any]]) -> None:
    asyncio.run(run(schedule))


def test_the_checker_sees_two_owners_of_one_epoch() -> None:
    """The invariant check is not vacuous: voters that accepted two owners for epoch 1 are caught."""
    net = Net()
    for voter in VOTERS[:3]:
        net.accepted.append((voter, Ballot(1, "a"), Owner(1, "a")))
    for voter in VOTERS[2:]:
        net.accepted.append((voter, Ballot(2, "b"), Owner(1, "b")))
    try:
        check_chain(net)
    except AssertionError:
        return
    raise AssertionError("two owners of epoch 1 went unnoticed")


def test_a_voter_s_promises_and_records_survive_a_restart(tmp_path: Any) -> None:
    """BallotBox is durable: a voter that forgot a promise in a crash could let two claims both win."""
    box = placement.BallotBox(tmp_path)
    assert box.prepare("web", Ballot(3, "node2")).ok
    assert box.accept("web", Ballot(3, "node2"), Owner(4, "node2", ("node1",))).ok
    box.claimed("web", 4)
    box.close()
    again = placement.BallotBox(tmp_path)
    assert not again.prepare("web", Ballot(2, "node3")).ok, "the promise of ballot 3 was kept"
    assert not again.accept("web", Ballot(2, "node3"), Owner(5, "node3")).ok
    assert again.slot("web").value == Owner(4, "node2", ("node1",))
    assert again.held() == {"web": 4} and again.won() == {"web": 4}
    assert (tmp_path / PLACEMENT_NAME).stat().st_mode & 0o777 == 0o600
    again.close()


def test_a_claim_starts_above_the_ballots_its_own_voter_saw(tmp_path: Any) -> None:
    """node1 claimed twice; node2, which never claimed, starts above node1's ballot: one round, no refusal."""
    names = ["node1", "node2", "node3"]
    for n in names:
        (tmp_path / n).mkdir()
    boxes = {n: placement.BallotBox(tmp_path / n) for n in names}
    prepares: Counter[str] = Counter()

    class Direct:
        async def prepare(self, voter: str, key: str, ballot: Ballot) -> Answer:
            prepares[ballot.node] += 1
            return boxes[voter].prepare(key, ballot)

        async def accept(self, voter: str, key: str, ballot: Ballot, value: Owner, *, check: tuple[str, ...]) -> Answer:
            return boxes[voter].accept(key, ballot, value)

    def take(me: str) -> placement.Change:
        return lambda current: Owner(current.epoch + 1, me)

    async def scenario() -> None:
        node1 = placement.Placement("node1", boxes["node1"], Direct(), lambda: names)
        for _ in range(2):
            assert (await node1.claim("web", take("node1"))).ok
        node2 = placement.Placement("node2", boxes["node2"], Direct(), lambda: names)
        outcome = await node2.claim("web", take("node2"))
        assert outcome.ok and outcome.now == Owner(3, "node2")

    try:
        asyncio.run(scenario())
    finally:
        for box in boxes.values():
            box.close()
    assert prepares["node2"] == 3, "one prepare per voter: its first ballot was high enough"
