"""Where hakeeperd, its guard and its heartbeat process log: journald, syslog, or a file with rotation.

:func:`configure` sets the root logger of one process up from the ``[log]``
settings (:mod:`hakeeper.config`) and exports them in ``$HAKEEPER_LOG_SETUP``;
the guard and the heartbeat process, started by hakeeperd, call
:func:`configure_child` and log where it logs.

The target ``auto`` is journald when stderr is the journal (hakeeperd started by
systemd: :func:`hakeeper.logs.journal.stderr_is_journal`); else the file when
``lkstart`` starts hakeeperd (it asks for ``file``); else stderr, where a
hakeeperd run by hand in the foreground (or by the test LAN, into a file of its
choosing) always logged.

The file is written by three processes at once, so its rotation is theirs
together (:class:`SharedRotatingFileHandler`): each appends (``O_APPEND``: lines
never mix), and the one that finds the file full renames it under a lock it only
tries to take. A process stopped while holding it (SIGSTOP) costs a rotation,
never a record: the guard must log while hakeeperd is frozen.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import logging.handlers
import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

from hakeeper.errors import SystemCallFailed
from hakeeper.logs import CONTINUATION, IDENTIFIER, SETUP_ENV
from hakeeper.logs.journal import SOCKET as JOURNAL_SOCKET
from hakeeper.logs.journal import JournalHandler, stderr_is_journal

SYSLOG_SOCKET = "/dev/log"


def timestamp(created: float) -> str:
    """``2026-12-03T22:03:27.123+00:00``: local time with its offset, to the millisecond."""
    local = time.localtime(created)
    offset = local.tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    millis = int(created * 1000) % 1000
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d}{sign}{hours:02d}:{minutes:02d}"


class OneLineFormatter(logging.Formatter):
    """``TIME PROCESS[PID] LEVEL LOGGER [tag=TAG]: MESSAGE``; further lines of the message begin with
    :data:`hakeeper.logs.CONTINUATION` (``stamped=False``: without the time, for syslog)."""

    def __init__(self, process: str = IDENTIFIER, *, stamped: bool = True, joiner: str = "\n" + CONTINUATION) -> None:
        super().__init__()
        self.process = process
        self.stamped = stamped
        self.joiner = joiner

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = message.rstrip("\n") + "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            message = message.rstrip("\n") + "\n" + self.formatStack(record.stack_info)
        tag = getattr(record, "tag", None)
        head = f"{self.process}[{record.process}] {record.levelname} {record.name}"
        if tag:
            head += f" tag={tag}"
        if self.stamped:
            head = f"{timestamp(record.created)} {head}"
        lines = message.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return f"{head}: " + self.joiner.join(lines)


class SharedRotatingFileHandler(logging.Handler):
    """Append records to ``path``; past ``max_bytes`` (0: never), keep ``backups`` older files
    (``path.1`` the newest), with other processes writing the same file (see the module)."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        super().__init__()
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fd = -1
        self._open()

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "replace")
            self._follow(len(data))
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except Exception:  # noqa: BLE001 - logging must not kill the process: logging's own report
            self.handleError(record)

    def _follow(self, size: int) -> None:
        """Write to the file now at ``path``: reopen it if another process rotated it; rotate it if full."""
        mine = os.fstat(self.fd)
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            self._open()
            return
        if (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            self._open()
            return
        if self.max_bytes and mine.st_size and mine.st_size + size > self.max_bytes:
            self._rotate()

    def _rotate(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return  # another process rotates it (or holds the lock, stopped): write on, rotate later
            raise
        try:
            there = os.stat(self.path)
            mine = os.fstat(self.fd)
            if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):  # not rotated meanwhile
                for number in range(self.backups - 1, 0, -1):
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(f"{self.path}.{number}", f"{self.path}.{number + 1}")
                os.rename(self.path, f"{self.path}.1")
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        self._open()

    def close(self) -> None:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
        super().close()


def resolved(target: str) -> str:
    """The target ``auto`` stands for in this process: journald when stderr is the journal, else stderr
    (lkstart asks for the file itself: see :mod:`hakeeper.cli.daemon`)."""
    if target != "auto":
        return target
    return "journal" if stderr_is_journal() else "stderr"


def handler_for(settings: Mapping[str, Any], process: str = IDENTIFIER) -> logging.Handler:
    """The handler of the ``[log]`` settings (keys ``target``, ``file``, ``max_bytes``, ``backups``; the
    tests add ``journal_socket`` or ``syslog_socket``, a socket of their own)."""
    target = resolved(settings["target"])
    if target == "stderr":
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(OneLineFormatter(process))
        return stream
    if target == "journal":
        return JournalHandler(settings.get("journal_socket") or JOURNAL_SOCKET)
    if target == "syslog":
        address = settings.get("syslog_socket") or SYSLOG_SOCKET
        try:
            syslog = logging.handlers.SysLogHandler(
                address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON, socktype=socket.SOCK_DGRAM
            )
        except OSError as exc:
            raise SystemCallFailed(f"cannot log to syslog at {address}: {exc.strerror or exc}") from None
        syslog.ident = f"{IDENTIFIER}[{os.getpid()}]: "
        syslog.setFormatter(OneLineFormatter(process, stamped=False, joiner=" " + CONTINUATION.strip() + " "))
        return syslog
    path = str(settings["file"])
    try:
        handler = SharedRotatingFileHandler(path, int(settings["max_bytes"]), int(settings["backups"]))
    except OSError as exc:
        raise SystemCallFailed(f"cannot write the log {path}: {exc.strerror or exc}") from None
    handler.setFormatter(OneLineFormatter(process))
    return handler


def configure(settings: Mapping[str, Any], process: str = IDENTIFIER) -> logging.Handler:
    """Log this process's records at ``settings["level"]`` and above through :func:`handler_for`, and export
    the settings for the processes it starts (:func:`configure_child`). Returns the handler."""
    handler = handler_for(settings, process)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(str(settings["level"]).upper())
    exported = {**settings, "target": resolved(settings["target"])}  # the children log where this process does
    os.environ[SETUP_ENV] = json.dumps(exported, sort_keys=True)
    return handler


def configure_child(process: str) -> None:
    """In the guard or the heartbeat process: log where hakeeperd logs; on stderr when started otherwise."""
    exported = os.environ.get(SETUP_ENV)
    if exported:
        try:
            configure(json.loads(exported), process)
            return
        except (ValueError, KeyError, TypeError, SystemCallFailed) as exc:
            sys.stderr.write(f"{process}: cannot log where hakeeperd logs ({exc}); logging on stderr\n")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
