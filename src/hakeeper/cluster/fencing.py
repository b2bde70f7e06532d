"""What must happen before a node takes over from a dead one: the administrator's confirmation, fencing.

- **Confirmation** (LifeKeeper's ``confirmso``): with the LCD flag
  ``confirmso!<node>``, a failover from that node waits for
  ``lk_confirmso -y|-n -s <node>``; after ``confirmso_timeout`` the
  ``confirmso_default`` decides.
- **Fencing**: with a ``fence_command`` set, the dead node is fenced before
  anything is restored; a fence that fails or hangs blocks the takeover.
- With ``quorum_mode=tcp_remote`` and two nodes, no third voter can prove that
  the other node stopped: fencing is required there (:meth:`Fencing.required`).

A takeover that is refused or blocked says why in ``blocked`` (``hakeeper why``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex

from hakeeper.db import Lcd
from hakeeper.errors import NotFound

logger = logging.getLogger(__name__)

CONFIRM_FLAG = "confirmso!"  # + a node: a failover from that node waits for lk_confirmso (LifeKeeper's flag)
FENCE_TIMEOUT = 120.0


class Fencing:
    """Confirmation and fencing of dead nodes; ``blocked`` (hierarchy -> why) is the failover's."""

    def __init__(self, lcd: Lcd, blocked: dict[str, str]) -> None:
        self.lcd = lcd
        self.me = lcd.local_node
        self.blocked = blocked
        #: Failovers waiting for lk_confirmso, by dead node.
        self.confirmations: dict[str, asyncio.Future[bool]] = {}

    def required(self, nodes: int) -> bool:
        """Two nodes with quorum_mode=tcp_remote and no fence_command: nothing proves the other one stopped."""
        settings = self.lcd.settings()
        return (
            str(settings["quorum_mode"]) == "tcp_remote" and nodes == 2 and not str(settings["fence_command"]).strip()
        )

    async def confirmed(self, dead: str, names: list[str]) -> bool:
        """Whether the failover of ``names`` from ``dead`` may go on: at once, unless flagged for confirmation.

        The caller holds no decision lock meanwhile: the wait lasts up to ``confirmso_timeout``.
        """
        if not names or not self.lcd.has_flag(f"{CONFIRM_FLAG}{dead}"):
            return True
        settings = self.lcd.settings()
        timeout, default = float(settings["confirmso_timeout"]), str(settings["confirmso_default"])
        waiting = asyncio.get_running_loop().create_future()
        self.confirmations[dead] = waiting
        logger.warning(
            "failover of %s from %s waits for confirmation: lk_confirmso -y|-n -s %s (after %g s: %s)",
            ", ".join(names), dead, dead, timeout, default,
        )  # fmt: skip
        try:
            async with asyncio.timeout(timeout):
                yes: bool = await waiting
            why = f"{'confirmed' if yes else 'refused'} by lk_confirmso"
        except TimeoutError:
            yes = default == "proceed"
            why = f"not confirmed within {timeout:g} s (confirmso_default={default})"
        finally:
            self.confirmations.pop(dead, None)
        if not yes:
            for name in names:
                self.blocked[name] = f"failover from {dead} {why}"
        logger.warning("failover from %s %s", dead, why)
        return yes

    def confirm(self, dead: str, yes: bool) -> str:
        """``lk_confirmso -y|-n -s DEAD``: answer a failover that waits for confirmation."""
        waiting = self.confirmations.get(dead)
        if waiting is None or waiting.done():
            raise NotFound(f"no failover from {dead} waits for confirmation on {self.me}")
        waiting.set_result(yes)
        return f"failover from {dead} {'confirmed' if yes else 'refused'}"

    async def fence(self, node: str, names: list[str]) -> bool:
        """Run the ``fence_command`` against ``node`` (if one is set); False, with ``names`` blocked, if it failed."""
        command = str(self.lcd.settings()["fence_command"]).strip()
        if not command:
            return True
        argv = [word.replace("{node}", node) for word in shlex.split(command)]
        env = dict(os.environ, HAKEEPER_FENCE_NODE=node)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        except OSError as exc:
            return self._failed(node, names, f"{argv[0]}: {exc.strerror or exc}")
        try:
            async with asyncio.timeout(FENCE_TIMEOUT):
                output, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return self._failed(node, names, f"{argv[0]} took more than {FENCE_TIMEOUT:g} s")
        text = output.decode(errors="replace").strip().splitlines()
        if proc.returncode != 0:
            detail = f": {text[-1]}" if text else ""
            return self._failed(node, names, f"{argv[0]} exited {proc.returncode}{detail}")
        logger.warning("fenced %s with %s", node, argv[0])
        return True

    def _failed(self, node: str, names: list[str], why: str) -> bool:
        reason = f"fencing {node} failed ({why}); takeover blocked"
        for name in names:
            self.blocked[name] = reason
        logger.error("%s: %s", ", ".join(names), reason)
        return False
