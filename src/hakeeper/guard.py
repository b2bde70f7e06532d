"""The guard: a small process that stops this node serving when hakeeperd dies or hangs.

keepalived leaves its address on the old master after ``kill -9``, and the
backup takes it too: a split brain. hakeeper's peers take over a node whose
heartbeats stop (hakeeperd's heartbeat process exits with it), so a node whose
hakeeperd is gone must stop serving first. hakeeperd starts this process
(``python -m hakeeper.guard``, in a session of its own) and writes it a line
every quarter of ``guard_timeout``:

- **hakeeperd dies** (SIGKILL, a crash): the pipe closes at once. The guard opens
  the LCD and takes every resource in service out of service with the kits' own
  remove actions, its virtual addresses first (a few milliseconds), then the rest
  parents first, as a quorum loss does (``guard_action=osu``), or reboots the node
  at once (``guard_action=reboot``). It does so within the peers' detection
  budget plus their takeover delay, the time they wait before taking over; if
  it takes longer, it says so in the log.
- **hakeeperd hangs** (no line for ``guard_timeout``): its heartbeats may still
  run, so the peers would take over nothing, and nothing protects the node. The
  guard kills hakeeperd (SIGKILL, by the PID it was given) — its heartbeats stop
  with it — and then acts as above. The peers see the node go silent only after
  the kill, so the guard is never late for them, whatever ``guard_timeout``.
- **hakeeperd stops on purpose** (``lkstop``, SIGTERM): it tells the guard
  ``{"stop": true}`` first, and the guard exits without touching anything.
- **hakeeperd exits after a fatal failure** (a service it cannot live without
  died, see hakeeper.supervise): it stops acting, then closes the guard's pipe
  (:meth:`GuardLink.release`) as its death would, and waits until the guard is
  done before its heartbeats stop; without a guard to do it, hakeeperd does the
  guard's action itself (:func:`take_down`).

The guard runs until then; its log lines go where hakeeperd's go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hakeeper.db import Lcd
    from hakeeper.recovery.engine import Engine

logger = logging.getLogger("hakeeper.guard")

RESTART_DELAY = 1.0
STOP_TIMEOUT = 2.0
REBOOT = ["systemctl", "reboot", "--force", "--force"]


# ---------------------------------------------------------------------- hakeeperd's side


class GuardLink:
    """Keep the guard running and fed; tell it to stand down when hakeeperd stops on purpose."""

    def __init__(self, root: Path, timeout: Callable[[], float], *, cut_fd: int | None = None) -> None:
        self.root = root
        self.timeout = timeout
        self.cut_fd = cut_fd
        self._proc: asyncio.subprocess.Process | None = None
        self._down = False  # stand_down() was asked: the guard is not started again
        self._new_timeout = asyncio.Event()  # reconfigure(): the feeding interval changes now

    async def run(self) -> None:
        while not self._down:
            cut = ["--cut-fd", str(self.cut_fd)] if self.cut_fd is not None else []
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hakeeper.guard", "--root", str(self.root), "--daemon-pid", str(os.getpid()),
                *cut, stdin=asyncio.subprocess.PIPE, start_new_session=True,
                pass_fds=(self.cut_fd,) if self.cut_fd is not None else (),
            )  # fmt: skip
            proc = self._proc
            ended = asyncio.ensure_future(proc.wait())
            try:
                while not ended.done():
                    timeout = self.timeout()
                    self._write({"tick": time.monotonic(), "timeout": timeout})
                    self._new_timeout.clear()
                    changed = asyncio.ensure_future(self._new_timeout.wait())
                    await asyncio.wait((ended, changed), timeout=timeout / 4, return_when=asyncio.FIRST_COMPLETED)
                    changed.cancel()
            except (ConnectionError, BrokenPipeError):
                pass
            await ended
            if self._down:  # hakeeperd stops on purpose: a guard started now would act when it exits
                return
            logger.error("the guard exited (%s); starting it again", proc.returncode)
            await asyncio.sleep(RESTART_DELAY)

    def reconfigure(self) -> None:
        """Feed the guard now, with the current ``guard_timeout`` (after a settings change).

        The feeding loop wakes too: waiting out a quarter of the old, longer
        timeout would leave the guard without a line for longer than the new one,
        and it would kill a healthy hakeeperd.
        """
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            self._write({"tick": time.monotonic(), "timeout": self.timeout()})
        self._new_timeout.set()

    def _write(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None and proc.returncode is None:
            proc.stdin.write(json.dumps(message).encode() + b"\n")

    @property
    def alive(self) -> bool:
        """Whether a guard process runs now."""
        return self._proc is not None and self._proc.returncode is None

    async def release(self, wait: float) -> bool:
        """hakeeperd exits after a fatal failure: the guard acts now, as on a crash, and this waits until it is done.

        The guard's pipe is closed, as hakeeperd's death would close it. Waits at
        most ``wait`` seconds. Returns False when no guard ran to act, or it ended
        with an error: then hakeeperd must do the guard's action itself.
        """
        self._down = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return False
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            code = await asyncio.wait_for(proc.wait(), wait)
        except TimeoutError:
            logger.error("the guard is not done after %g s", wait)
            return True  # it acts still: doing the same beside it would race it
        return code == 0

    async def stand_down(self) -> None:
        """hakeeperd stops on purpose: the guard exits and touches nothing, and is not started again."""
        self._down = True
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            self._write({"stop": True})
            if proc.stdin is not None:
                await proc.stdin.drain()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            logger.error("the guard did not stand down in %g s", STOP_TIMEOUT)


# ---------------------------------------------------------------------- the guard process


def watch(fd: int, timeout: float, *, cut_fd: int | None = None, on_cut: Callable[[], None] | None = None) -> str:
    """Read hakeeperd's lines until it stops ("stopped"), dies ("gone") or falls silent ("silent").

    Meanwhile, each ``cut`` line on ``cut_fd`` (from the heartbeat process: no
    majority heard, hakeeperd not acting) runs ``on_cut``.
    """
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    if cut_fd is not None:
        selector.register(cut_fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    pending = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "silent"
        ready = selector.select(left)
        if not ready:
            continue
        if cut_fd is not None and any(key.fd == cut_fd for key, _ in ready):
            said = os.read(cut_fd, 4096)
            if not said:  # every writer is gone: nothing more will come
                selector.unregister(cut_fd)
                cut_fd = None
            elif b"cut" in said and on_cut is not None:
                on_cut()
            if not any(key.fd == fd for key, _ in ready):
                continue
        data = os.read(fd, 4096)
        if not data:
            return "gone"
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("stop"):
                return "stopped"
            timeout = float(message.get("timeout", timeout))
            deadline = time.monotonic() + timeout


def cut(root: Path) -> None:
    """Take this node's virtual addresses out of service at once: it hears no majority and hakeeperd is frozen.

    Only the network face (see hakeeper.cluster.lease): the applications stay,
    unreachable, until hakeeperd acts or the guard's timeout kills it.
    """
    from hakeeper.db import Lcd
    from hakeeper.kits.base import KitContext
    from hakeeper.kits.registry import Kits
    from hakeeper.recovery.engine import Engine

    async def run() -> None:
        started = time.monotonic()
        with Lcd.open(root, actor="guard") as lcd:
            engine = Engine(lcd, Kits(KitContext(root, lcd.local_node)))
            report = await engine.cut_network_face(reason="guard: no majority heard and hakeeperd frozen")
        if report.done:
            logger.error("guard: cut %s in %.3f s (no majority, hakeeperd frozen)", ", ".join(report.done),
                         time.monotonic() - started)  # fmt: skip
        if not report.ok:
            logger.error("guard: the cut failed: %s", report.summary())

    try:
        asyncio.run(run())
    except Exception:  # the guard must go on watching
        logger.exception("guard: the cut failed")


def act(root: Path, why: str) -> int:
    """Do ``guard_action``: reboot, or take every resource in service here out of service, addresses first."""
    from hakeeper.db import Lcd
    from hakeeper.kits.base import KitContext
    from hakeeper.kits.registry import Kits
    from hakeeper.recovery.engine import Engine

    async def run() -> int:
        with Lcd.open(root, actor="guard") as lcd:  # once: the peers take over soon
            return await take_down(lcd, lambda: Engine(lcd, Kits(KitContext(root, lcd.local_node))), why)

    return asyncio.run(run())


async def take_down(lcd: Lcd, engine: Callable[[], Engine], why: str) -> int:
    """The guard's action on ``lcd``'s node (the guard's, or hakeeperd's when no guard runs to do it)."""
    if _action(lcd) == "reboot":
        logger.error("guard: rebooting the node (guard_action=reboot)")
        return (await asyncio.to_thread(subprocess.run, REBOOT, check=False)).returncode
    from hakeeper.recovery.engine import Report

    def after_cut(cut: Report, took: float) -> None:
        if cut.done:
            logger.error("guard: cut %s in %.3f s (hakeeperd %s); now the rest", ", ".join(cut.done), took, why)

    # The network face first, as a quorum loss does (hakeeper.cluster.lease): the peers take over the
    # detection budget plus takeover_delay after hakeeperd's heartbeats stopped, and stopping the
    # applications parents first may take longer than that.
    result = await engine().cut_then_remove_everything(reason=f"guard: hakeeperd {why}", after_cut=after_cut)
    if not result.ok:
        failed = "; ".join(r.summary() for r in (result.cut, result.rest) if not r.ok)
        logger.error("guard: not everything is out of service: %s", failed)
    elif result.cut.done or result.rest.done:
        logger.warning("guard: out of service: %s", ", ".join(result.cut.done + result.rest.done))
    return 0


def main() -> int:
    """``python -m hakeeper.guard --root DIR --daemon-pid PID``: run by hakeeperd."""
    import argparse

    parser = argparse.ArgumentParser(prog="hakeeper-guard")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--daemon-pid", required=True, type=int)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--cut-fd", type=int, help="where the heartbeat process says: cut (see cut())")
    args = parser.parse_args()
    from hakeeper.logs.write import configure_child

    configure_child("hakeeper-guard")  # where hakeeperd logs (its journal, syslog or file), else stderr
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for hakeeperd in a terminal is not ours
    _warm_up()  # a dead hakeeperd's resources race the peers' takeover too
    why = watch(sys.stdin.fileno(), args.timeout, cut_fd=args.cut_fd, on_cut=lambda: cut(args.root))
    if why == "stopped":
        return 0
    started = time.monotonic()
    if why == "silent":
        logger.error("guard: hakeeperd (pid %d) is silent: killing it", args.daemon_pid)
        if os.getppid() == args.daemon_pid:  # still ours, not a recycled pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(args.daemon_pid, signal.SIGKILL)
    else:
        logger.error("guard: hakeeperd (pid %d) is gone", args.daemon_pid)
    code = act(args.root, why)
    logger.warning("guard: done in %.3f s", time.monotonic() - started)
    return code


def _warm_up() -> None:
    """Import now what a cut needs (the IP kit's pyroute2 takes ~0.15 s): a cut races the others' takeover."""
    import hakeeper.db
    import hakeeper.kits.ip
    import hakeeper.kits.registry
    import hakeeper.recovery.engine  # noqa: F401


def _action(lcd: Any) -> str:
    try:
        return str(lcd.settings().get("guard_action", "osu"))
    except Exception:
        logger.exception("guard: cannot read guard_action; using osu")
        return "osu"


if __name__ == "__main__":
    sys.exit(main())
