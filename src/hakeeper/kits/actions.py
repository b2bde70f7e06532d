"""LifeKeeper-layout action scripts in the state directory.

A resource type may carry executables in
``<state dir>/subsys/<app>/resources/<type>/actions/<action>``, as LifeKeeper's
``$LKROOT/subsys`` does. They are called with ``-t TAG -i ID`` and this
environment:

``HAKEEPER_ROOT``  the state directory
``HAKEEPER_TAG``   the resource's tag
``HAKEEPER_ID``    the resource's id
``HAKEEPER_INFO``  the resource's info (a string as is, anything else as JSON)
``HAKEEPER_NODE``  this node's name
``LKROOT``         the state directory too, for scripts written for LifeKeeper

Exit status 0 means success. Every action runs in a process group of its own
and the whole group is killed when it overruns its timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hakeeper.db.model import Resource, info_text

DEFAULT_TIMEOUT = 60.0
MAX_OUTPUT = 4096


@dataclass(frozen=True)
class ActionResult:
    action: str
    tag: str
    returncode: int
    output: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        if self.timed_out:
            return f"{self.action} of {self.tag} timed out"
        last = self.output.strip().splitlines()[-1:] or [""]
        detail = f": {last[0]}" if last[0] else ""
        return f"{self.action} of {self.tag} failed (exit {self.returncode}){detail}"


def action_path(root: Path, app: str, type: str, action: str) -> Path | None:
    """The executable for ``action`` of ``app/type`` in the state directory, if there is one."""
    path = root / "subsys" / app / "resources" / type / "actions" / action
    return path if path.is_file() and os.access(path, os.X_OK) else None


def action_env(root: Path, resource: Resource, node: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HAKEEPER_ROOT=str(root),
        LKROOT=str(root),
        HAKEEPER_TAG=resource.tag,
        HAKEEPER_ID=resource.id,
        HAKEEPER_INFO=info_text(resource.info),
        HAKEEPER_NODE=node,
    )
    return env


def run_action(
    path: Path,
    action: str,
    resource: Resource,
    *,
    root: Path,
    node: str,
    timeout: float = DEFAULT_TIMEOUT,
) -> ActionResult:
    """Run one action script to completion or timeout; its output is kept (the last 4 KiB)."""
    try:
        proc = subprocess.Popen(
            [str(path), "-t", resource.tag, "-i", resource.id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=action_env(root, resource, node),
            cwd=root,
            start_new_session=True,
        )
    except OSError as exc:
        return ActionResult(action, resource.tag, 126, f"cannot run {path}: {exc.strerror}")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, _ = proc.communicate()
        return ActionResult(action, resource.tag, -signal.SIGKILL, _tail(out), timed_out=True)
    return ActionResult(action, resource.tag, proc.returncode, _tail(out))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _tail(data: bytes) -> str:
    return data[-MAX_OUTPUT:].decode("utf-8", "replace")
