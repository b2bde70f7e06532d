"""The intent log: durable before the write, lazy clears, runs, refusal of a wrong file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hakeeper.replication.bitmap import PAGE, BitmapError, IntentLog

KiB = 1024
SIZE = 8 * 1024 * KiB + 4 * KiB  # not a multiple of the chunk: the last chunk is short


def on_disk(path: Path, chunk: int) -> set[int]:
    """The chunks whose bit is set in the file (what a crash would leave)."""
    bits = path.read_bytes()[PAGE:]
    return {i for i in range(len(bits) * 8) if bits[i >> 3] >> (i & 7) & 1}


def test_a_set_bit_is_on_disk_when_mark_returns_and_a_clear_only_after_sync(tmp_path: Path) -> None:
    path = tmp_path / "t.bitmap"
    log = IntentLog.open(path, size=SIZE, chunk=64 * KiB, new_dirty=False)
    assert log.chunks == 129 and log.dirty_chunks == 0 and on_disk(path, 64 * KiB) == set()
    log.mark(100 * KiB, 64 * KiB)  # touches chunks 1 and 2
    assert on_disk(path, 64 * KiB) == {1, 2}
    commits = log.commits
    log.mark(70 * KiB, 4 * KiB)  # already dirty: no disk write at all
    assert log.commits == commits
    assert log.dirty_bytes == 128 * KiB
    log.clear_chunks([1])
    assert log.dirty_chunks == 1
    assert on_disk(path, 64 * KiB) == {1, 2}  # a clear is lazy
    log.sync()
    assert on_disk(path, 64 * KiB) == {2}
    log.mark(SIZE - 1, 1)  # the short last chunk counts its real length
    assert log.dirty_bytes == 64 * KiB + 4 * KiB
    assert list(log.runs()) == [(2, 2), (128, 128)]
    log.close()


def test_a_new_bitmap_is_all_dirty_and_reopens_with_its_bits(tmp_path: Path) -> None:
    path = tmp_path / "t.bitmap"
    log = IntentLog.open(path, size=SIZE, chunk=64 * KiB)
    assert log.dirty_chunks == 129 and log.dirty_bytes == SIZE
    assert list(log.runs(max_chunks=100)) == [(0, 99), (100, 128)]
    log.clear_chunks(range(0, 129, 2))  # type: ignore[arg-type]
    log.close()
    again = IntentLog.open(path, size=SIZE, chunk=64 * KiB)
    assert again.dirty_chunks == 64 and again.is_dirty(1) and not again.is_dirty(0)
    again.close()


def test_a_wrong_file_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "t.bitmap"
    IntentLog.open(path, size=SIZE, chunk=64 * KiB).close()
    with pytest.raises(BitmapError, match="made for a volume of 8392704 bytes in chunks of 65536"):
        IntentLog.open(path, size=2 * SIZE, chunk=64 * KiB)
    with pytest.raises(BitmapError, match="in chunks of 65536, not 8392704 bytes in chunks of 131072"):
        IntentLog.open(path, size=SIZE, chunk=128 * KiB)
    other = tmp_path / "not-a-bitmap"
    other.write_bytes(b"hello world" * 1000)
    with pytest.raises(BitmapError, match="not a hakeeper bitmap"):
        IntentLog.open(other, size=SIZE)
    damaged = bytearray(path.read_bytes())
    damaged[20] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(BitmapError, match="damaged header"):
        IntentLog.open(path, size=SIZE, chunk=64 * KiB)
    with pytest.raises(BitmapError, match="power of two of at least 4096"):
        IntentLog.open(tmp_path / "x", size=SIZE, chunk=3000)


def test_concurrent_writers_share_commits_and_every_mark_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "t.bitmap"
    log = IntentLog.open(path, size=64 * 1024 * KiB, chunk=4 * KiB, new_dirty=False)
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait(10)
        for i in range(50):
            log.mark((n * 50 + i) * 4 * KiB, 4 * KiB)
            assert log.is_dirty(n * 50 + i)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert on_disk(path, 4 * KiB) == set(range(400))
    assert log.commits <= 400  # one commit per flip at most; shared under contention
    log.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 299), st.integers(1, 40_000)), max_size=40))
def test_bitmap_matches_a_model(tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[bool, int, int]]) -> None:
    chunk = 4 * KiB
    size = 300 * chunk - 512
    path = tmp_path_factory.mktemp("bm") / "t.bitmap"
    log = IntentLog.open(path, size=size, chunk=chunk, new_dirty=False)
    model: set[int] = set()
    for is_set, first, asked in ops:
        offset = min(first * chunk + asked % chunk, size - 1)
        length = min(asked, size - offset)
        a, b = log.chunk_range(offset, length)
        if is_set:
            log.mark(offset, length)
            model |= set(range(a, b + 1))
            assert on_disk(path, chunk) >= model  # durable when mark returns
        else:
            log.clear_chunks(list(range(a, b + 1)))
            model -= set(range(a, b + 1))
    assert log.dirty_chunks == len(model)
    runs = [c for a, b in log.runs(max_chunks=7) for c in range(a, b + 1)]
    assert runs == sorted(model)
    log.close()
    assert on_disk(path, chunk) == model
    reopened = IntentLog.open(path, size=size, chunk=chunk)
    assert reopened.dirty_chunks == len(model)
    reopened.close()
