"""Commands that start fast: what a console script loads before hakeeperd answers it, and the wire it speaks.

A command answered by hakeeperd imports only :mod:`hakeeper.wire` and
:mod:`hakeeper.cli.console` (the C halves of socket and json); its request and
the daemon's answer are byte for byte what the json module writes, so either
side may be read by the other.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hakeeper.cli.base import load_all
from hakeeper.cli.main import CLIENT_STEP, LOCAL, front
from hakeeper.control import Answer, decode_answer
from hakeeper.errors import CommunicationFailed
from hakeeper.layout import SOCKET_NAME
from hakeeper.wire import answer_line, read_answer, request, root_of

# Everything, including lone surrogates (an argument the locale could not decode arrives as one).
TEXT = st.text(st.characters(blacklist_categories=()))


@given(st.text(), st.lists(TEXT))
def test_a_request_is_what_json_writes(command: str, argv: list[str]) -> None:
    assert request(command, argv) == json.dumps({"command": command, "argv": argv}).encode() + b"\n"


@given(st.integers(-(2**40), 2**40), TEXT, TEXT)
def test_an_answer_is_what_json_writes_and_reads_back(code: int, out: str, err: str) -> None:
    line = answer_line(code, out, err)
    assert line == json.dumps({"code": code, "out": out, "err": err}).encode() + b"\n"
    assert read_answer(line) == (code, out, err)


@pytest.mark.parametrize(
    "line, expected",
    [
        (b'{"err": "e\\n", "code": 3}\n', (3, "", "e\n")),  # another order: read by json
        (b'{"code": 0, "out": "x", "err": "", "extra": 1}\n', (0, "x", "")),
        (b'{ "code" : 5 , "out" : "a" , "err" : "b" }', (5, "a", "b")),
    ],
)
def test_an_answer_of_another_shape_is_read_by_json(line: bytes, expected: tuple[int, str, str]) -> None:
    assert read_answer(line) == expected


@pytest.mark.parametrize(
    "line",
    [b"", b"\n", b"[1, 2]\n", b'{"out": "x"}\n', b'{"code": "x"}\n', b'{"code": 1, "out": "\xff"}\n', b"{", b"nul"],
)
def test_a_malformed_answer_is_an_error_not_a_guess(line: bytes) -> None:
    with pytest.raises(ValueError):
        read_answer(line)
    with pytest.raises(CommunicationFailed):
        decode_answer(line)


def test_the_daemons_answer_is_read_by_the_full_client_too() -> None:
    assert decode_answer(Answer(7, "é\x01", "ins_list: x\n").encode()) == Answer(7, "é\x01", "ins_list: x\n")


def test_the_local_commands_are_the_ones_hakeeperd_never_runs() -> None:
    assert {name for name, cmd in load_all().items() if cmd.local} == LOCAL


def test_the_commands_with_a_step_where_they_are_typed_take_the_full_path() -> None:
    assert {name for name, cmd in load_all().items() if cmd.client is not None} == CLIENT_STEP


@pytest.mark.parametrize(
    "argv, given, env, expected",
    [
        ([], None, "/srv/a", "/srv/a"),
        ([], "/srv/b", "/srv/a", "/srv/b"),
        (["-t", "web"], None, None, "/var/lib/hakeeper"),
        (["--root", "/srv/c"], None, "/srv/a", None),  # the command's own parser decides
        (["--root=/srv/c"], None, None, None),
        ([], None, "", None),  # an empty value is refused by the full command
        ([], "", "/srv/a", None),
    ],
)
def test_which_state_directory_the_fast_path_asks(  # noqa: PLR0917 - pytest's parameters
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    argv: list[str],
    given: str | None,
    env: str | None,
    expected: str | None,
) -> None:
    (tmp_path / "empty.toml").write_text("")  # a configuration file that names no state_dir (see test_config)
    monkeypatch.setenv("HAKEEPER_CONFIG", str(tmp_path / "empty.toml"))
    if env is None:
        monkeypatch.delenv("HAKEEPER_ROOT", raising=False)
    else:
        monkeypatch.setenv("HAKEEPER_ROOT", env)
    assert root_of(argv, given) == expected


HEAVY = ("typing", "dataclasses", "logging", "argparse", "sqlite3", "json", "socket", "re", "enum", "hakeeper.db")


def test_a_console_script_imports_nothing_heavy_before_the_daemon_answers(tmp_path: Path) -> None:
    """Importing the console scripts' module loads no module the fast path does not need."""
    code = f"import sys; import hakeeper.cli.main; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == []


class FakeDaemon:
    """A control socket that answers every request with ``reply`` (bytes) and records what it got."""

    def __init__(self, root: Path, reply: bytes | None) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(root / SOCKET_NAME))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for _ in range(8):  # bounded: a test sends a few requests
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                while not data.endswith(b"\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                if self.reply is not None:
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def daemon_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "state"
    root.mkdir()
    yield root


def test_the_daemons_answer_is_printed_under_the_name_the_user_typed(
    daemon_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = FakeDaemon(daemon_root, answer_line(4, "out\n", "ins_create: a resource tagged 'x' exists already\n"))
    try:
        code = front("ins_create", ["-t", "x"], prog="hakeeper ins_create", root=str(daemon_root))
    finally:
        daemon.close()
    assert code == 4
    assert capsys.readouterr() == ("out\n", "hakeeper ins_create: a resource tagged 'x' exists already\n")
    assert daemon.requests == [request("ins_create", ["-t", "x"])]


@pytest.mark.parametrize("reply", [b"garbage\n", b""], ids=["malformed answer", "no answer"])
def test_a_daemon_that_took_the_command_but_failed_is_an_error_and_the_command_is_not_run_again(
    daemon_root: Path, capsys: pytest.CaptureFixture[str], reply: bytes
) -> None:
    """The command may have run in the daemon: running it again here could do it twice."""
    daemon = FakeDaemon(daemon_root, reply)
    try:
        code = front("ins_create", ["-a", "gen", "-r", "app", "-t", "x", "-i", "x"], prog="ins_create",
                     root=str(daemon_root))  # fmt: skip
    finally:
        daemon.close()
    assert code == CommunicationFailed.exit_code
    err = capsys.readouterr().err
    assert err.startswith("ins_create: hakeeperd ") and err.count("\n") == 1
    assert len(daemon.requests) == 1
    assert not (daemon_root / "lcd.sqlite").exists()  # nothing ran here


@pytest.mark.parametrize("argv", [["--help"], ["-t", "x", "-h"]])
def test_help_is_answered_here(daemon_root: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    daemon = FakeDaemon(daemon_root, answer_line(0, "from the daemon\n", ""))
    try:
        code = front("ins_list", argv, prog="ins_list", root=str(daemon_root))
    finally:
        daemon.close()
    assert code == 0
    assert capsys.readouterr().out.startswith("usage: ins_list")
    assert daemon.requests == []
