"""hakeeperd's LCD off the event loop: one writer thread with group commit, and a reader thread.

A commit of the LCD is a durable SQLite transaction (WAL, ``synchronous=FULL``):
an fsync, which a slow or busy disk can stretch to seconds. On hakeeperd's
event loop that would stall monitoring, decisions and the guard's feed, and a
stall longer than ``guard_timeout`` gets hakeeperd killed and its node failed
over: a slow disk would become a failover. So hakeeperd reaches its LCD through
:class:`Threaded`, and coroutines ``await`` it:

- **Writes** go to ONE writer thread that owns the write connection. Changes
  queued while the thread is busy (a restore of fifty branches records fifty
  states at once) are made in one transaction and one fsync: **group commit**
  (:meth:`hakeeper.db.Lcd.group`). Each is still a change of its own, with its
  own checks, its own change-log record and its own savepoint; one that fails
  is rolled back alone and its caller, and only its caller, gets the error. A
  caller's ``await`` returns once its change is durable, so a state that must be
  recorded before an action proceeds is. :meth:`Threaded.change` is for one
  ``@_write`` change (grouped); :meth:`Threaded.write` for anything else (alone:
  its own transactions, as the Lcd method makes them).
- **Reads** go to a reader thread with a connection of its own (read-only).
  WAL lets it read while the writer commits: a monitor's read never waits for
  an fsync.
- A change handed to the writer is made even if its caller is cancelled
  meanwhile (the caller may have acted on the resource already; its state must
  be recorded); a failure nobody awaits any more is logged.

**Locks.** Commands that hakeeperd runs in worker threads open their own Lcd
(``cli.base.run_in_daemon``); they and the writer thread serialize on SQLite's
write lock (``BEGIN IMMEDIATE``), each waiting at most its busy timeout.
hakeeperd's connections wait :func:`hakeeper.db.settings.daemon_busy_timeout`
(below ``guard_timeout``, always). When a grouped change still finds the LCD
locked, the writer tries again, saying so in the log, until ``patience`` runs
out; then each change of the group fails with :class:`~hakeeper.db.store.LcdBusy`
(nothing of it written, its caller told). Never a silent loss.

**Death.** A job's own exception goes to its caller; only a bug in the writer
itself ends the thread. Then every queued and later change fails with
:class:`LcdWriterDied`, and :meth:`Threaded.watch` raises: hakeeperd runs it as
its ``lcd-writer`` service, whose death is fatal (see hakeeper.supervise).

:class:`Inline` gives the same interface over one Lcd in the caller's thread,
for the engine where no hakeeperd runs (``perform_action`` alone, the guard).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from hakeeper.db.states import State
from hakeeper.db.store import Lcd, LcdBusy
from hakeeper.errors import HakeeperError, SystemCallFailed

logger = logging.getLogger(__name__)

R = TypeVar("R")

MAX_GROUP = 256  # changes in one transaction at most
PATIENCE = 30.0  # s a grouped change may wait for another writer's lock, retrying, before it fails


class LcdWriterDied(SystemCallFailed):
    """hakeeperd's LCD writer thread is gone: nothing can be written any more."""


class Access(Protocol):
    """How the engine and hakeeperd's services reach the LCD (:class:`Threaded` or :class:`Inline`)."""

    @property
    def lcd(self) -> Lcd:
        """A connection for the loop's few cheap reads (WAL: they never wait for a writer); never for writes."""

    async def read(self, fn: Callable[[Lcd], R]) -> R: ...

    async def change(self, fn: Callable[[Lcd], R]) -> R: ...

    async def set_state(self, tag: str, state: State, reason: str) -> State:
        """:meth:`Lcd.set_state`, durable when it returns; returns the previous state."""

    def queue_state(self, tag: str, state: State, reason: str) -> asyncio.Future[State]:
        """:meth:`Lcd.set_state`, queued now, durable when the future is done.

        Changes are made in the order they were queued: one queued after this
        one is never recorded without it.
        """

    async def write(self, fn: Callable[[Lcd], R]) -> R: ...


