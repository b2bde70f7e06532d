"""Generations, split brain and the target's refusals; checksum resync and verify; several targets."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hakeeper.replication.generations import Generation, GenerationError, GenerationStore, Relation, compare
from hakeeper.replication.mirror import MirrorError
from hakeeper.replication.protocol import Op, recv_frame, send_json
from hakeeper.replication.states import MirrorMode, MirrorState
from hakeeper.replication.target import TargetRefused

from .replication_helpers import CHUNK, MiB, TargetNode, make_source, wait_state, wait_until

SIZE = 2 * MiB


def pattern(n: int, length: int) -> bytes:
    return (n.to_bytes(4, "big") * (length // 4 + 1))[:length]


def test_compare_tells_every_relation() -> None:
    g0 = Generation("a0", [])
    assert compare(g0, Generation()) is Relation.NEW_TARGET
    assert compare(g0, Generation("a0", [])) is Relation.IN_SYNC
    assert compare(Generation("a1", ["a0"]), g0) is Relation.SOURCE_AHEAD
    assert compare(g0, Generation("b1", ["a0"])) is Relation.TARGET_AHEAD
    assert compare(Generation("a1", ["a0"]), Generation("b1", ["a0"])) is Relation.SPLIT_BRAIN
    assert compare(Generation("a1", ["a0"]), Generation("c1", ["c0"])) is Relation.UNRELATED


def test_the_generation_record_survives_a_reopen(tmp_path: Path) -> None:
    store = GenerationStore(tmp_path / "v.gen")
    first = store.start_data()
    second = store.new_generation("a test")
    assert second.history == [first.current]
    store.set_inconsistent()
    again = GenerationStore(tmp_path / "v.gen").value
    assert (again.current, again.history, again.inconsistent) == (second.current, [first.current], True)


@pytest.fixture
def pair(tmp_path: Path):
    source = make_source(tmp_path, SIZE)
    node2 = TargetNode(tmp_path, "node2", SIZE)
    yield source, node2
    source.close()
    node2.close()


def add(source, node, tmp_path: Path, **kw) -> None:
    source.add_target(node.name, node.connect, tmp_path / f"{node.name}.bitmap", timeout=2.0, retry_interval=0.05, **kw)


def test_split_brain_is_detected_and_not_resynced_until_resolved(pair, tmp_path: Path) -> None:
    source, node2 = pair
    add(source, node2, tmp_path)
    wait_state(source, "node2", MirrorState.MIRRORING)
    link = source.link("node2")
    source.write(0, pattern(1, CHUNK))
    node2.down()
    source.write(CHUNK, pattern(2, CHUNK))  # the source goes on alone
    wait_state(source, "node2", MirrorState.PAUSED)
    node2.gens.new_generation("promoted without its source")  # and so does node2
    node2.store.write(5 * CHUNK, b"node2's own write")
    node2_data = node2.data()
    node2.up = True
    link.wake.set()
    wait_until(lambda: link.split_brain, "the split brain to be reported")
    (status,) = source.status()
    assert status.split_brain and status.state is MirrorState.PAUSED
    assert status.last_error is not None and "split brain" in status.last_error
    wait_until(lambda: bool(node2.refusals), "node2's refusal")  # its thread records it after sending it
    assert "choose the survivor with resolve" in node2.refusals[0]
    assert node2.data() == node2_data  # nothing was resynced over it
    with pytest.raises(MirrorError, match="node2 must become the source"):
        source.resolve("node2", keep="node2")
    with pytest.raises(TargetRefused, match="node2 must be the source"):
        node2.target.resolve(keep="node2")
    source.resolve("node2", keep="node1")
    wait_state(source, "node2", MirrorState.MIRRORING)
    # a full resync compared by checksum: only the chunks either side changed travel
    assert link.progress.bytes_sent == CHUNK  # node1's write while apart
    assert link.progress.zero_bytes == CHUNK  # node2's write, where node1 has zeros
    source.flush()
    assert node2.data() == (tmp_path / "src.img").read_bytes()
    assert node2.gens.value.current == source.generations.value.current
    assert not source.status()[0].split_brain


def test_a_target_smaller_than_the_source_is_refused_and_left_alone(tmp_path: Path) -> None:
    source = make_source(tmp_path, SIZE)
    small = TargetNode(tmp_path, "node3", SIZE // 2)
    try:
        small.store.write(0, b"keep me")
        add(source, small, tmp_path)
        link = source.link("node3")
        wait_until(lambda: link.last_error is not None and "refused" in link.last_error, "the refusal")
        assert "smaller than the source's volume" in str(link.last_error)
        assert link.state is MirrorState.RESYNC_PENDING
        source.write(0, pattern(3, 4096))  # the application is not disturbed
        assert small.data()[:7] == b"keep me"
    finally:
        source.close()
        small.close()


def test_the_target_refuses_garbage_and_another_volume(tmp_path: Path) -> None:
    node2 = TargetNode(tmp_path, "node2", SIZE)
    try:
        a, b = socket.socketpair()
        a.sendall(b"\x16\x03\x01 a TLS hello where none was expected" + bytes(100))
        a.shutdown(socket.SHUT_WR)
        node2.target.serve(b)  # returns: the connection is dropped, nothing written
        a.close()
        a, b = socket.socketpair()
        a.settimeout(5)
        send_json(a, Op.HELLO, {"role": "source", "volume": "vol9", "size": SIZE, "node": "x",
                                "generation": {}})  # fmt: skip
        with pytest.raises(TargetRefused, match="serves volume vol1, not 'vol9'"):
            node2.target.serve(b)
        assert recv_frame(a).op is Op.ERROR
        a.close()
        assert node2.data() == bytes(SIZE)
    finally:
        node2.close()


def test_checksum_resync_sends_only_differing_chunks_and_verify_finds_them(pair, tmp_path: Path) -> None:
    source, node2 = pair
    add(source, node2, tmp_path)
    wait_state(source, "node2", MirrorState.MIRRORING)
    link = source.link("node2")
    for i in range(10):
        source.write(i * CHUNK, pattern(i + 1, CHUNK))
    source.flush()
    assert source.verify("node2") == []
    node2.store.write(3 * CHUNK + 10, b"damage")  # the target's disk went wrong behind our back
    node2.store.write(4 * CHUNK, b"more")
    node2.store.write(9 * CHUNK, b"and more")
    assert source.verify("node2") == [(3 * CHUNK, 2 * CHUNK), (9 * CHUNK, CHUNK)]
    done = link.resyncs_done
    source.resync("node2", full=True, checksum=True)
    wait_until(lambda: link.resyncs_done > done and link.state is MirrorState.MIRRORING, "the checksum resync")
    assert link.progress.bytes_sent == 3 * CHUNK
    assert link.progress.equal_bytes == SIZE - 3 * CHUNK
    assert node2.data() == (tmp_path / "src.img").read_bytes()
    assert source.verify("node2") == []


def test_one_lost_target_does_not_disturb_the_other(pair, tmp_path: Path) -> None:
    source, node2 = pair
    node3 = TargetNode(tmp_path, "node3", SIZE)
    try:
        add(source, node2, tmp_path)
        add(source, node3, tmp_path, mode=MirrorMode.ASYNC)
        wait_state(source, "node2", MirrorState.MIRRORING)
        wait_state(source, "node3", MirrorState.MIRRORING)
        with pytest.raises(MirrorError, match="already mirrored to node2"):
            add(source, node2, tmp_path)
        with pytest.raises(MirrorError, match="its own node"):
            source.add_target("node1", node2.connect, tmp_path / "x.bitmap")
        node3.down()
        source.write(0, pattern(9, CHUNK))
        wait_state(source, "node3", MirrorState.PAUSED)
        source.write(CHUNK, pattern(10, CHUNK))
        assert source.link("node2").state is MirrorState.MIRRORING
        source.flush()
        assert node2.data() == (tmp_path / "src.img").read_bytes()
        # node2 followed the source's new generation: it stays in sync, node3 is behind
        wait_until(lambda: node2.gens.value.current == source.generations.value.current, "node2's generation")
        assert node3.gens.value.current in source.generations.value.history
        node3.up = True
        source.link("node3").wake.set()
        wait_state(source, "node3", MirrorState.MIRRORING)
        source.flush()
        wait_until(lambda: node3.data() == (tmp_path / "src.img").read_bytes(), "node3 to catch up")
    finally:
        node3.close()


def test_the_bandwidth_limit_sleeps_for_the_bytes_over_the_rate() -> None:
    from hakeeper.replication.resync import TokenBucket

    now = [100.0]
    waits: list[float] = []

    class Stop:
        def wait(self, seconds: float) -> bool:
            waits.append(seconds)
            now[0] += seconds
            return False

    bucket = TokenBucket(1_000_000, burst=100_000, clock=lambda: now[0])
    stop = Stop()
    bucket.take(100_000, stop)  # type: ignore[arg-type]
    assert waits == []  # the burst
    bucket.take(500_000, stop)  # type: ignore[arg-type]
    assert waits == [pytest.approx(0.5)]
    now[0] += 2.0  # idle: at most a burst accumulates
    bucket.take(300_000, stop)  # type: ignore[arg-type]
    assert waits[1:] == [pytest.approx(0.2)]
    TokenBucket(None).take(1 << 30, stop)  # type: ignore[arg-type]
    assert len(waits) == 2


def test_a_target_is_promoted_with_a_new_generation_unless_it_is_inconsistent(tmp_path: Path) -> None:
    store = GenerationStore(tmp_path / "vol1.gen")
    store.adopt(Generation("a0", []))
    store.set_inconsistent()
    with pytest.raises(GenerationError, match=r"inconsistent .* promote only with force"):
        store.promote(peer="node1")
    forced = store.promote(peer="node1", force=True)
    assert forced.history == ["a0"]
    store.adopt(Generation("b0", ["a0"]))
    promoted = store.promote(peer="node1")
    assert promoted.current not in ("a0", "b0") and promoted.history[:2] == ["b0", "a0"]
    # the old source, back with b0, is now behind: it must become the target
    assert compare(Generation("b0", ["a0"]), promoted) is Relation.TARGET_AHEAD
