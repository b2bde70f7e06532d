"""The control socket's names and wire format, with nothing but the standard library.

Kept apart so that a client that must start fast (``sendevent``, run by
monitors at the moment something failed) imports only ``json`` and ``socket``.
:mod:`hakeeper.control` builds the rest on it.
"""

from __future__ import annotations

import json
import os
import socket

DEFAULT_ROOT = "/var/lib/hakeeper"
SOCKET_NAME = "hakeeperd.sock"
CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 3600.0  # a restore of a large hierarchy may take long; every action has its own timeout


def root_of(argv: list[str]) -> str | None:
    """The state directory a command line names: ``--root DIR``, else $HAKEEPER_ROOT, else the default.

    None when the value is empty: the full command refuses it (an unset variable
    in a script must not reach the default state directory).
    """
    for i, item in enumerate(argv):
        if item == "--root" and i + 1 < len(argv):
            return argv[i + 1] or None
        if item.startswith("--root="):
            return item.split("=", 1)[1] or None
    chosen = os.environ.get("HAKEEPER_ROOT")
    return DEFAULT_ROOT if chosen is None else chosen or None


def request(command: str, argv: list[str]) -> bytes:
    return json.dumps({"command": command, "argv": argv}).encode() + b"\n"


def exchange(path: str, payload: bytes) -> bytes | None:
    """Send one request line and read the answer line; None when no daemon listens there.

    Raises OSError when a daemon is there but the exchange fails.
    """
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # a stale socket: the daemon is gone
        sock.settimeout(ANSWER_TIMEOUT)
        sock.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        return data
    finally:
        sock.close()
