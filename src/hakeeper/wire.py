"""The control socket's names and wire format, with nothing but the interpreter's own modules.

Kept apart so that a command answered by hakeeperd (every LCDI command while
the daemon runs; ``sendevent``, run by monitors the moment something failed)
starts fast: this module loads only the C halves of ``socket`` and ``json``.
Their Python halves import ``enum`` and ``re``, which cost a command here as
much again as the interpreter's own start-up (about 20 ms on these machines).
The JSON written is byte for byte what ``json.dumps`` writes, and an answer of
any other shape than the daemon's is read with :mod:`json` itself.
:mod:`hakeeper.control` builds the rest on it.
"""

from __future__ import annotations

# CPython's C halves of socket and json (hakeeper runs on CPython; json and socket wrap these).
import _socket as socket
import os
from _json import encode_basestring_ascii as _quoted
from _json import scanstring as _scanstring

from hakeeper.layout import SOCKET_NAME, configured_root

CONNECT_TIMEOUT = 5.0
ANSWER_TIMEOUT = 3600.0  # a restore of a large hierarchy may take long; every action has its own timeout


def root_of(argv: list[str], given: str | None = None) -> str | None:
    """The state directory of a command that hakeeperd may answer: ``given``, else $HAKEEPER_ROOT, else the
    configuration file's ``state_dir`` (scanned, not parsed: :func:`hakeeper.layout.configured_root`), else the default.

    None when the command line has a ``--root`` of its own (only the command's own
    parser knows whether that word is the option or the value of another), when
    the value is empty (the full command refuses it: an unset variable in a script
    must not reach the default state directory), or when the configuration file
    needs the full parser. The full command then decides.
    """
    if any(item == "--root" or item.startswith("--root=") for item in argv):
        return None
    chosen = given if given is not None else os.environ.get("HAKEEPER_ROOT")
    if chosen is None:
        chosen = configured_root()  # None: only the full parser can tell, and the full command will
    return chosen or None


def request(command: str, argv: list[str]) -> bytes:
    """The request line: ``json.dumps({"command": command, "argv": argv})`` and a newline."""
    words = ", ".join(_quoted(word) for word in argv)
    return f'{{"command": {_quoted(command)}, "argv": [{words}]}}\n'.encode()


def answer_line(code: int, out: str, err: str) -> bytes:
    """The answer line: ``json.dumps({"code": code, "out": out, "err": err})`` and a newline."""
    return f'{{"code": {int(code)}, "out": {_quoted(out)}, "err": {_quoted(err)}}}\n'.encode()


def read_answer(data: bytes) -> tuple[int, str, str]:
    """The code, output and errors of an answer line; ValueError when it is not one.

    The daemon's own answers (:func:`answer_line`) are read here without the json
    module; anything else is read by it, and must still be an object with a code.
    """
    text = data.decode()
    try:
        return _read_own(text)
    except (ValueError, IndexError):
        pass
    import json

    reply = json.loads(text)
    if not isinstance(reply, dict):
        raise ValueError("an answer is a JSON object")
    try:
        return int(reply["code"]), str(reply.get("out", "")), str(reply.get("err", ""))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"an answer needs a code ({exc})") from None


def _read_own(text: str) -> tuple[int, str, str]:
    head = '{"code": '
    if not text.startswith(head):
        raise ValueError("not an answer line")
    end = text.index(", ", len(head))
    code = int(text[len(head) : end])
    fields = []
    at = end
    for name in ("out", "err"):
        key = f', "{name}": "'
        if not text.startswith(key, at):
            raise ValueError("not an answer line")
        value, at = _scanstring(text, at + len(key), True)
        fields.append(value)
    if text[at:].rstrip("\n") != "}":
        raise ValueError("not an answer line")
    return code, fields[0], fields[1]


class NoAnswer(Exception):
    """A daemon listened and took the request, but gave no usable answer (the command may have run)."""


def ask(root: str, command: str, argv: list[str]) -> tuple[int, str, str] | None:
    """Send a command to the hakeeperd of state directory ``root``: its code, output and errors.

    None when no daemon listens there; :class:`NoAnswer` (saying why) when one did
    but the exchange failed or its answer cannot be read.
    """
    path = os.path.join(root, SOCKET_NAME)
    try:
        data = exchange(path, request(command, argv))
    except OSError as exc:
        raise NoAnswer(f"hakeeperd at {path} did not answer ({exc.strerror or exc})") from None
    if data is None:
        return None
    try:
        return read_answer(data)
    except ValueError:  # UnicodeDecodeError and json's errors are ValueErrors
        raise NoAnswer("hakeeperd gave a malformed answer (see its log)") from None


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
        chunks: list[bytes] = []
        while not chunks or not chunks[-1].endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        sock.close()
