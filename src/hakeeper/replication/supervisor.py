"""hakeeperd's side of replication: one replication process per mirrored volume of this node, kept running.

:class:`ReplicationProcesses` is hakeeperd's :class:`~.control.MirrorControls`. Its :meth:`run` (the
``replication`` service of hakeeperd) reads from the LCD which mirrored volumes this node belongs to
and how each is defined, at start, whenever a mirror change is committed here (:meth:`changed`, from
configsync's callback) and every :data:`POLL` seconds besides; it starts a process for a new volume,
stops the process of a volume gone, and restarts the process of a volume whose definition changed
(a target added or deleted), so that the process always serves what the LCD says.

A process that dies (a crash, SIGKILL, the OOM killer) is started again after a back-off that doubles
from :data:`FIRST_BACKOFF` up to :data:`MAX_BACKOFF` (again from the first once a run lasted
:data:`HEALTHY`), with one ERROR line each time. While it is down, the volume's loop device answers
I/O errors -- the filesystem above sees a failed disk (ext4 remounts read-only or aborts) -- and the
new process serves the volume on a *new* loop device: ``hakeeper mirror status VOL`` shows it (and
``STATEDIR/replication/VOL/device`` holds it). The intent bitmaps on disk make the targets' resync
partial.

:meth:`stop_all` (lkstop, hakeeperd's shutdown) sends SIGTERM to every process, waits
:data:`STOP_TIMEOUT` and then kills what is left (logged) -- except a process that says it is *busy*
(a filesystem on its volume is still mounted): killing it would fail the disk under that filesystem,
so it is left serving (logged) and stops by itself once the filesystem is unmounted; a process of
the volume started meanwhile waits for it (the volume's lock). The same holds when a changed
definition restarts a process. Everything here is asyncio subprocess
management: nothing blocks hakeeperd's loop. The processes run in sessions of their own (a Ctrl-C to
hakeeperd is not theirs) and die with hakeeperd (``PR_SET_PDEATHSIG`` in the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from hakeeper.errors import HakeeperError

from .controlsock import CONTROL_NAME, ProcessControl
from .process import BUSY_NAME, volume_dir

logger = logging.getLogger(__name__)

POLL = 5.0  # s between two looks at the LCD besides the changes committed here
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
HEALTHY = 60.0  # a run this long starts the back-off again from the first
STOP_TIMEOUT = 30.0  # s for a process to stop on SIGTERM before it is killed

#: volume -> its definition as this node knows it (compared to tell a changed definition)
Wanted = dict[str, object]


@dataclass
class _Kept:
    volume: str
    definition: object
    task: asyncio.Task[None] | None = None
    proc: asyncio.subprocess.Process | None = None
    stopping: bool = False
    started: int = 0  # processes started so far
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ReplicationProcesses:
    """The replication processes of this node's mirrored volumes (see the module's docstring)."""

    def __init__(
        self,
        root: Path,
        wanted: Callable[[], Awaitable[Wanted]],
        *,
        argv: Callable[[str], list[str]] | None = None,
        first_backoff: float = FIRST_BACKOFF,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.root = root
        self.wanted = wanted
        #: volume -> the process's command line (tests put a stand-in here)
        self.argv = argv or (
            lambda volume: [
                sys.executable,
                "-m",
                "hakeeper.replication.process",
                "--root",
                str(root),
                "--volume",
                volume,
            ]
        )
        self.first_backoff = first_backoff
        self.stop_timeout = stop_timeout
        self._leaving: set[asyncio.Task[None]] = set()  # processes left serving a mounted volume, until they end
        self._kept: dict[str, _Kept] = {}
        self._changed = asyncio.Event()
        self._down = False

    # ------------------------------------------------------------------ MirrorControls

    def control(self, volume: str) -> ProcessControl | None:
        kept = self._kept.get(volume)
        if kept is None or kept.proc is None or kept.proc.returncode is not None:
            return None
        path = volume_dir(self.root, volume) / CONTROL_NAME
        return ProcessControl(volume, path) if path.exists() else None

    def pid(self, volume: str) -> int | None:
        kept = self._kept.get(volume)
        proc = kept.proc if kept is not None else None
        return proc.pid if proc is not None and proc.returncode is None else None

    # ------------------------------------------------------------------ the service

    def changed(self) -> None:
        """A mirror change was committed here: look at the LCD now."""
        self._changed.set()

    async def run(self) -> None:
        while not self._down:
            self._changed.clear()
            await self.reconcile(await self.wanted())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL):
                    await self._changed.wait()

    async def reconcile(self, wanted: Wanted) -> None:
        if self._down:
            return
        for volume, kept in list(self._kept.items()):
            definition = wanted.get(volume)
            if definition == kept.definition:
                continue
            if definition is not None and await self._reload(kept):
                kept.definition = definition
                continue
            why = "no longer mirrored here" if definition is None else "its definition changed"
            logger.info("mirror %s: stopping its replication process (%s)", volume, why)
            await self._stop(kept)
            del self._kept[volume]
            if definition is None and (kept.proc is None or kept.proc.returncode is not None):
                for bitmap in volume_dir(self.root, volume).glob("*.bitmap"):
                    bitmap.unlink()  # a mirror made again later starts with full resyncs
        for volume, definition in sorted(wanted.items()):
            if volume not in self._kept:
                kept = self._kept[volume] = _Kept(volume, definition)
                kept.task = asyncio.create_task(self._keep(kept), name=f"replication of {volume}")

    async def _reload(self, kept: _Kept) -> bool:
        """A target added: the running process takes it without a restart (its volume stays up)."""
        control = self.control(kept.volume)
        if control is None:
            return False
        try:
            said = await asyncio.to_thread(control.call, {"verb": "reload"})
        except HakeeperError as exc:
            logger.info("mirror %s: %s", kept.volume, exc)
            return False
        logger.info("mirror %s: replication process (pid %s) reloaded: %s", kept.volume, self.pid(kept.volume),
                    said.get("said"))  # fmt: skip
        return True

    async def _keep(self, kept: _Kept) -> None:
        delay = self.first_backoff
        try:
            while not kept.stopping:
                started = time.monotonic()
                proc = kept.proc = await asyncio.create_subprocess_exec(
                    *self.argv(kept.volume), stdin=asyncio.subprocess.DEVNULL, start_new_session=True
                )
                kept.started += 1
                if kept.stopping:  # stopped while it was being started
                    proc.send_signal(signal.SIGTERM)
                logger.info("mirror %s: replication process started (pid %d)", kept.volume, proc.pid)
                code = await proc.wait()
                if kept.stopping:
                    logger.info("mirror %s: replication process (pid %d) stopped (%s)", kept.volume, proc.pid, code)
                    return
                if time.monotonic() - started >= HEALTHY:
                    delay = self.first_backoff
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
                logger.error(
                    "mirror %s: replication process (pid %d) died (%s); starting it again in %g s "
                    "(the volume answers I/O errors until then)",
                    kept.volume,
                    proc.pid,
                    how,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await kept.done.wait()  # a stop during the back-off ends it at once
                delay = min(delay * 2, MAX_BACKOFF)
        finally:
            kept.done.set()

    async def _stop(self, kept: _Kept) -> None:
        kept.stopping = True
        kept.done.set()
        proc = kept.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await proc.wait()
            except TimeoutError:
                busy = volume_dir(self.root, kept.volume) / BUSY_NAME
                if busy.exists():  # a mounted filesystem holds the volume: a kill would be a failed disk to it
                    logger.error(
                        "mirror %s: replication process (pid %d) serves on: a filesystem on its volume is still "
                        "mounted; it stops once that is unmounted",
                        kept.volume,
                        proc.pid,
                    )
                    if kept.task is not None:
                        self._leaving.add(kept.task)
                        kept.task.add_done_callback(self._leaving.discard)
                    return
                logger.error(
                    "mirror %s: replication process (pid %d) did not stop in %g s: killing it",
                    kept.volume,
                    proc.pid,
                    self.stop_timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.stop_timeout):
                        await proc.wait()
        if kept.task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(self.stop_timeout):
                    await kept.task

    async def stop_all(self) -> None:
        """lkstop / shutdown: stop every replication process (SIGTERM, then SIGKILL after STOP_TIMEOUT)."""
        self._down = True
        self._changed.set()
        kept = list(self._kept.values())
        await asyncio.gather(*(self._stop(k) for k in kept))
        self._kept.clear()
