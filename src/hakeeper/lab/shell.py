"""Running the system tools the LAN is built with (ip, nsenter, unshare, nft), always bounded in time."""

from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import LabError, LanUnavailable

SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# tool -> Debian package, for the message when it is missing
PACKAGES = {"ip": "iproute2", "nsenter": "util-linux", "unshare": "util-linux", "nft": "nftables", "sh": "dash"}


@functools.cache
def tool(name: str) -> str:
    """Absolute path of a system tool; ``LanUnavailable`` (naming the package) when it is missing."""
    path = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SBIN}")
    if path is None:
        package = PACKAGES.get(name, name)
        raise LanUnavailable(f"needs {name} for the lab (apt-get install {package})")
    return path


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    timeout: float = 10.0,
    pass_fds: Sequence[int] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a tool and capture its output; ``LabError`` with its stderr when it fails or hangs."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            pass_fds=tuple(pass_fds),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise LabError(f"{_show(argv)}: no answer within {timeout} s") from e
    if check and proc.returncode != 0:
        raise LabError(f"{_show(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


@dataclass(frozen=True)
class Command:
    """One command of a group started together by ``run_all``."""

    argv: Sequence[str]
    input: str | None = None
    pass_fds: Sequence[int] = ()


def run_all(commands: Sequence[Command], *, timeout: float = 10.0, check: bool = True) -> list[str]:
    """Start every command at once, wait for all (one deadline), and return their outputs.

    With ``check`` the first failure raises ``LabError`` — after every command has finished, so
    nothing keeps running behind the caller's back.
    """
    deadline = time.monotonic() + timeout
    started: list[tuple[Command, subprocess.Popen[str]]] = []
    try:
        for command in commands:
            proc = subprocess.Popen(
                list(command.argv),
                stdin=subprocess.PIPE if command.input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                pass_fds=tuple(command.pass_fds),
            )
            started.append((command, proc))
    except BaseException:
        for _, proc in started:
            _finish(proc)
        raise
    outputs: list[str] = []
    errors: list[str] = []
    for command, proc in started:
        try:
            out, err = proc.communicate(command.input, timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _finish(proc)
            errors.append(f"{_show(command.argv)}: no answer within {timeout} s")
            outputs.append("")
            continue
        except BaseException:
            for _, other in started:
                _finish(other)
            raise
        outputs.append(out)
        if proc.returncode != 0:
            errors.append(f"{_show(command.argv)} failed ({proc.returncode}): {err.strip()}")
    if check and errors:
        raise LabError("; ".join(errors))
    return outputs


def _finish(proc: subprocess.Popen[str]) -> None:
    """Kill a child we started (it is not reaped yet, so its pid is still ours) and reap it."""
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)


def _show(argv: Sequence[str]) -> str:
    words = [a if len(a) < 60 else a[:57] + "..." for a in argv]
    return " ".join(words)


def read_line(fd: int, deadline: float) -> str:
    """One line from a pipe, waiting at most until ``deadline``; '' on EOF or timeout."""
    data = b""
    for _ in range(1000):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 256)
        if not chunk:
            break
        data += chunk
        if b"\n" in data:
            break
    return data.split(b"\n", 1)[0].decode(errors="replace") if b"\n" in data else ""
