"""Switchover, multi-target role swaps and promotion after failover, with real files, threads and socketpairs."""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from hakeeper.replication.device import LocalStore
from hakeeper.replication.generations import GenerationStore, PromotionRefused, Relation, compare
from hakeeper.replication.mirror import Mirror, MirrorError
from hakeeper.replication.protocol import Op, ProtocolError, pack_ranges, recv_frame, send_frame, send_json
from hakeeper.replication.resync import gen_payload
from hakeeper.replication.states import MirrorMode, MirrorState
from hakeeper.replication.switchover import Handover, SwitchoverRefused, handover_path

from .replication_helpers import CHUNK, KiB, MiB, TargetNode, make_source, wait_state, wait_until

SIZE = 2 * MiB
OPTS: dict[str, float] = {"timeout": 2.0, "retry_interval": 0.05}


def pattern(n: int, length: int) -> bytes:
    return (n.to_bytes(4, "big") * (length // 4 + 1))[:length]


def add(source: Mirror, node: TargetNode, tmp_path: Path, **kw: object) -> None:
    options = {**OPTS, **kw}
    source.add_target(node.name, node.connect, tmp_path / f"{source.node}-{node.name}.bitmap", **options)  # type: ignore[arg-type]


def become_source(tmp_path: Path, node: TargetNode) -> tuple[LocalStore, GenerationStore]:
    """The target node stops serving: its store and generation record, reopened for a source."""
    node.close()
    return LocalStore(node.path), GenerationStore(node.gens.path)


def bitmaps(tmp_path: Path, node: str) -> Callable[[str], Path]:
    return lambda target: tmp_path / f"{node}-{target}.bitmap"


@pytest.mark.parametrize("mode", [MirrorMode.SYNC, MirrorMode.ASYNC])
def test_a_switchover_swaps_the_roles_and_resends_nothing(tmp_path: Path, mode: MirrorMode) -> None:
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    old_a: TargetNode | None = None
    new: Mirror | None = None
    try:
        add(a, b, tmp_path, mode=mode)
        wait_state(a, "node2", MirrorState.MIRRORING)
        for i in range(12):
            a.write(i * 100 * KiB, pattern(i, 70 * KiB))  # async: some of these are still queued
        gen_a = a.generations.value

        handover = a.prepare_switchover("node2", timeout=5.0)

        # node1 takes no write any more; node2 has every write and the handover, on disk
        with pytest.raises(OSError) as refused:
            a.write(0, b"too late")
        assert refused.value.errno == errno.EROFS
        assert b.data() == (tmp_path / "src.img").read_bytes()
        assert handover.target("node2").dirty == ()  # drained: nothing may differ
        assert b.target.handover == handover == Handover.load(handover_path(b.gens))
        assert b.gens.value.current == gen_a.current
        a.close()

        store, gens = become_source(tmp_path, b)
        old_a = TargetNode(tmp_path, "node1", SIZE, image="src.img")  # node1 serves as node2's target
        new = Mirror.from_handover(
            store,
            Handover.load(handover_path(gens)),
            generations=gens,
            node="node2",
            connect={"node1": old_a.connect},
            bitmap_path=bitmaps(tmp_path, "node2"),
            **OPTS,
        )
        wait_state(new, "node1", MirrorState.MIRRORING)
        link = new.link("node1")
        assert link.mode is mode
        assert link.relation is Relation.SOURCE_AHEAD  # never split brain
        assert link.progress.bytes_sent == 0 and link.progress.zero_bytes == 0
        assert gens.value.previous_source == "node1" and gens.value.history[0] == gen_a.current
        assert not handover_path(gens).exists()

        for i in range(5):
            new.write(i * 300 * KiB + 7, pattern(100 + i, 50 * KiB))  # writes on node2 reach node1
        new.flush()
        assert new.drain("node1", 5.0)
        assert old_a.data() == (tmp_path / "node2.img").read_bytes()
        assert old_a.gens.value.current == gens.value.current
    finally:
        a.close()
        if new is not None:
            new.close()
        if old_a is not None:
            old_a.close()
        b.close()


@pytest.mark.parametrize("c_behind", [True, False], ids=["C-paused", "C-mirroring"])
def test_three_nodes_switched_to_b_resend_to_c_only_what_a_logged_for_it(tmp_path: Path, c_behind: bool) -> None:
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    c = TargetNode(tmp_path, "node3", SIZE)
    old_a: TargetNode | None = None
    new: Mirror | None = None
    try:
        add(a, b, tmp_path)
        add(a, c, tmp_path, mode=MirrorMode.ASYNC)
        wait_state(a, "node2", MirrorState.MIRRORING)
        wait_state(a, "node3", MirrorState.MIRRORING)
        for i in range(8):
            a.write(i * CHUNK, pattern(i, CHUNK))
        a.flush()
        assert a.drain("node3", 5.0)
        if c_behind:
            c.down()  # node3 falls behind: A logs what it misses
        a.write(10 * CHUNK, pattern(50, 4 * KiB))
        if c_behind:
            wait_state(a, "node3", MirrorState.PAUSED)
        a.write(20 * CHUNK + 100, pattern(51, 10 * KiB))
        a.write(25 * CHUNK, pattern(52, CHUNK))
        a.write(10 * CHUNK + 8, pattern(53, 100))  # the same chunk again
        logged = a.link("node3").bitmap.dirty_bytes
        if c_behind:
            assert logged == 3 * CHUNK

        handover = a.prepare_switchover("node2", timeout=5.0)  # drains node3 too when it is Mirroring
        assert handover.target("node3").dirty_bytes == (logged if c_behind else 0)
        assert handover.target("node3").state is (MirrorState.PAUSED if c_behind else MirrorState.MIRRORING)
        assert handover.target("node2").dirty == ()
        a.close()

        store, gens = become_source(tmp_path, b)
        old_a = TargetNode(tmp_path, "node1", SIZE, image="src.img")
        c.up = True
        new = Mirror.from_handover(
            store,
            b.target.handover,  # type: ignore[arg-type]
            generations=gens,
            node="node2",
            connect={"node1": old_a.connect, "node3": c.connect},
            bitmap_path=bitmaps(tmp_path, "node2"),
            **OPTS,
        )
        wait_state(new, "node1", MirrorState.MIRRORING)
        wait_state(new, "node3", MirrorState.MIRRORING)
        # B->{A,C}: partial resyncs only; C gets exactly the chunks A's log had for it, A nothing
        to_c, to_a = new.link("node3"), new.link("node1")
        assert to_c.mode is MirrorMode.ASYNC
        assert to_c.relation is Relation.SOURCE_AHEAD and to_a.relation is Relation.SOURCE_AHEAD
        assert to_c.progress.bytes_sent == handover.target("node3").dirty_bytes
        assert to_a.progress.bytes_sent == 0
        new.write(30 * CHUNK, pattern(60, CHUNK))
        new.flush()
        assert new.drain("node3", 5.0)
        data = (tmp_path / "node2.img").read_bytes()
        assert old_a.data() == data and c.data() == data
        current = gens.value
        for node in (old_a, c):
            assert node.gens.value.current == current.current
            assert compare(current, node.gens.value) is Relation.IN_SYNC
    finally:
        a.close()
        if new is not None:
            new.close()
        b.close()
        c.close()
        if old_a is not None:
            old_a.close()


def test_a_switchover_is_refused_unless_the_mirror_is_mirroring_and_nothing_changes(tmp_path: Path) -> None:
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    try:
        for i in range(0, SIZE, CHUNK):
            a.local.write(i, pattern(i, CHUNK))  # data for a full resync to carry
        b.store.open_gate.clear()  # node2's disk stalls: the resync cannot finish
        add(a, b, tmp_path, timeout=30.0)
        wait_state(a, "node2", MirrorState.RESYNCING)
        gen = a.generations.value
        with pytest.raises(SwitchoverRefused, match="mirror to node2 is Resynchronizing, not Mirroring"):
            a.prepare_switchover("node2", timeout=1.0)
        assert a.frozen is None and a.generations.value == gen
        a.write(0, b"still the source")  # writes are taken as before
        b.store.open_gate.set()
        wait_state(a, "node2", MirrorState.MIRRORING)

        a.pause("node2")
        wait_until(lambda: b.gens.value.state == "Paused", "node2 told it is paused")
        with pytest.raises(SwitchoverRefused, match="mirror to node2 is Paused, not Mirroring"):
            a.prepare_switchover("node2", timeout=1.0)
        a.write(CHUNK, b"still the source")
        assert a.link("node2").state is MirrorState.PAUSED
        assert b.target.handover is None and not handover_path(b.gens).exists()
        with pytest.raises(PromotionRefused, match="node1 had paused the mirror"):
            b.target.promote(peer="node1")
    finally:
        a.close()
        b.close()


def test_a_switchover_to_a_target_that_stalls_is_refused_and_the_source_goes_on(tmp_path: Path) -> None:
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    try:
        add(a, b, tmp_path, mode=MirrorMode.ASYNC, timeout=10.0)  # the link waits longer than the switchover
        wait_state(a, "node2", MirrorState.MIRRORING)
        a.write(0, pattern(1, CHUNK))
        b.store.open_gate.clear()  # node2's disk stops with a write of node1 queued for it
        a.write(CHUNK, pattern(2, CHUNK))
        gen = a.generations.value
        with pytest.raises(SwitchoverRefused, match=r"node2 did not confirm every write within 1\.0 s"):
            a.prepare_switchover("node2", timeout=1.0)
        assert a.frozen is None and b.target.handover is None and not handover_path(b.gens).exists()
        b.store.open_gate.set()
        a.write(2 * CHUNK, pattern(3, CHUNK))  # node1 is still the source and takes writes
        wait_state(a, "node2", MirrorState.MIRRORING)
        assert a.drain("node2", 5.0)
        assert b.data() == (tmp_path / "src.img").read_bytes()
        assert compare(a.generations.value, b.gens.value) in (Relation.IN_SYNC, Relation.SOURCE_AHEAD)
        assert gen.current in [a.generations.value.current, *a.generations.value.history]
    finally:
        a.close()
        b.close()


def test_a_target_mid_resync_or_broken_is_not_promoted(tmp_path: Path) -> None:
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    try:
        for i in range(0, SIZE, CHUNK):
            a.local.write(i, pattern(i, CHUNK))
        b.store.open_gate.clear()
        add(a, b, tmp_path, timeout=30.0)
        wait_until(lambda: b.gens.value.inconsistent, "node2 to begin its resync")
        b.down(wait=False)  # the source dies mid-resync: node2 holds half a volume
        b.store.open_gate.set()  # the serving thread, held in a write, meets the broken connection
        b.join()
        with pytest.raises(PromotionRefused) as refused:
            b.target.promote(peer="node1")
        assert refused.value.state == "Resynchronizing"
        assert str(refused.value).startswith("node2's copy of vol1 is inconsistent (a resync from node1 did not")
        current = b.gens.value.current
        assert b.gens.value.current == current  # nothing changed

        b.up = True
        a.link("node2").wake.set()
        wait_state(a, "node2", MirrorState.MIRRORING)
        a.break_("node2")
        assert b.gens.value.state == "Broken"
        with pytest.raises(PromotionRefused, match="older than node1's: node1 had broken the mirror"):
            b.target.promote(peer="node1")
        forced = b.target.promote(peer="node1", force=True)
        assert forced.previous_source == "node1"
    finally:
        a.close()
        b.close()


def _failover(tmp_path: Path, *, old_source_writes: bool) -> None:
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    c = TargetNode(tmp_path, "node3", SIZE)
    old_a: TargetNode | None = None
    new: Mirror | None = None
    try:
        add(a, b, tmp_path)
        add(a, c, tmp_path)
        wait_state(a, "node2", MirrorState.MIRRORING)
        wait_state(a, "node3", MirrorState.MIRRORING)
        for i in range(6):
            a.write(i * CHUNK, pattern(i, CHUNK))
        a.flush()
        gen = a.generations.value
        b.down()  # the cut: node1 sees its target go
        wait_state(a, "node2", MirrorState.PAUSED)
        assert a.generations.value == gen  # no new generation until node1 writes without node2
        if old_source_writes:
            a.write(15 * CHUNK, pattern(99, CHUNK))  # node1 goes on alone
            assert gen.current in a.generations.value.history
        c.down()
        a.close()  # node1 dies
        a_data = (tmp_path / "src.img").read_bytes()
        c.up = True

        promoted = b.target.promote(peer="node1")  # node2 was Mirroring: the failover is allowed
        store, gens = become_source(tmp_path, b)
        assert gens.value == promoted
        new = Mirror(store, volume="vol1", node="node2", generations=gens)
        new.write(30 * CHUNK, pattern(7, 2 * CHUNK))  # the applications run on node2
        old_a = TargetNode(tmp_path, "node1", SIZE, image="src.img")  # node1 back, as node2's target
        new.add_target("node1", old_a.connect, tmp_path / "node2-node1.bitmap", **OPTS)  # type: ignore[arg-type]
        new.add_target("node3", c.connect, tmp_path / "node2-node3.bitmap", **OPTS)  # type: ignore[arg-type]
        link, to_c = new.link("node1"), new.link("node3")
        if old_source_writes:
            wait_until(lambda: link.split_brain, "the split brain to be reported")
            wait_until(lambda: to_c.split_brain, "node3, which followed node1 after the cut, to be one too")
            assert link.state is MirrorState.RESYNC_PENDING and link.relation is None
            assert "split brain" in (link.last_error or "")
            assert old_a.data() == a_data  # not resynced until resolve
            assert link.progress.bytes_sent == 0
        else:
            wait_state(new, "node1", MirrorState.MIRRORING)
            assert link.relation is Relation.SOURCE_AHEAD
            assert link.progress.bytes_sent == 2 * CHUNK  # node2's own writes only, found by checksum
            wait_state(new, "node3", MirrorState.MIRRORING)
            assert to_c.relation is Relation.SOURCE_AHEAD and to_c.progress.bytes_sent == 2 * CHUNK
            new.flush()
            assert old_a.data() == (tmp_path / "node2.img").read_bytes() == c.data()
    finally:
        a.close()
        if new is not None:
            new.close()
        if old_a is not None:
            old_a.close()
        b.close()
        c.close()


def test_after_a_failover_an_old_source_that_wrote_nothing_resyncs_partially(tmp_path: Path) -> None:
    _failover(tmp_path, old_source_writes=False)


def test_after_a_failover_an_old_source_that_wrote_is_a_split_brain(tmp_path: Path) -> None:
    _failover(tmp_path, old_source_writes=True)


def test_a_handover_for_another_node_or_without_connections_changes_nothing(tmp_path: Path) -> None:
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    try:
        add(a, b, tmp_path)
        wait_state(a, "node2", MirrorState.MIRRORING)
        handover = a.prepare_switchover("node2", timeout=5.0)
        a.close()
        store, gens = become_source(tmp_path, b)
        before = gens.value
        with pytest.raises(MirrorError, match="is for node2, not node3"):
            Mirror.from_handover(store, handover, generations=gens, node="node3", connect={},
                                 bitmap_path=bitmaps(tmp_path, "node3"))  # fmt: skip
        with pytest.raises(MirrorError, match="no data connection given for node1"):
            Mirror.from_handover(store, handover, generations=gens, node="node2", connect={},
                                 bitmap_path=bitmaps(tmp_path, "node2"))  # fmt: skip
        assert gens.value == before and not (tmp_path / "node2-node1.bitmap").exists()
        store.close()
    finally:
        a.close()
        b.close()


def test_a_target_refuses_to_serve_a_source_whose_generations_it_is_ahead_of(tmp_path: Path) -> None:
    """After a switchover the old source, restarted by mistake as source, is refused by the new one."""
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    try:
        add(a, b, tmp_path)
        wait_state(a, "node2", MirrorState.MIRRORING)
        a.prepare_switchover("node2", timeout=5.0)
        a.close()
        b.gens.take_over(b.target.handover.generation, peer="node1")  # type: ignore[union-attr]
        a = make_source(tmp_path, SIZE)  # node1 believes it is the source again
        add(a, b, tmp_path)
        wait_until(lambda: any("wrong way round" in r for r in b.refusals), "node2's refusal")
        assert a.link("node2").state is MirrorState.RESYNC_PENDING
        assert b.data() != b"" and b.gens.value.previous_source == "node1"
    finally:
        a.close()
        b.close()


def test_switching_back_by_failover_does_not_trust_a_bitmap_from_an_earlier_time_as_source(tmp_path: Path) -> None:
    """A->B switched over to B; B dies with a write A never got; A, promoted, resyncs it back by checksum."""
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    old_a: TargetNode | None = None
    back: TargetNode | None = None
    new: Mirror | None = None
    again: Mirror | None = None
    try:
        add(a, b, tmp_path)
        wait_state(a, "node2", MirrorState.MIRRORING)
        a.write(0, pattern(1, CHUNK))
        handover = a.prepare_switchover("node2", timeout=5.0)
        a.close()  # node1-node2.bitmap stays behind, empty: it describes node1's time as source
        store, gens = become_source(tmp_path, b)
        old_a = TargetNode(tmp_path, "node1", SIZE, image="src.img")
        new = Mirror.from_handover(store, handover, generations=gens, node="node2",
                                   connect={"node1": old_a.connect}, bitmap_path=bitmaps(tmp_path, "node2"),
                                   **OPTS)  # fmt: skip
        wait_state(new, "node1", MirrorState.MIRRORING)
        new.write(3 * CHUNK, pattern(3, CHUNK))
        new.local.write(9 * CHUNK, pattern(9, CHUNK))  # in flight when node2 died: node1 never got it
        new.close()
        old_a.close()
        old_a = None

        back = TargetNode(tmp_path, "node2", SIZE)  # node2 back, as a target
        a_gens = GenerationStore(tmp_path / "src.img.gen")
        a_gens.promote(peer="node2")  # node1's copy was Mirroring: failover allowed
        again = Mirror(LocalStore(tmp_path / "src.img"), volume="vol1", node="node1", generations=a_gens)
        again.add_target("node2", back.connect, tmp_path / "node1-node2.bitmap", **OPTS)  # type: ignore[arg-type]
        wait_state(again, "node2", MirrorState.MIRRORING)
        link = again.link("node2")
        assert link.relation is Relation.SOURCE_AHEAD
        # the one chunk that differs (zeros on node1) is found by checksum: the old bitmap is not trusted
        assert (link.progress.zero_bytes, link.progress.bytes_sent) == (CHUNK, 0)
        assert link.progress.equal_bytes == SIZE - CHUNK
        again.flush()
        assert back.data() == (tmp_path / "src.img").read_bytes()
        assert a_gens.value.renewed_bitmaps == ["node2"]
    finally:
        a.close()
        for m in (new, again):
            if m is not None:
                m.close()
        for n in (old_a, back):
            if n is not None:
                n.close()
        b.close()


def test_switching_over_and_back_resends_nothing_and_never_splits(tmp_path: Path) -> None:
    a = make_source(tmp_path, SIZE)
    b = TargetNode(tmp_path, "node2", SIZE)
    nodes: list[TargetNode] = [b]
    images: dict[str, str | None]
    mirrors: list[Mirror] = [a]
    try:
        add(a, b, tmp_path)
        wait_state(a, "node2", MirrorState.MIRRORING)
        source, target, images = a, b, {"node1": "src.img", "node2": None}
        for turn in range(4):  # node1 -> node2 -> node1 -> node2 -> node1
            source.write(turn * CHUNK, pattern(turn, CHUNK))
            handover = source.prepare_switchover(target.name, timeout=5.0)
            source.close()
            store, gens = become_source(tmp_path, target)
            old = TargetNode(tmp_path, source.node, SIZE, image=images[source.node])
            nodes.append(old)
            new = Mirror.from_handover(store, handover, generations=gens, node=target.name,
                                       connect={source.node: old.connect},
                                       bitmap_path=bitmaps(tmp_path, target.name), **OPTS)  # fmt: skip
            mirrors.append(new)
            wait_state(new, source.node, MirrorState.MIRRORING)
            link = new.link(source.node)
            assert link.relation is Relation.SOURCE_AHEAD
            assert link.progress.bytes_sent == 0 and link.progress.equal_bytes == 0
            assert compare(gens.value, old.gens.value) is Relation.IN_SYNC
            source, target = new, old
        source.write(5 * CHUNK, pattern(5, CHUNK))
        source.flush()
        assert target.data() == (tmp_path / "src.img").read_bytes()
        assert source.node == "node1" and target.name == "node2"
    finally:
        for m in mirrors:
            m.close()
        for n in nodes:
            n.close()


def test_a_target_drops_a_dirty_frame_outside_a_handover_and_a_handover_for_another_node(tmp_path: Path) -> None:
    b = TargetNode(tmp_path, "node2", SIZE)
    try:
        header = {"volume": "vol1", "size": SIZE, "source": "node1", "to": "node3", "generation": {"current": "g"}}
        stray = [(Op.DIRTY, 0, pack_ranges([(0, CHUNK)]))]
        not_mine = [
            (Op.GEN, 0, gen_payload("handover", None, handover={**header, "targets": []})),
            (Op.GEN, 0, gen_payload("handover_commit", None)),
        ]
        for frames in (stray, not_mine):
            x, y = socket.socketpair()
            x.settimeout(5)
            send_json(x, Op.HELLO, {"role": "source", "volume": "vol1", "size": SIZE, "node": "node1",
                                    "generation": {"current": "g"}})  # fmt: skip
            server = threading.Thread(target=b.target.serve, args=(y,), daemon=True)
            server.start()
            assert recv_frame(x).op is Op.HELLO
            for seq, (op, offset, payload) in enumerate(frames, 1):
                send_frame(x, op, seq=seq, offset=offset, payload=payload)
            replies = []
            with contextlib.suppress(ProtocolError, OSError):
                while True:
                    replies.append(recv_frame(x))
            assert replies[-1].op is Op.ERROR
            server.join(10)
            x.close()
        assert b.target.handover is None and not handover_path(b.gens).exists()
        assert b.data() == bytes(SIZE)
    finally:
        b.close()
