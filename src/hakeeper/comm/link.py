"""hakeeperd's side of the heartbeat process: start it, feed it its configuration, hear its reports.

The link keeps the heartbeat process running (restarting it if it dies), sends
it a new configuration whenever the paths or timing settings in the LCD change,
writes the path states where ``lcdstatus`` reads them, logs one line per change
(``node2 DEAD: all 2 paths DEAD``), and hands node state changes to the
daemon's ``on_node`` callback — the failover issue acts on those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hakeeper.comm.heartbeat import Config
from hakeeper.comm.paths import PathState, write_states
from hakeeper.db import Lcd

logger = logging.getLogger(__name__)

RESTART_DELAY = 1.0
OnNode = Callable[[str, PathState], None]
OnRuns = Callable[[str, dict[str, int]], None]
OnCut = Callable[[list[str], float], None]


def current_config(lcd: Lcd) -> Config:
    settings = lcd.settings()
    return Config(
        node=lcd.local_node,
        port=int(settings["comm_port"]) + 1,  # heartbeats on comm_port + 1; messages on comm_port
        interval=float(settings["heartbeat_interval"]),
        misses=int(settings["heartbeat_misses"]),
        paths=tuple(lcd.paths()),
        voters=len(lcd.nodes()) if settings["quorum_mode"] == "majority" else 0,
    )


class HeartbeatLink:
    def __init__(
        self,
        root: Path,
        lcd: Lcd,
        on_node: OnNode,
        *,
        refresh: float = 1.0,
        guard_fd: int | None = None,
        runs: Callable[[], dict[str, int]] | None = None,
        on_runs: OnRuns | None = None,
        face: Callable[[], dict[str, str]] | None = None,
        on_cut: OnCut | None = None,
    ) -> None:
        self.root = root
        self.guard_fd = guard_fd
        self.runs = runs
        self.on_runs = on_runs
        self.face = face  # the virtual addresses the heartbeat process cuts itself when it hears no majority
        self.on_cut = on_cut
        self.lcd = lcd
        self.on_node = on_node
        self.refresh = refresh
        self.states: dict[str, PathState] = {}
        self.nodes: dict[str, PathState] = {}
        self._proc: asyncio.subprocess.Process | None = None
        self._sent: Config | None = None

    async def run(self) -> None:
        """Keep the heartbeat process running and configured until cancelled.

        Cancelled, it stops the heartbeat process. If this link fails instead
        (an exception), the process is left running — the peers go on hearing
        this node — and the exception goes on to hakeeperd, which decides when
        the node falls silent (:meth:`stop`; see hakeeper.supervise).
        """
        try:
            await self._keep_running()
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def _keep_running(self) -> None:
        while True:
            guard = ["--guard-fd", str(self.guard_fd)] if self.guard_fd is not None else []
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hakeeper.comm.heartbeat", "--root", str(self.root), *guard,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                pass_fds=(self.guard_fd,) if self.guard_fd is not None else (),
            )  # fmt: skip
            self._sent = None
            reports = asyncio.create_task(self._read(self._proc))
            ticks = asyncio.create_task(self._tick(self._proc))
            try:
                while self._proc.returncode is None and not reports.done() and not ticks.done():
                    self._configure()
                    await asyncio.wait({reports, ticks}, timeout=self.refresh, return_when=asyncio.FIRST_COMPLETED)
            finally:
                reports.cancel()
                ticks.cancel()
                ended = await asyncio.gather(reports, ticks, return_exceptions=True)
            for error in ended:
                if isinstance(error, Exception):  # this link failed, not the process: it runs on (see run)
                    raise error
            logger.error("heartbeat process exited (%s); restarting it", self._proc.returncode)
            await asyncio.sleep(RESTART_DELAY)

    async def _tick(self, proc: asyncio.subprocess.Process) -> None:
        """Tell the heartbeat process, every quarter interval, that this event loop runs (see heartbeat.Lease);
        every interval, what runs here when it changed (its frames carry it to the peers)."""
        sent: dict[str, int] | None = None
        sent_face: dict[str, str] | None = None
        count = 0
        while proc.returncode is None and proc.stdin is not None:
            line: dict[str, Any] = {"tick": 1}
            if self.runs is not None and count % 4 == 0:
                runs = self.runs()
                if runs != sent or count % 40 == 0:
                    line["runs"] = sent = runs
            if self.face is not None:  # at once: an address restored a moment before a partition is cut with it
                face = self.face()
                if face != sent_face:
                    line["face"] = sent_face = face
            proc.stdin.write(json.dumps(line).encode() + b"\n")
            count += 1
            await asyncio.sleep(float(self.lcd.settings()["heartbeat_interval"]) / 4)

    def reconfigure(self) -> None:
        """Send the LCD's current configuration now (after a replicated settings change)."""
        self._configure()

    def _configure(self) -> None:
        config = current_config(self.lcd)
        if config == self._sent or self._proc is None or self._proc.stdin is None:
            return
        self._proc.stdin.write(json.dumps(config.as_json()).encode() + b"\n")
        self._sent = config
        self.states = {k: v for k, v in self.states.items() if k in {p.key for p in config.paths}}
        write_states(self.root, self.states)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                self._report(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("heartbeat process said something unreadable: %s", exc)
        await proc.wait()

    def _report(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "path":
            state = PathState(event["state"])
            self.states[str(event["path"])] = state
            write_states(self.root, self.states)
            logger.info("path %s %s", event["path"], state.value)
        elif kind == "node":
            node, state = str(event["node"]), PathState(event["state"])
            self.nodes[node] = state
            if state is PathState.DEAD and not event.get("heard", True):
                # At start, a peer whose hakeeperd is not running yet: not a death, but DEAD all the same.
                logger.warning("%s DEAD: not heard on any of %d paths since heartbeats started", node, event["paths"])
            elif state is PathState.DEAD:
                logger.warning("%s DEAD: all %d paths DEAD", node, event["paths"])
            else:
                logger.info("%s %s (%d of %d paths alive)", node, state.value, event["alive"], event["paths"])
            self.on_node(node, state)
        elif kind == "cut":
            if self.on_cut is not None:  # the heartbeat process logged it
                self.on_cut([str(t) for t in event["tags"]], float(event["took"]))
        elif kind == "runs" and self.on_runs is not None:
            self.on_runs(str(event["node"]), {str(k): int(v) for k, v in dict(event["runs"]).items()})

    async def stop(self) -> None:
        """Stop the heartbeat process (its stdin closes; killed after 2 s): the peers hear this node no more."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()  # the process exits when its stdin closes
        try:
            async with asyncio.timeout(2):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
