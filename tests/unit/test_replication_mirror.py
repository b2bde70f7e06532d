"""The mirror engine with real threads, files and socketpairs: sync, async, pause, reconnect, crash."""

from __future__ import annotations

import logging
import random
import shutil
import threading
from pathlib import Path

import pytest

from hakeeper.replication.mirror import Mirror
from hakeeper.replication.resync import ResyncSettings
from hakeeper.replication.states import MirrorMode, MirrorState

from .replication_helpers import CHUNK, KiB, MiB, TargetNode, make_source, wait_state, wait_until

SIZE = 4 * MiB


@pytest.fixture
def node2(tmp_path: Path):
    node = TargetNode(tmp_path, "node2", SIZE)
    yield node
    node.close()


@pytest.fixture
def source(tmp_path: Path):
    mirror = make_source(tmp_path, SIZE)
    yield mirror
    mirror.close()


def mirrored(source: Mirror, node: TargetNode, tmp_path: Path, **kw) -> None:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("retry_interval", 0.05)
    source.add_target(node.name, node.connect, tmp_path / f"{node.name}.bitmap", **kw)
    wait_state(source, node.name, MirrorState.MIRRORING)


def pattern(n: int, length: int) -> bytes:
    return (n.to_bytes(4, "big") * (length // 4 + 1))[:length]


def src_bytes(tmp_path: Path) -> bytes:
    return (tmp_path / "src.img").read_bytes()


def test_a_sync_write_is_on_the_target_when_acknowledged_and_flush_is_a_barrier(source, node2, tmp_path) -> None:
    mirrored(source, node2, tmp_path)
    # a new mirror starts all dirty; a fresh zero volume goes as ZERO frames, no data
    assert source.link("node2").progress.bytes_sent == 0
    for i in range(20):
        source.write(i * 12 * KiB, pattern(i, 12 * KiB))
        assert node2.data()[i * 12 * KiB : (i + 1) * 12 * KiB] == pattern(i, 12 * KiB)
    flushes = node2.store.flushes
    source.flush()
    assert node2.store.flushes == flushes + 1
    source.write(2 * MiB, bytes(range(256)) * 8192)  # 2 MiB: sent in two frames
    assert node2.data() == src_bytes(tmp_path)
    (status,) = source.status()
    assert (status.state, status.state.label, int(status.state)) == (MirrorState.MIRRORING, "Mirroring", 1)


def test_a_stalled_target_pauses_within_the_timeout_and_writes_are_tracked(source, node2, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="hakeeper.replication")
    mirrored(source, node2, tmp_path, timeout=0.5)
    node2.store.open_gate.clear()  # the target stops: no more writes, no more acks
    link = source.link("node2")
    for i in range(4):
        source.write(i * MiB, pattern(i, 256 * KiB))  # each returns: the stall costs at most the timeout once
    assert link.state is MirrorState.PAUSED
    assert "mirror vol1 -> node2: MIRRORING -> PAUSED (target silent for 0.5 s" in caplog.text
    assert link.bitmap.dirty_chunks == 16
    node2.store.open_gate.set()
    link.wake.set()
    wait_state(source, "node2", MirrorState.MIRRORING)
    source.flush()
    assert node2.data() == src_bytes(tmp_path)


def test_disconnect_and_reconnect_resends_only_the_dirty_chunks(source, node2, tmp_path) -> None:
    mirrored(source, node2, tmp_path)
    link = source.link("node2")
    gen_before = source.generations.value.current
    node2.down()
    source.write(0, pattern(1, 4 * KiB))
    wait_state(source, "node2", MirrorState.PAUSED)
    source.write(1 * MiB + 5, pattern(2, 100 * KiB))  # two chunks
    source.write(3 * MiB, pattern(3, CHUNK))
    assert link.bitmap.dirty_bytes == 4 * CHUNK
    assert source.generations.value.current != gen_before  # the source went its own way
    assert gen_before in source.generations.value.history
    node2.up = True
    link.wake.set()
    wait_state(source, "node2", MirrorState.MIRRORING)
    assert link.progress.bytes_sent == 4 * CHUNK
    assert link.bitmap.dirty_chunks == 0
    source.flush()
    assert node2.data() == src_bytes(tmp_path)
    assert node2.gens.value.current == source.generations.value.current


def test_after_a_source_crash_the_bitmap_file_drives_a_partial_resync(tmp_path) -> None:
    node2 = TargetNode(tmp_path, "node2", SIZE)
    first = make_source(tmp_path, SIZE)
    try:
        mirrored(first, node2, tmp_path)
        node2.down()
        for i in range(3):
            first.write(i * MiB, pattern(i + 7, 10 * KiB))
        wait_state(first, "node2", MirrorState.PAUSED)
        # the crash: what is on disk now is what a restarted source finds
        for name in ("src.img", "src.img.gen", "node2.bitmap"):
            shutil.copy(tmp_path / name, tmp_path / f"crash-{name}")
    finally:
        first.close()
    second = make_source(tmp_path, SIZE, image="crash-src.img")
    try:
        node2.up = True
        second.add_target("node2", node2.connect, tmp_path / "crash-node2.bitmap", timeout=2.0, retry_interval=0.05)
        wait_state(second, "node2", MirrorState.MIRRORING)
        assert second.link("node2").progress.bytes_sent == 3 * CHUNK
        assert node2.data() == (tmp_path / "crash-src.img").read_bytes()
    finally:
        second.close()
        node2.close()


def test_a_full_resync_skips_zeros_and_holes(tmp_path) -> None:
    source = make_source(tmp_path, SIZE)
    node2 = TargetNode(tmp_path, "node2", SIZE)
    try:
        for i in (0, 17, 40):
            source.local.write(i * CHUNK, pattern(i + 1, CHUNK))
        source.local.write(50 * CHUNK, bytes(CHUNK))  # written zeros: not a hole, still not sent
        node2.store.write(60 * CHUNK, b"stale data on the target")  # a zero chunk on the source
        mirrored(source, node2, tmp_path)
        progress = source.link("node2").progress
        assert progress.bytes_sent == 3 * CHUNK
        assert progress.zero_bytes == SIZE - 3 * CHUNK
        assert node2.data() == src_bytes(tmp_path)
    finally:
        source.close()
        node2.close()


def test_concurrent_writers_during_a_resync_leave_the_target_identical(tmp_path) -> None:
    source = make_source(tmp_path, SIZE)
    node2 = TargetNode(tmp_path, "node2", SIZE)
    for i in range(0, 64, 3):
        source.local.write(i * CHUNK, pattern(1000 + i, CHUNK))
    stop = threading.Event()
    errors: list[OSError] = []

    def writer(n: int) -> None:
        rnd = random.Random(n)
        try:
            i = 0
            while not stop.is_set() and i < 400:
                length = rnd.choice([4 * KiB, 12 * KiB, 64 * KiB, 200 * KiB])
                offset = rnd.randrange(0, SIZE - length) // 512 * 512
                source.write(offset, pattern(n * 100_000 + i, length))
                if i % 50 == 0:
                    source.flush()
                i += 1
        except OSError as exc:  # reported below: a write failed the application
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    try:
        for t in threads:
            t.start()
        settings = ResyncSettings(throttle_after=2, low_water_bytes=SIZE, block_writes_timeout=2.0)
        source.add_target(
            "node2", node2.connect, tmp_path / "node2.bitmap", timeout=2.0, retry_interval=0.05, settings=settings
        )
        for t in threads:
            t.join(60)
        assert not errors
        wait_state(source, "node2", MirrorState.MIRRORING)
        source.flush()
        assert node2.data() == src_bytes(tmp_path)
    finally:
        stop.set()
        source.close()
        node2.close()


def test_an_async_target_is_always_a_prefix_of_the_writes(source, node2, tmp_path) -> None:
    mirrored(source, node2, tmp_path, mode=MirrorMode.ASYNC)
    record = 4 * KiB
    cut = threading.Event()

    def cutter() -> None:
        wait_until(lambda: node2.store.writes > 150, "the target to apply some records")
        node2.down()
        cut.set()

    t = threading.Thread(target=cutter)
    t.start()
    n = 0
    while not cut.is_set() and n < 1000:
        source.write(n * record, pattern(n + 1, record))  # record n holds n+1: a missing one reads 0
        n += 1
    t.join(30)
    data = node2.data()
    present = [int.from_bytes(data[i * record : i * record + 4], "big") == i + 1 for i in range(n)]
    k = present.index(False) if False in present else n
    assert all(present[:k]) and not any(present[k:]), "the target is not a prefix of the writes"
    assert k > 0
    node2.up = True
    source.link("node2").wake.set()
    wait_state(source, "node2", MirrorState.MIRRORING)
    source.flush()
    wait_until(lambda: node2.data() == src_bytes(tmp_path), "the async target to catch up")


def test_an_async_queue_at_high_water_pauses_instead_of_blocking(source, node2, tmp_path) -> None:
    mirrored(source, node2, tmp_path, mode=MirrorMode.ASYNC, queue_bytes=512 * KiB)
    node2.store.open_gate.clear()
    for i in range(32):
        source.write(i * 128 * KiB, pattern(i, 128 * KiB))  # never blocked by the frozen target
    link = source.link("node2")
    wait_until(lambda: link.state is MirrorState.PAUSED, "the async mirror to pause")
    assert "high water" in link.reason or "silent" in link.reason
    node2.store.open_gate.set()
    link.wake.set()
    wait_state(source, "node2", MirrorState.MIRRORING)
    source.flush()
    wait_until(lambda: node2.data() == src_bytes(tmp_path), "the async target to catch up")


def test_pause_continue_and_break(source, node2, tmp_path) -> None:
    mirrored(source, node2, tmp_path)
    link = source.link("node2")
    source.pause("node2")
    assert link.state is MirrorState.PAUSED
    source.write(0, pattern(5, CHUNK))
    assert link.bitmap.dirty_chunks == 1
    source.continue_("node2")
    wait_state(source, "node2", MirrorState.MIRRORING)
    assert link.progress.bytes_sent == CHUNK
    source.break_("node2")
    assert int(link.state) == 3 and link.bitmap.dirty_chunks == link.bitmap.chunks
    source.write(CHUNK, pattern(6, CHUNK))
    source.continue_("node2")
    wait_state(source, "node2", MirrorState.MIRRORING)  # full resync: only the non-zero chunks carry data
    assert link.progress.bytes_sent == 2 * CHUNK
    source.flush()
    assert node2.data() == src_bytes(tmp_path)


def test_sequential_writes_mark_ahead_and_clean_chunks_are_cleared_lazily(source, node2, tmp_path) -> None:
    mirrored(source, node2, tmp_path, mark_ahead=1 * MiB, clear_interval=600)
    link = source.link("node2")
    commits = link.bitmap.commits
    for i in range(16):  # 4 MiB in 256 KiB sequential writes: 64 chunks
        source.write(i * 256 * KiB, pattern(i + 1, 256 * KiB))
    # one commit per 1 MiB marked ahead (plus the write's own chunks), not one per write
    assert link.bitmap.commits - commits <= 4
    assert link.bitmap.dirty_chunks == 64
    source.flush()  # the target has everything durably now
    link.clear_clean(tick=True)
    assert link.bitmap.dirty_chunks == 0
    source.write(0, pattern(99, 4 * KiB))  # new territory again: chunk 0 and 16 ahead
    assert link.bitmap.dirty_chunks == 17
    link.clear_clean(tick=True)  # the chunks marked ahead survive one tick untouched...
    source.write(CHUNK, pattern(98, 4 * KiB))  # ...and one written meanwhile is no longer "ahead"
    link.clear_clean(tick=True)
    assert {c for c in range(64) if link.bitmap.is_dirty(c)} == {0, 1}
    source.flush()
    link.clear_clean(tick=True)
    assert link.bitmap.dirty_chunks == 0
    assert node2.data() == src_bytes(tmp_path)


def test_a_source_crash_while_mirroring_resends_what_was_in_flight(tmp_path) -> None:
    node2 = TargetNode(tmp_path, "node2", SIZE)
    first = make_source(tmp_path, SIZE)
    try:
        mirrored(first, node2, tmp_path, clear_interval=600, mark_ahead=0)
        for i in range(5):
            first.write(i * 3 * CHUNK, pattern(i + 1, CHUNK))
        # the crash: the bitmap on disk still covers the last writes (cleared lazily)
        for name in ("src.img", "src.img.gen", "node2.bitmap"):
            shutil.copy(tmp_path / name, tmp_path / f"crash-{name}")
    finally:
        first.close()
    second = make_source(tmp_path, SIZE, image="crash-src.img")
    try:
        link = second.add_target(
            "node2", node2.connect, tmp_path / "crash-node2.bitmap", timeout=2.0, retry_interval=0.05
        )
        wait_state(second, "node2", MirrorState.MIRRORING)
        assert link.relation is not None and link.relation.value == "in sync"
        assert link.progress.bytes_sent == 5 * CHUNK  # the dirty chunks, not the volume
        assert node2.data() == (tmp_path / "crash-src.img").read_bytes()
        assert not node2.gens.value.inconsistent
    finally:
        second.close()
        node2.close()


def test_writers_that_outpace_the_resync_are_delayed_until_it_converges(tmp_path) -> None:
    source = make_source(tmp_path, SIZE)
    node2 = TargetNode(tmp_path, "node2", SIZE)
    stop = threading.Event()

    def hot_writer(n: int) -> None:
        i = 0
        while not stop.is_set() and i < 1_000_000:  # a hot region rewritten without pause
            source.write((n * 8 + i % 8) * CHUNK, pattern(n * 100_000 + i, 8 * KiB))
            i += 1

    threads = [threading.Thread(target=hot_writer, args=(n,)) for n in range(2)]
    try:
        for t in threads:
            t.start()
        settings = ResyncSettings(throttle_after=1, low_water_bytes=SIZE, block_writes_timeout=5.0)
        source.add_target(
            "node2", node2.connect, tmp_path / "node2.bitmap", timeout=2.0, retry_interval=0.05, settings=settings
        )
        wait_state(source, "node2", MirrorState.MIRRORING)
        passes = source.link("node2").progress.passes
        stop.set()
        for t in threads:
            t.join(30)
        # from the second pass on the writers were held back, so the resync ended at once
        assert passes == 1 or (source.delayed_writes > 0 and passes <= 3), (passes, source.delayed_writes)
        source.flush()
        assert node2.data() == src_bytes(tmp_path)
    finally:
        stop.set()
        source.close()
        node2.close()


def test_drain_waits_until_an_async_target_has_every_write(source, node2, tmp_path) -> None:
    mirrored(source, node2, tmp_path, mode=MirrorMode.ASYNC)
    for i in range(40):
        source.write(i * 64 * KiB, pattern(i + 1, 64 * KiB))
    flushes = node2.store.flushes
    assert source.drain("node2", timeout=20)
    assert node2.store.flushes > flushes
    assert node2.data() == src_bytes(tmp_path)
    source.pause("node2")
    assert not source.drain("node2", timeout=1)
    status = source.status()[0].to_json()
    assert (status["state"], status["state_code"], status["mode"]) == ("Paused", 4, "async")


@pytest.mark.parametrize("mode", [MirrorMode.SYNC, MirrorMode.ASYNC])
def test_overlapping_concurrent_writes_reach_the_target_in_the_local_order(source, node2, tmp_path, mode) -> None:
    mirrored(source, node2, tmp_path, mode=mode)

    def writer(n: int) -> None:
        rnd = random.Random(n)
        for i in range(300):  # all in the first 512 KiB: writes overlap all the time
            length = rnd.choice([512, 4 * KiB, 20 * KiB, 100 * KiB])
            source.write(rnd.randrange(0, 512 * KiB - length), pattern(n * 1000 + i, length))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert source.link("node2").state is MirrorState.MIRRORING
    assert source.drain("node2", timeout=20)
    assert node2.data() == src_bytes(tmp_path)
