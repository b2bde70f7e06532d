"""BlockStores the volume tests plug into ``python -m hakeeper.replication.serve --wrap MODULE:FUNCTION``.

The serving process is another process: what a wrapper sees, it tells the test through a file named by
an environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from hakeeper.replication.device import LocalStore

FLUSH_LOG = "HAKEEPER_TEST_FLUSH_LOG"  # a file that gets one line per flush the store receives


class CountingStore:
    """A LocalStore that records each flush (one line in the file ``$HAKEEPER_TEST_FLUSH_LOG``)."""

    def __init__(self, local: LocalStore) -> None:
        self._local = local
        self._log = Path(os.environ[FLUSH_LOG])

    @property
    def size(self) -> int:
        return self._local.size

    def read_into(self, offset: int, buf: memoryview) -> int:
        return self._local.read_into(offset, buf)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._local.write(offset, data)

    def flush(self) -> None:
        self._local.flush()
        with self._log.open("a") as log:
            log.write("flush\n")

    def close(self) -> None:
        self._local.close()


class FailingStore(CountingStore):
    """Every write fails with an exception that has no errno (as a timed-out mirror's would)."""

    def write(self, offset: int, data: bytes | memoryview) -> None:
        raise TimeoutError("the store gave up")


def counting(local: LocalStore) -> CountingStore:
    return CountingStore(local)


def failing(local: LocalStore) -> FailingStore:
    return FailingStore(local)