class Inline:
    """:class:`Access` over one Lcd, in the caller's thread (no hakeeperd: it blocks, as the command may)."""

    def __init__(self, lcd: Lcd) -> None:
        self._lcd = lcd

    @property
    def lcd(self) -> Lcd:
        return self._lcd

    async def read(self, fn: Callable[[Lcd], R]) -> R:
        return fn(self._lcd)

    async def change(self, fn: Callable[[Lcd], R]) -> R:
        return fn(self._lcd)

    async def set_state(self, tag: str, state: State, reason: str) -> State:
        return self._lcd.set_state(tag, state, reason)

    def queue_state(self, tag: str, state: State, reason: str) -> asyncio.Future[State]:
        future: asyncio.Future[State] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._lcd.set_state(tag, state, reason))
        except HakeeperError as exc:
            future.set_exception(exc)
        return future

    async def write(self, fn: Callable[[Lcd], R]) -> R:
        return fn(self._lcd)


@dataclass
class _Job:
    fn: Callable[[Lcd], Any]
    future: asyncio.Future[Any]
    grouped: bool
    state: tuple[str, State, str] | None = None  # a state change: made with its neighbours by Lcd.set_states


@dataclass
class Stats:
    """What the writer did: changes made (all jobs), group transactions committed, the largest group, lock waits."""

    changes: int = 0
    commits: int = 0
    largest: int = 0
    busy_retries: int = 0


