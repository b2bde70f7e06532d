"""A TLS socket that several threads share safely: the mirror's receiver reads while writers send.

OpenSSL must not run on one ``SSL`` object in two threads at once. A bare ``ssl.SSLSocket``
used that way by the mirror engine (its receiver thread in ``recv_into`` while libfuse's
threads ``sendall``) lost its connection every second or two under load (the benchmark's
``--tls-bare``). :class:`SharedTLS` runs every OpenSSL call non-blocking under one lock and
waits for the socket outside it, within the timeout the engine set. It offers what the
engine calls: ``settimeout``, ``gettimeout``, ``recv_into``, ``sendall``, ``shutdown``,
``close``, ``fileno``.
"""

from __future__ import annotations

import errno
import select
import ssl
import threading
import time

#: Bytes per OpenSSL write under the lock: the receiver gets its turn between pieces.
PIECE = 256 * 1024
#: The longest wait outside the lock before trying OpenSSL again: another thread's call may have
#: read what this one waits for into OpenSSL's buffer, where ``select`` cannot see it.
RECHECK = 0.05


class SharedTLS:
    """An ``SSLSocket`` (handshake done) made safe for one reader and many writers at once."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._lock = threading.Lock()  # one OpenSSL call at a time
        #: One sendall at a time: a write OpenSSL left half done (want write) must be retried with the same
        #: bytes before another thread's; interleaved writers corrupted the stream in the unit test.
        self._sending = threading.Lock()
        self._timeout: float | None = sock.gettimeout()
        sock.setblocking(False)

    @property
    def ssl_socket(self) -> ssl.SSLSocket:
        return self._sock

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout

    def gettimeout(self) -> float | None:
        return self._timeout

    def fileno(self) -> int:
        return self._sock.fileno()

    def _deadline(self) -> float | None:
        return None if self._timeout is None else time.monotonic() + self._timeout

    def _wait(self, readable: bool, deadline: float | None) -> None:
        left = RECHECK if deadline is None else min(RECHECK, deadline - time.monotonic())
        if left <= 0:
            raise TimeoutError("timed out")
        fds = [self._sock]
        try:
            select.select(fds if readable else [], [] if readable else fds, [], left)
        except ValueError:  # closed by another thread meanwhile: as a closed socket's recv or send would
            raise OSError(errno.EBADF, "the data connection was closed") from None

    def recv_into(self, buffer: memoryview | bytearray, nbytes: int = 0) -> int:
        deadline = self._deadline()
        while True:  # bounded by the deadline (each wait is at most RECHECK)
            with self._lock:
                try:
                    return self._sock.recv_into(buffer, nbytes)
                except ssl.SSLWantReadError:
                    readable = True
                except ssl.SSLWantWriteError:
                    readable = False
            self._wait(readable, deadline)

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        with self._sending:
            self._sendall(memoryview(data).cast("B"))

    def _sendall(self, view: memoryview) -> None:
        deadline = self._deadline()
        while view:  # bounded: progress restarts the deadline, no progress runs it out
            readable: bool | None = None
            with self._lock:
                try:
                    sent = self._sock.send(view[:PIECE])
                except ssl.SSLWantWriteError:
                    sent, readable = 0, False
                except ssl.SSLWantReadError:
                    sent, readable = 0, True
            view = view[sent:]
            if readable is not None:
                self._wait(readable, deadline)
            elif view:
                deadline = self._deadline()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()
