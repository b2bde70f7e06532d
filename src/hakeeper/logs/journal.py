"""journald's native protocol: one datagram per record to /run/systemd/journal/socket.

Chosen over lines on stderr with ``<N>`` priority prefixes (which journald reads
too) because a record then keeps its fields: ``HAKEEPER_TAG`` lets ``journalctl
HAKEEPER_TAG=web`` and ``hakeeper log --tag web`` select a resource's records, a
traceback stays one entry instead of one per line, and the guard and heartbeat
processes log the same way whatever their stderr is. When the socket is not
there or refuses a record, the record goes to stderr with its ``<N>`` prefix
(under systemd, stderr is the journal too), never lost and never raised.

The datagram (systemd's "Native Journal Protocol"): ``KEY=value\\n`` per field;
a value holding a newline is ``KEY\\n``, its length as 64-bit little-endian, the
value, ``\\n``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import traceback

from hakeeper.logs import IDENTIFIER

SOCKET = "/run/systemd/journal/socket"
MAX_MESSAGE = 48 * 1024  # a longer message is cut (journald takes datagrams of about 200 KiB here)


def priority(levelno: int) -> int:
    """syslog's priority of a Python level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


def encode(fields: list[tuple[str, str]]) -> bytes:
    """The datagram of one entry."""
    parts: list[bytes] = []
    for key, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(key.encode() + b"\n" + len(data).to_bytes(8, "little") + data + b"\n")
        else:
            parts.append(key.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def decode(datagram: bytes) -> list[tuple[str, str]]:
    """The fields of one datagram (the tests read what was sent)."""
    fields: list[tuple[str, str]] = []
    at = 0
    while at < len(datagram):
        end = datagram.index(b"\n", at)
        line = datagram[at:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields.append((key.decode(), value.decode()))
            at = end + 1
        else:
            size = int.from_bytes(datagram[end + 1 : end + 9], "little")
            fields.append((line.decode(), datagram[end + 9 : end + 9 + size].decode()))
            at = end + 9 + size + 1
    return fields


class JournalHandler(logging.Handler):
    """Send each record to journald with ``PRIORITY``, ``SYSLOG_IDENTIFIER``, ``HAKEEPER_TAG``, ``CODE_*``."""

    def __init__(self, path: str = SOCKET, identifier: str = IDENTIFIER) -> None:
        super().__init__()
        self.path = path
        self.identifier = identifier
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # Never wait for a busy journald: the heartbeat process logs through this too. A full queue
        # sends the record to stderr instead, where every record went before there was this handler.
        self.sock.setblocking(False)

    def fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + " [cut]"
        fields = [
            ("MESSAGE", message),
            ("PRIORITY", str(priority(record.levelno))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("SYSLOG_PID", str(os.getpid())),
            ("HAKEEPER_LOGGER", record.name),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno)),
            ("CODE_FUNC", record.funcName),
        ]
        tag = getattr(record, "tag", None)
        if tag:
            fields.append(("HAKEEPER_TAG", str(tag)))
        return fields

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = self.fields(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted: logging's own report
            self.handleError(record)
            return
        try:
            self.sock.sendto(encode(fields), self.path)
        except OSError:
            self._to_stderr(fields)

    @staticmethod
    def _to_stderr(fields: list[tuple[str, str]]) -> None:
        """``<N>message`` on stderr, one line per line of the message, as journald reads a service's stderr."""
        values = dict(fields)
        lines = values["MESSAGE"].split("\n")
        text = "".join(f"<{values['PRIORITY']}>{line}\n" for line in lines)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(text)
            sys.stderr.flush()

    def close(self) -> None:
        self.sock.close()
        super().close()


def stderr_is_journal() -> bool:
    """Whether stderr is connected to journald: ``$JOURNAL_STREAM`` (``DEVICE:INODE``) names stderr itself.

    systemd sets it for a service whose output goes to the journal; a process
    whose stderr was sent elsewhere (lkstart's log file) inherits the variable,
    and the check of the device and inode tells it apart, as sd_journal_stream_fd(3) advises.
    """
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(2)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))
