"""Processes that run LCDI commands at the same moment, for tests/unit/test_lcd_races.py.

A racer is a real process (``multiprocessing``, started with ``spawn``: no
inherited locks or connections) that runs commands exactly as a console script
does — :func:`hakeeper.cli.base.run`, which opens its own connection to the LCD
for each command. Starting a Python process per command costs a tenth of a
second or more; a racer is started once and told what to run through a pipe,
so that a race costs what its two commands cost.

Every racer waits on one barrier before each command: the commands of a race
start together, within the time a barrier takes to release its waiters, which
is much less than the time a command spends between its first read of the LCD
and its commit. Every wait is bounded, so a racer that hangs fails the test
instead of blocking it.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from tests.conftest import Result


def agreed(_lcd: Any) -> Any:
    """Commands run as inside hakeeperd with every peer agreeing: a change that concerns another node
    (eqv_create) is made here, as hakeeperd makes it once the peer recorded its side."""
    return lambda _op, _args: None


WAIT_SECONDS = 60.0  # for a racer to answer, or for the others at the barrier: far beyond any command's time


def serve(conn: Connection, barrier: Any) -> None:
    """A racer's life: run each (root, argv) it is sent once every racer is ready; None ends it."""
    from hakeeper.cli.base import run

    while True:
        try:
            job = conn.recv()
        except EOFError:  # the test is gone
            return
        if job is None:
            return
        root, argv = job
        try:
            barrier.wait(WAIT_SECONDS)
        except threading.BrokenBarrierError:
            conn.send((-1, "", "the other racers did not come to the barrier"))
            continue
        out, err = io.StringIO(), io.StringIO()
        code = run(argv[0], list(argv[1:]), root=root, out=out, err=err, replicator=agreed)
        conn.send((code, out.getvalue(), err.getvalue()))


class Racers:
    """``count`` racer processes; :meth:`race` runs one command on each, all released at once."""

    def __init__(self, count: int = 2) -> None:
        context = multiprocessing.get_context("spawn")
        self._barrier = context.Barrier(count)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for _ in range(count):
            mine, theirs = context.Pipe()
            proc = context.Process(target=serve, args=(theirs, self._barrier), daemon=True)
            proc.start()
            theirs.close()
            self._conns.append(mine)
            self._procs.append(proc)

    def race(self, root: str, commands: Sequence[Sequence[str]]) -> list[Result]:
        """Run ``commands[i]`` (command name first) on racer i against ``root``, all at once; their results."""
        assert len(commands) == len(self._conns), "one command per racer"
        for conn, argv in zip(self._conns, commands, strict=True):
            conn.send((root, list(argv)))
        results = []
        for conn, argv in zip(self._conns, commands, strict=True):
            assert conn.poll(WAIT_SECONDS), f"a racer did not finish {list(argv)} within {WAIT_SECONDS} s"
            results.append(Result(*conn.recv()))
        assert all(r.code >= 0 for r in results), f"racers out of step: {results}"
        return results

    def close(self) -> None:
        """End every racer: asked first, then by its PID if it does not listen."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
