"""The local control channel: commands sent to hakeeperd over a Unix socket.

``<root>/hakeeperd.sock`` (mode 0600: only the daemon's owner, root on a real
node, may connect). One request per connection, one JSON line each way:
``{"command": NAME, "argv": [...]}`` → ``{"code": N, "out": "...", "err": "..."}``.
The daemon learns who sent a command from the socket's peer credentials, not
from the request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hakeeper.errors import CommunicationFailed
from hakeeper.layout import SOCKET_NAME
from hakeeper.wire import NoAnswer, answer_line, ask, read_answer

MAX_REQUEST = 8 << 20  # a command line, or hakeeper apply's file (at most 1 MiB) once JSON has escaped it


def socket_path(root: Path) -> Path:
    return root / SOCKET_NAME


@dataclass(frozen=True)
class Answer:
    code: int
    out: str = ""
    err: str = ""

    def encode(self) -> bytes:
        return answer_line(self.code, self.out, self.err)


def decode_request(line: bytes) -> tuple[str, list[str], dict[str, Any]]:
    """Parse a request line; raises ValueError with a reason when it is malformed."""
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("a request is a JSON object")
    command, argv = data.get("command"), data.get("argv", [])
    if not isinstance(command, str) or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise ValueError("a request needs a command (string) and argv (list of strings)")
    return command, argv, data


def decode_answer(data: bytes) -> Answer:
    try:
        return Answer(*read_answer(data))
    except ValueError:  # UnicodeDecodeError and json's errors are ValueErrors
        raise CommunicationFailed("hakeeperd gave a malformed answer (see its log)") from None


def forward_to_daemon(root: Path, command: str, argv: list[str]) -> Answer | None:
    """Send a command to hakeeperd; None when no daemon listens on this state directory."""
    try:
        answer = ask(str(root), command, argv)
    except NoAnswer as exc:
        raise CommunicationFailed(str(exc)) from None
    return None if answer is None else Answer(*answer)