class Threaded:
    """:class:`Access` for hakeeperd: a writer thread (group commit) and a reader thread, each with its connection.

    ``lcd`` is the loop's own connection (opened by hakeeperd), for the reads
    that stay synchronous. Create it inside the running loop; :meth:`start`
    opens the threads' connections (and raises as ``Lcd.open`` would);
    :meth:`aclose` ends both threads.
    """

    def __init__(
        self,
        lcd: Lcd,
        *,
        busy_timeout: float,
        actor: str = "hakeeperd",
        max_group: int = MAX_GROUP,
        patience: float = PATIENCE,
    ) -> None:
        self._lcd = lcd
        self.root = Path(lcd.path).parent
        self.actor = actor
        self.busy_timeout = busy_timeout
        self.max_group = max_group
        self.patience = patience
        self.stats = Stats()
        self._loop = asyncio.get_running_loop()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._gate = threading.Lock()  # "is the writer alive?" and "queue a job" are one step
        self._dead: BaseException | None = None
        self._closing = False
        self._died: asyncio.Future[None] = self._loop.create_future()
        self._opened = threading.Event()
        self._open_error: BaseException | None = None
        self._writer = threading.Thread(target=self._write_loop, name="lcd-writer", daemon=True)
        self._current: list[_Job] = []  # what the writer makes now (told if it dies meanwhile)
        self._reader_lcd: Lcd | None = None
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="lcd-reader")

    @property
    def lcd(self) -> Lcd:
        return self._lcd

    @property
    def alive(self) -> bool:
        """Whether the writer takes changes (False once it died or was closed)."""
        return self._dead is None and not self._closing

    def start(self) -> None:
        """Start both threads and open their connections (a few ms, at hakeeperd's start); raises if they cannot."""
        self._reader.submit(self._open_reader).result()
        self._writer.start()
        self._opened.wait()
        if self._open_error is not None:
            raise self._open_error

    def _open_reader(self) -> None:
        self._reader_lcd = Lcd.open(self.root, actor=self.actor, readonly=True)
        self._reader_lcd.set_busy_timeout(self.busy_timeout)

    def set_busy_timeout(self, seconds: float) -> None:
        """A new ``guard_timeout``: the threads' connections wait this long at most from their next transaction."""
        self.busy_timeout = seconds
        self._reader.submit(lambda: self._reader_lcd.set_busy_timeout(seconds) if self._reader_lcd else None)
        # the writer reads self.busy_timeout before each transaction

    # ------------------------------------------------------------------ the loop's side

    async def read(self, fn: Callable[[Lcd], R]) -> R:
        """``fn(lcd)`` on the reader thread's connection."""
        return await self._loop.run_in_executor(self._reader, self._read_one, fn)

    def _read_one(self, fn: Callable[[Lcd], R]) -> R:
        assert self._reader_lcd is not None
        return fn(self._reader_lcd)

    async def change(self, fn: Callable[[Lcd], R]) -> R:
        """``fn(lcd)`` — ONE change (one ``@_write`` method) — made durable, possibly committed with others."""
        result: R = await self._submit(fn, grouped=True)
        return result

    async def set_state(self, tag: str, state: State, reason: str) -> State:
        """:meth:`Lcd.set_state`, grouped; the state changes queued together cost one statement pair each."""
        old: State = await self._wait(self.queue_state(tag, state, reason))
        return old

    def queue_state(self, tag: str, state: State, reason: str) -> asyncio.Future[State]:
        """:meth:`Lcd.set_state` handed to the writer now (grouped, in order); durable when the future is done.

        Made even if nobody awaits the future (the caller must, to hear of a failure).
        """
        return self._enqueue(lambda lcd: lcd.set_state(tag, state, reason), grouped=True, state=(tag, state, reason))

    async def write(self, fn: Callable[[Lcd], R]) -> R:
        """``fn(lcd)`` on the writer's connection, in no group: its own transactions, as its Lcd methods make them."""
        result: R = await self._submit(fn, grouped=False)
        return result

    async def _submit(self, fn: Callable[[Lcd], Any], *, grouped: bool) -> Any:
        return await self._wait(self._enqueue(fn, grouped=grouped))

    def _enqueue(
        self, fn: Callable[[Lcd], Any], *, grouped: bool, state: tuple[str, State, str] | None = None
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._gate:
            if self._dead is not None or self._closing:
                raise LcdWriterDied(f"the LCD writer is gone: nothing can be written ({self._why()})")
            self._jobs.put(_Job(fn, future, grouped, state))
        return future

    @staticmethod
    async def _wait(future: asyncio.Future[R]) -> R:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_abandoned)  # the change is made all the same; a failure is logged
            raise

    def _why(self) -> str:
        return "hakeeperd stops" if self._dead is None else f"{type(self._dead).__name__}: {self._dead}"

    async def watch(self) -> None:
        """Wait while the writer runs; raise when it dies (the ``lcd-writer`` service of hakeeperd: fatal)."""
        await asyncio.shield(self._died)

    async def aclose(self) -> None:
        """Let the writer finish what is queued, then end both threads and close their connections."""
        with self._gate:
            if self._closing:
                return
            self._closing = True
            self._jobs.put(None)
        if self._writer.is_alive():
            await asyncio.to_thread(self._writer.join)
        await self._loop.run_in_executor(self._reader, self._close_reader)
        self._reader.shutdown(wait=False)

    def _close_reader(self) -> None:
        if self._reader_lcd is not None:
            self._reader_lcd.close()
            self._reader_lcd = None

    # ------------------------------------------------------------------ the writer thread

    def _write_loop(self) -> None:
        try:
            lcd = Lcd.open(self.root, actor=self.actor)
            lcd.set_busy_timeout(self.busy_timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to start(), in the loop's thread
            self._open_error = exc
            self._opened.set()
            return
        self._opened.set()
        error: BaseException | None = None
        try:
            self._serve(lcd)
        except BaseException as exc:  # noqa: BLE001 - the writer's own bug: hakeeperd is told (watch)
            error = exc
        finally:
            lcd.close()
            with self._gate:
                self._dead = error if error is not None else LcdWriterDied("the LCD writer has stopped")
            left = [(job.future, LcdWriterDied(f"the LCD writer died making this change: {self._why()}"))
                     for job in self._current]  # fmt: skip
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    left.append((job.future, LcdWriterDied(f"the LCD writer is gone: {self._why()}")))
            if left:
                self._loop.call_soon_threadsafe(_settle, left)
            self._loop.call_soon_threadsafe(self._on_end, error)

    def _on_end(self, error: BaseException | None) -> None:
        if self._died.done():
            return
        if error is None:
            self._died.set_result(None)
        else:
            self._died.set_exception(LcdWriterDied(f"the LCD writer thread died: {type(error).__name__}: {error}"))
            self._died.exception()  # retrieved here: watch() raises its own
            logger.critical("the LCD writer thread died", exc_info=error)

    def _serve(self, lcd: Lcd) -> None:
        waiting: collections.deque[_Job | None] = collections.deque()
        while True:
            job = waiting.popleft() if waiting else self._jobs.get()
            if job is None:
                return
            if not job.grouped:
                self._current = [job]
                self._alone(lcd, job)
                continue
            batch = [job]
            while len(batch) < self.max_group:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None or not more.grouped:
                    waiting.append(more)
                    break
                batch.append(more)
            self._current = batch
            self._group(lcd, batch)

    def _alone(self, lcd: Lcd, job: _Job) -> None:
        lcd.set_busy_timeout(self.busy_timeout)
        try:
            outcome: Any = job.fn(lcd)
        except Exception as exc:  # noqa: BLE001 - the caller's error, handed to it
            outcome = exc
        self.stats.changes += 1
        self._loop.call_soon_threadsafe(_settle, [(job.future, outcome)])

    def _group(self, lcd: Lcd, batch: list[_Job]) -> None:
        # Consecutive state changes are one work (Lcd.set_states: fewer statements, each still its own change).
        runs: list[list[_Job]] = []
        for job in batch:
            if runs and job.state is not None and runs[-1][-1].state is not None:
                runs[-1].append(job)
            else:
                runs.append([job])
        works = [_states(run, lcd) if run[0].state is not None else _bound(run[0].fn, lcd) for run in runs]
        started = time.monotonic()
        while True:
            lcd.set_busy_timeout(self.busy_timeout)
            try:
                outcomes: list[Any] = _expand(runs, lcd.group(works))
                break
            except LcdBusy as exc:
                waited = time.monotonic() - started
                if waited + self.busy_timeout > self.patience:
                    outcomes = [LcdBusy(f"{exc}; not recorded after {waited:.0f} s of waiting")] * len(batch)
                    break
                self.stats.busy_retries += 1
                logger.warning("%d LCD change(s) wait for another writer's lock (%.0f s so far): %s",
                               len(batch), waited, exc)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the commit failed: every change of the group is told
                outcomes = [exc] * len(batch)
                break
        self.stats.changes += len(batch)
        self.stats.commits += 1
        self.stats.largest = max(self.stats.largest, len(batch))
        self._loop.call_soon_threadsafe(_settle, [(job.future, o) for job, o in zip(batch, outcomes, strict=True)])


def _bound(fn: Callable[[Lcd], R], lcd: Lcd) -> Callable[[], R]:
    return lambda: fn(lcd)


def _states(run: list[_Job], lcd: Lcd) -> Callable[[], list[State | HakeeperError]]:
    changes = [job.state for job in run if job.state is not None]
    return lambda: lcd.set_states(changes)


def _expand(runs: list[list[_Job]], outcomes: list[Any]) -> list[Any]:
    """One outcome per job: a run of state changes gave a list (or one error for all of them)."""
    expanded: list[Any] = []
    for run, outcome in zip(runs, outcomes, strict=True):
        if run[0].state is None:
            expanded.append(outcome)
        elif isinstance(outcome, BaseException):
            expanded += [outcome] * len(run)
        else:
            expanded += outcome
    return expanded


def _settle(outcomes: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """In the loop: hand each caller its result, or its exception."""
    for future, outcome in outcomes:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _abandoned(future: asyncio.Future[Any]) -> None:
    """A change whose caller was cancelled has been made (or failed): a failure must not go unsaid."""
    if not future.cancelled() and future.exception() is not None:
        logger.error("an LCD change whose caller was cancelled failed: %s", future.exception())
