"""Running action scripts: a process group of their own, output kept, killed whole when cancelled.

The engine enforces timeouts by cancelling the coroutine; :func:`run_script`
answers a cancellation by killing the script's whole process group, so nothing
it started lingers. A script's output goes to a temporary file, not a pipe: a
restore script that starts a daemon in the background must not make us wait
for the daemon to close its inherited stdout.

Exit codes follow OCF, so a script can say what kind of failure it hit:
0 success, 7 stopped (quickCheck only), 6 configuration error (wait for the
administrator), 2, 3, 4 or 5 cannot run on this node (move the hierarchy), any
other code a generic failure (repair in place first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hakeeper.kits.base import Policy, Result

MAX_OUTPUT = 4096

OCF_SUCCESS = 0
OCF_ERR_GENERIC = 1
OCF_ERR_ARGS = 2
OCF_ERR_UNIMPLEMENTED = 3
OCF_ERR_PERM = 4
OCF_ERR_INSTALLED = 5
OCF_ERR_CONFIGURED = 6
OCF_NOT_RUNNING = 7
OCF_RUNNING_PROMOTED = 8
OCF_FAILED_PROMOTED = 9
OCF_DEGRADED = 190
OCF_DEGRADED_PROMOTED = 191

_NAMES = {
    OCF_ERR_GENERIC: "generic error",
    OCF_ERR_ARGS: "invalid arguments on this node",
    OCF_ERR_UNIMPLEMENTED: "action not implemented",
    OCF_ERR_PERM: "insufficient privileges",
    OCF_ERR_INSTALLED: "required software missing on this node",
    OCF_ERR_CONFIGURED: "configuration error",
    OCF_NOT_RUNNING: "not running",
    OCF_FAILED_PROMOTED: "failed (promoted)",
}


@dataclass(frozen=True)
class Completed:
    returncode: int
    output: str

    def last_line(self) -> str:
        lines = [line for line in self.output.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else ""

    def describe(self, what: str) -> str:
        reason = _NAMES.get(self.returncode, "")
        detail = self.last_line()
        code = f"exit {self.returncode}" + (f", {reason}" if reason else "")
        if self.returncode < 0:
            code = f"killed by signal {-self.returncode}"
        return f"{what} failed ({code})" + (f": {detail}" if detail else "")


def policy_of(code: int) -> Policy:
    """The policy an OCF exit code asks for."""
    if code == OCF_ERR_CONFIGURED:
        return Policy.CONFIG
    if code in (OCF_ERR_ARGS, OCF_ERR_UNIMPLEMENTED, OCF_ERR_PERM, OCF_ERR_INSTALLED):
        return Policy.HARD
    return Policy.SOFT


def action_result(done: Completed, what: str, *, stop: bool = False) -> Result:
    """The result of a restore / remove / recover / delete script (``stop``: 7 also means success)."""
    if done.returncode == OCF_SUCCESS or (stop and done.returncode == OCF_NOT_RUNNING):
        return Result.success(output=done.output)
    return Result.failure(done.describe(what), policy_of(done.returncode), done.output)


def check_result(done: Completed, what: str) -> Result:
    """The result of a quickCheck / monitor script: running, stopped or failed."""
    code = done.returncode
    if code in (OCF_SUCCESS, OCF_RUNNING_PROMOTED, OCF_DEGRADED, OCF_DEGRADED_PROMOTED):
        return Result.running("degraded" if code >= OCF_DEGRADED else "")
    if code == OCF_NOT_RUNNING:
        return Result.stopped(done.last_line() or "stopped")
    return Result.failed(done.describe(what), policy_of(code), done.output)


async def run_script(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
) -> Completed:
    """Run ``argv`` in a new session; on cancellation kill its whole process group, then re-raise."""
    with tempfile.TemporaryFile() as out:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            return Completed(126, f"cannot run {argv[0]}: {exc.strerror}")
        try:
            code = await proc.wait()
        except BaseException:
            kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                await asyncio.shield(proc.wait())
            raise
        out.seek(max(0, out.seek(0, os.SEEK_END) - MAX_OUTPUT))
        return Completed(code, out.read().decode("utf-8", "replace"))


def kill_group(pgid: int) -> None:
    """SIGKILL every process of a process group (the group a script was started in)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
