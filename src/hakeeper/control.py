"""The local control channel: commands sent to hakeeperd over a Unix socket.

``<root>/hakeeperd.sock`` (mode 0600: only the daemon's owner, root on a real
node, may connect). One request per connection, one JSON line each way:
``{"command": NAME, "argv": [...]}`` → ``{"code": N, "out": "...", "err": "..."}``.
The daemon learns who sent a command from the socket's peer credentials, not
from the request.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakeeper.errors import CommunicationFailed

SOCKET_NAME = "hakeeperd.sock"
PID_NAME = "hakeeperd.pid"
MAX_REQUEST = 1 << 20
CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 3600.0  # a restore of a large hierarchy may take long; every action has its own timeout


def socket_path(root: Path) -> Path:
    return root / SOCKET_NAME


@dataclass(frozen=True)
class Answer:
    code: int
    out: str = ""
    err: str = ""

    def encode(self) -> bytes:
        return json.dumps({"code": self.code, "out": self.out, "err": self.err}).encode() + b"\n"


def encode_request(command: str, argv: list[str], **extra: Any) -> bytes:
    return json.dumps({"command": command, "argv": argv, **extra}).encode() + b"\n"


def decode_request(line: bytes) -> tuple[str, list[str], dict[str, Any]]:
    """Parse a request line; raises ValueError with a reason when it is malformed."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("a request is a JSON object")
    command, argv = data.get("command"), data.get("argv", [])
    if not isinstance(command, str) or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError("a request needs a command (string) and argv (list of strings)")
    return command, argv, data


def forward_to_daemon(root: Path, command: str, argv: list[str], **extra: Any) -> Answer | None:
    """Send a command to hakeeperd; None when no daemon listens on this state directory."""
    path = socket_path(root)
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return None  # a stale socket: the daemon is gone
        except OSError as exc:
            raise CommunicationFailed(f"cannot reach hakeeperd at {path}: {exc.strerror or exc}") from None
        sock.settimeout(ANSWER_TIMEOUT)
        sock.sendall(encode_request(command, argv, **extra))
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        raise CommunicationFailed(f"hakeeperd did not answer ({exc.strerror or exc})") from None
    finally:
        sock.close()
    try:
        reply = json.loads(data)
        return Answer(int(reply["code"]), str(reply.get("out", "")), str(reply.get("err", "")))
    except (ValueError, KeyError, TypeError):
        raise CommunicationFailed("hakeeperd gave a malformed answer (see its log)") from None
