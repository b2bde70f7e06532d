"""The standard streams of a command run from a shell, and its answer from hakeeperd.

Kept to modules the interpreter has already loaded at start-up (``codecs``,
``io``, ``os``, ``sys``) and ``errno``: every console script imports it before
it knows whether hakeeperd will answer for it (:mod:`hakeeper.cli.main`).
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import sys

TYPE_CHECKING = False  # typing itself is not imported: it costs a fast command a third of its start-up
if TYPE_CHECKING:
    from typing import Any, TextIO


#: The error handler of a console whose encoding cannot write every character (LANG=C without
#: UTF-8 mode): ``\\uXXXX`` for each (a surrogate pair above U+FFFF), so that JSON stays valid JSON
#: that reads back as the original text, and field output stays one line of the same fields.
ESCAPE_ERRORS = "hakeeper-escape"


def _escape_unencodable(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    escaped = []
    for char in exc.object[exc.start : exc.end]:
        code = ord(char)
        if code > 0xFFFF:
            code -= 0x10000
            escaped.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            escaped.append(f"\\u{code:04x}")
    return "".join(escaped), exc.end


codecs.register_error(ESCAPE_ERRORS, _escape_unencodable)


class QuietFd(io.RawIOBase):
    """A standard output file descriptor whose reader may go away.

    ``ins_list | head -1``: once the pipe is closed (EPIPE), or when the descriptor
    cannot be written at all (EBADF: ``1</dev/null``), the rest of the output is
    dropped without a word, as other Unix tools stop, and the command finishes with
    its own exit code.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self.lost = False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        try:
            return os.isatty(self._fd)
        except OSError:
            return False

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self.lost:
            return size
        try:
            return os.write(self._fd, data)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EBADF):
                raise
            self.lost = True
            return size


def _writes_everything(encoding: str) -> bool:
    try:
        "\u00e9\u2603\U0001f600".encode(encoding)
    except (UnicodeError, LookupError):
        return False
    return True


def _console_stream(fd: int, old: TextIO | None) -> io.TextIOWrapper:
    encoding = getattr(old, "encoding", None) or "utf-8"
    errors = getattr(old, "errors", None) or "strict"
    if errors == "strict" or not _writes_everything(encoding):
        errors = ESCAPE_ERRORS
    return io.TextIOWrapper(
        io.BufferedWriter(QuietFd(fd)),
        encoding=encoding,
        errors=errors,
        line_buffering=bool(getattr(old, "line_buffering", False)),
        write_through=bool(getattr(old, "write_through", False)),
    )


def console_streams() -> None:
    """Make the standard streams of a command run from a shell safe to write, whatever they are.

    A closed descriptor 0, 1 or 2 (``ins_list >&-``) is opened on /dev/null first, so
    that no file the command opens can take its number and receive its output; then
    stdout and stderr write through :class:`QuietFd` (a reader that went away is not
    an error) with :data:`ESCAPE_ERRORS` where the locale cannot encode a character
    (``LANG=C``: ``café`` prints as ``caf\\u00e9``, never a UnicodeEncodeError).
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    sys.stdout = _console_stream(1, sys.stdout)
    sys.stderr = _console_stream(2, sys.stderr)


def silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def as_shown(err: str, name: str, shown: str) -> str:
    """hakeeperd's error lines (``NAME: ...``) under the name the user typed (``hakeeper NAME: ...``).

    A syntax error's hint (``see: NAME --help``) names it the same way.
    """
    if shown == name or not err:
        return err
    prefix = f"{name}: "
    hint, shown_hint = f"(see: {name} --help)", f"(see: {shown} --help)"
    lines = []
    for line in err.splitlines(keepends=True):
        ours = line.startswith(prefix)
        lines.append(f"{shown}: {line[len(prefix) :]}".replace(hint, shown_hint) if ours else line)
    return "".join(lines)
