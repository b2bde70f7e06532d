"""systemd's notify protocol, spoken by hakeeperd under ``Type=notify`` (no dependency: a datagram each).

systemd passes ``$NOTIFY_SOCKET``: the path of an AF_UNIX datagram socket, or,
when it starts with ``@``, a name in the abstract namespace. Each message is one
datagram of ``KEY=value`` lines. hakeeperd sends:

- ``READY=1`` once it serves (its control socket listens and it has caught up
  with its peers): ``systemctl start`` returns then, and units ordered after it start;
- ``STATUS=...``, a short line for ``systemctl status``;
- ``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` while its event loop runs
  (:meth:`Notifier.watchdog`, a supervised service): when the loop hangs, the
  pings stop and systemd kills hakeeperd (``WatchdogSec=`` in the unit);
- ``STOPPING=1`` when it stops on purpose.

Without ``$NOTIFY_SOCKET`` (lkstart, a terminal, the tests) a :class:`Notifier`
sends nothing. :meth:`Notifier.from_environ` also removes the variables from the
environment, as ``sd_notify(unset_environment=1)`` does: the processes hakeeperd
starts (the guard, the protected applications) must not take systemd's socket
or watchdog for theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable, MutableMapping

logger = logging.getLogger(__name__)

ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
MAX_STATUS = 200  # systemctl status shows one line; a status is a sentence, not a report


class Notifier:
    """Where hakeeperd tells systemd how it is; does nothing without a notify socket."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        #: The watchdog interval systemd expects (``WatchdogSec=``), in seconds; None: no watchdog.
        self.watchdog_timeout = watchdog_usec / 1e6 if watchdog_usec else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """The notifier systemd set up for this process (``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC``, ``$WATCHDOG_PID``).

        The watchdog is this process's only when ``$WATCHDOG_PID`` is unset or is its pid
        (a variable inherited from a parent is not meant for it).
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET")
        usec: int | None = None
        watchdog_pid = env.get("WATCHDOG_PID", "")
        if not watchdog_pid or watchdog_pid == str(os.getpid()):
            with contextlib.suppress(ValueError):
                usec = int(env.get("WATCHDOG_USEC", "")) or None
            if usec is not None and usec < 0:
                usec = None
        if unset:
            for name in ENVIRONMENT:
                env.pop(name, None)
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one message of ``KEY=value`` fields; False when there is no socket or it cannot be reached.

        A failure is logged, never raised: systemd being away must not stop a node serving.
        """
        if self.address is None:
            return False
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), target)
        except OSError as exc:
            logger.warning("cannot notify systemd on %s: %s", self.address, exc.strerror or exc)
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", _status(status))

    def status(self, status: str) -> bool:
        return self.send(_status(status))

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", _status(status))

    async def watchdog(self, status: Callable[[], str] | None = None) -> None:
        """Ping systemd's watchdog every half of its interval, for as long as the event loop turns.

        Each ping carries ``status()`` too when it changed since the last one sent, so that
        ``systemctl status`` follows the node. Returns at once without a watchdog (hakeeperd
        then does not run it as a service).
        """
        if self.watchdog_timeout is None:
            return
        every = self.watchdog_timeout / 2
        said = None
        while True:
            fields = ["WATCHDOG=1"]
            now = None
            if status is not None:
                try:
                    now = _status(status())
                except Exception:  # the ping is what matters; the status waits for the next one
                    logger.exception("cannot make the status line for systemd")
            if now is not None and now != said:
                fields.append(now)
            if self.send(*fields) and now is not None:
                said = now
            await asyncio.sleep(every)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str) -> str:
    line = " ".join(text.split())
    return "STATUS=" + (line[: MAX_STATUS - 3] + "..." if len(line) > MAX_STATUS else line)
