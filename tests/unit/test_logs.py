"""hakeeperd's log: one record a line (a traceback kept with its record), rotation shared by the processes
that write the file, journald's native protocol and syslog against sockets the tests own, and reading
back by time and tag (``hakeeper log``)."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hakeeper.cli.base import run
from hakeeper.logs import SETUP_ENV
from hakeeper.logs.journal import JournalHandler, decode, stderr_is_journal
from hakeeper.logs.read import (
    Filter,
    Record,
    follow_file,
    journal_records,
    last,
    log_files,
    names,
    parse_lines,
    parse_since,
    read_files,
)
from hakeeper.logs.write import OneLineFormatter, SharedRotatingFileHandler, configure, configure_child, handler_for


def record(
    message: str, *args: object, level: int = logging.INFO, tag: str | None = None, **extra: object
) -> logging.LogRecord:
    rec = logging.LogRecord("hakeeper.test", level, __file__, 42, message, args, None, func="here")
    if tag is not None:
        rec.tag = tag
    rec.__dict__.update(extra)
    return rec


def failing() -> logging.LogRecord:
    try:
        raise RuntimeError("boom\n2026-01-01T00:00:00.000+00:00 hakeeperd[1] INFO x tag=web: forged")
    except RuntimeError:
        rec = record("the monitor failed")
        rec.exc_info = sys.exc_info()
        rec.levelno, rec.levelname = logging.ERROR, "ERROR"
        return rec


# ---------------------------------------------------------------------- the file's format


def test_a_record_is_one_line_with_its_time_process_logger_and_tag() -> None:
    line = OneLineFormatter("hakeeperd").format(record("%s OSU -> ISP (%s)", "web", "restore", tag="web"))
    stamp, rest = line.split(" ", 1)
    assert rest == f"hakeeperd[{os.getpid()}] INFO hakeeper.test tag=web: web OSU -> ISP (restore)"
    assert stamp[10] == "T" and stamp[19] == "." and stamp[-6] in "+-"  # 2026-12-03T22:03:27.123+00:00


def test_a_traceback_stays_with_its_record_and_cannot_forge_another() -> None:
    text = OneLineFormatter().format(failing())
    lines = text.split("\n")
    assert len(lines) > 3 and all(line.startswith("  | ") for line in lines[1:])
    assert any("forged" in line for line in lines)
    records = list(parse_lines([*lines, OneLineFormatter().format(record("next"))]))
    assert len(records) == 2
    assert records[0].text == text and records[0].tag is None  # the forged "tag=web" is text, not a record


@pytest.mark.parametrize(
    ("text", "tag", "expected"),
    [
        ("web OSU -> ISP (restore)", "web", True),
        ("web-ip OSU -> ISP (restore)", "web", False),
        ("web+db: claimed by node2 under epoch 3", "db", True),
        ("restore of web.", "web", True),
        ("restore of web.example.com", "web", False),
        ("webserver up", "web", False),
        ("(web) up", "web", True),
    ],
)
def test_a_record_names_a_tag_only_as_a_whole_word(text: str, tag: str, expected: bool) -> None:
    assert names(text, tag) is expected


# ---------------------------------------------------------------------- rotation


def write(handler: logging.Handler, count: int, what: str = "record") -> None:
    for number in range(count):
        handler.handle(record("%s %03d %s", what, number, "x" * 40))


def test_the_file_rotates_at_its_size_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "hakeeperd.log"
    handler = SharedRotatingFileHandler(str(path), max_bytes=1000, backups=2)
    handler.setFormatter(OneLineFormatter())
    try:
        write(handler, 60)
    finally:
        handler.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hakeeperd.log", "hakeeperd.log.1", "hakeeperd.log.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    kept = [r.text.split()[-2] for r in read_files(log_files(str(path)))]
    assert kept == sorted(kept) and kept[-1] == "059"  # oldest first, the newest last, none twice
    assert oct(path.stat().st_mode & 0o777) == "0o640"


def test_processes_writing_one_file_rotate_it_together_and_lose_no_record(tmp_path: Path) -> None:
    """hakeeperd, the guard and the heartbeat process each have a handler on the same file."""
    path = str(tmp_path / "hakeeperd.log")
    handlers = [SharedRotatingFileHandler(path, max_bytes=4000, backups=50) for _ in range(3)]
    for h in handlers:
        h.setFormatter(OneLineFormatter())
    try:
        for round_ in range(40):
            for number, h in enumerate(handlers):
                h.handle(record("writer %d round %03d %s", number, round_, "y" * 30))
    finally:
        for h in handlers:
            h.close()
    texts = [r.text for r in read_files(log_files(path))]
    assert len(texts) == 120
    assert [t.split()[-2] for t in texts] == [f"{r:03d}" for r in range(40) for _ in range(3)]
    assert 3 < len(log_files(path)) < 50


def test_a_writer_that_holds_the_rotation_lock_stopped_costs_a_rotation_not_a_record(tmp_path: Path) -> None:
    """A process frozen while rotating (SIGSTOP) must not stop the guard from logging."""
    import fcntl

    path = tmp_path / "hakeeperd.log"
    handler = SharedRotatingFileHandler(str(path), max_bytes=500, backups=2)
    handler.setFormatter(OneLineFormatter())
    holder = os.open(path, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        write(handler, 30)
        assert not (tmp_path / "hakeeperd.log.1").exists()
        assert len(list(read_files([str(path)]))) == 30
    finally:
        os.close(holder)
    write(handler, 1, "after")
    handler.close()
    assert (tmp_path / "hakeeperd.log.1").exists()


# ---------------------------------------------------------------------- journald and syslog


@pytest.fixture
def datagrams(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket this test owns, standing for journald's or syslog's."""
    path = str(tmp_path / "log.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield path, sock
    finally:
        sock.close()


def test_journald_gets_each_record_with_its_priority_identifier_tag_and_code_fields(
    datagrams: tuple[str, socket.socket],
) -> None:
    path, sock = datagrams
    handler = handler_for({"target": "journal", "journal_socket": path})
    try:
        handler.handle(record("%s OSU -> ISP (%s)", "web", "restore", level=logging.WARNING, tag="web"))
        handler.handle(failing())
    finally:
        handler.close()
    first = dict(decode(sock.recv(1 << 16)))
    assert first["MESSAGE"] == "web OSU -> ISP (restore)"
    assert (first["PRIORITY"], first["SYSLOG_IDENTIFIER"], first["HAKEEPER_TAG"]) == ("4", "hakeeperd", "web")
    assert (first["CODE_FILE"], first["CODE_LINE"], first["CODE_FUNC"]) == (__file__, "42", "here")
    assert first["SYSLOG_PID"] == str(os.getpid())
    second = dict(decode(sock.recv(1 << 16)))
    assert second["PRIORITY"] == "3" and "HAKEEPER_TAG" not in second
    assert second["MESSAGE"].startswith("the monitor failed\nTraceback")  # one entry, newlines and all
    assert "RuntimeError: boom" in second["MESSAGE"]


def test_without_journald_a_record_goes_to_stderr_with_its_priority_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handler = JournalHandler(str(tmp_path / "no-journal.sock"))
    try:
        handler.handle(record("line one\nline two", level=logging.ERROR))
    finally:
        handler.close()
    assert capsys.readouterr().err == "<3>line one\n<3>line two\n"


def test_a_journald_that_does_not_read_never_makes_a_process_wait(
    datagrams: tuple[str, socket.socket], capsys: pytest.CaptureFixture[str]
) -> None:
    """The heartbeat process logs through this handler: a full queue sends records to stderr instead."""
    path, _ = datagrams  # never read: its queue fills
    handler = JournalHandler(path)

    def flood() -> None:
        for number in range(5000):  # far more than a socket's queue holds
            handler.handle(record("record %d %s", number, "x" * 200))

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    thread.join(60)  # bounded: a handler that waits fails here (the socket's close at teardown frees it)
    assert not thread.is_alive(), "the handler waited for journald"
    handler.close()
    err = capsys.readouterr().err
    assert err.endswith("<6>record 4999 " + "x" * 200 + "\n")


def test_syslog_gets_one_line_a_record_as_the_daemon_facility(datagrams: tuple[str, socket.socket]) -> None:
    path, sock = datagrams
    handler = handler_for({"target": "syslog", "syslog_socket": path})
    try:
        handler.handle(failing())
    finally:
        handler.close()
    data = sock.recv(1 << 16).decode()
    assert data.startswith(f"<27>hakeeperd[{os.getpid()}]: hakeeperd[{os.getpid()}] ERROR hakeeper.test: ")  # 3*8+3
    assert "\n" not in data.rstrip("\x00") and " | Traceback" in data


def test_auto_means_the_journal_only_when_stderr_is_the_journal_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert stderr_is_journal()
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")  # inherited, stderr sent elsewhere
    assert not stderr_is_journal()
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not stderr_is_journal()


def test_auto_by_hand_logs_on_stderr_one_record_a_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    handler = handler_for({"target": "auto"}, "hakeeperd")  # not under systemd (lkstart asks for the file)
    handler.handle(failing())
    err = capsys.readouterr().err
    assert err.startswith(f"hakeeperd[{os.getpid()}] ERROR hakeeper.test: the monitor failed\n  | Traceback", 30)


def test_the_guard_and_heartbeat_log_where_hakeeperd_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hakeeperd.log"
    settings = {"target": "file", "file": str(path), "level": "INFO", "max_bytes": 0, "backups": 1}
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setenv(SETUP_ENV, "")  # configure() sets it: restored (unset) after the test
    try:
        configure(settings, "hakeeperd")
        assert json.loads(os.environ[SETUP_ENV]) == settings  # what its children inherit
        configure_child("hakeeper-guard")
        logging.getLogger("hakeeper.guard").error("guard: hakeeperd (pid %d) is silent: killing it", 7)
        logging.getLogger("hakeeper.guard").debug("not at INFO")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:], root.level = saved
    (only,) = read_files([str(path)])
    assert f"hakeeper-guard[{os.getpid()}] ERROR hakeeper.guard: guard: hakeeperd (pid 7) is silent" in only.text


# ---------------------------------------------------------------------- reading back


NOW = time.mktime((2026, 12, 3, 22, 0, 0, 0, 0, -1))


@pytest.mark.parametrize(
    ("text", "ago"),
    [("10 min ago", 600), ("10min", 600), ("2h", 7200), ("1 day ago", 86400), ("30 seconds ago", 30), ("now", 0)],
)
def test_since_takes_a_time_ago(text: str, ago: float) -> None:
    assert parse_since(text, NOW) == NOW - ago


def test_since_takes_clock_times_days_and_iso_times() -> None:
    assert parse_since("21:30", NOW) == NOW - 1800
    assert parse_since("today", NOW) == NOW - 22 * 3600
    assert parse_since("yesterday", NOW) == NOW - 46 * 3600
    assert parse_since("2026-12-03T21:00", NOW) == NOW - 3600
    assert parse_since("2026-12-03T21:00:00+00:00") == 1796331600
    with pytest.raises(Exception, match="is not a time: write '10 min ago'"):
        parse_since("a while ago", NOW)


LOG = """\
2026-12-03T21:00:00.000+00:00 hakeeperd[10] INFO hakeeper.daemon: hakeeperd serving node node1
2026-12-03T21:10:00.000+00:00 hakeeperd[10] INFO hakeeper.db.store tag=web: web OSU -> ISP (restore)
2026-12-03T21:20:00.000+00:00 hakeeperd[10] ERROR hakeeper.events.monitor: quickCheck of web-ip failed
  | Traceback (most recent call last):
  |   File "x.py", line 1, in <module>
  | RuntimeError: web is fine
2026-12-03T21:30:00.000+00:00 hakeeper-guard[11] WARNING hakeeper.guard: guard: out of service: web
Fatal Python error: printed by the interpreter, not by logging
2026-12-03T21:40:00.000+00:00 hakeeperd[10] INFO hakeeper.db.store tag=web-ip: web-ip ISP -> OSU (lkstop)
"""


def test_records_are_read_across_rotated_files_and_filtered_by_time_and_tag(tmp_path: Path) -> None:
    lines = LOG.splitlines(keepends=True)
    (tmp_path / "hakeeperd.log.2").write_text("".join(lines[:2]))
    (tmp_path / "hakeeperd.log.1").write_text("".join(lines[2:7]))
    (tmp_path / "hakeeperd.log").write_text("".join(lines[7:]))
    files = log_files(str(tmp_path / "hakeeperd.log"))
    assert [Path(f).name for f in files] == ["hakeeperd.log.2", "hakeeperd.log.1", "hakeeperd.log"]
    records = list(read_files(files))
    assert len(records) == 6 and records[2].text.count("\n") == 3  # the traceback is one record
    shown = [r.text.split(": ", 1)[1].split("\n")[0] for r in last(records, Filter(tag="web"), None)]
    assert shown == ["web OSU -> ISP (restore)", "quickCheck of web-ip failed", "guard: out of service: web"]
    since = parse_since("2026-12-03T21:25:00+00:00")
    assert [r.tag for r in last(records, Filter(since=since), None)] == [None, None, "web-ip"]
    assert [r.tag for r in last(records, Filter(tag="web-ip"), 1)] == ["web-ip"]


def test_hakeeper_log_reads_the_configured_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "hakeeperd.log").write_text(LOG)
    config = tmp_path / "hakeeper.toml"
    config.write_text('[log]\ntarget = "file"\n')
    monkeypatch.setenv("HAKEEPER_CONFIG", str(config))
    out, err = io.StringIO(), io.StringIO()
    code = run("log", ["--tag", "web", "-n", "2", "--since", "2026-12-03T21:05:00+00:00"], root=str(state), out=out,
               err=err)  # fmt: skip
    assert (code, err.getvalue()) == (0, "")
    assert out.getvalue().splitlines()[0].endswith("hakeeper.events.monitor: quickCheck of web-ip failed")
    assert out.getvalue().splitlines()[-1].endswith("guard: out of service: web")


def test_journalctl_records_are_shown_as_the_file_shows_them() -> None:
    entries = [
        {"__REALTIME_TIMESTAMP": "1796331600000000", "MESSAGE": "web OSU -> ISP (restore)", "PRIORITY": "6",
         "SYSLOG_IDENTIFIER": "hakeeperd", "_PID": "10", "HAKEEPER_LOGGER": "hakeeper.db.store", "HAKEEPER_TAG": "web"},
        {"__REALTIME_TIMESTAMP": "1796331601000000", "MESSAGE": [104, 105, 10, 255], "PRIORITY": "3",
         "SYSLOG_IDENTIFIER": "hakeeperd", "_PID": "11"},
    ]  # fmt: skip
    records = list(journal_records([json.dumps(e) for e in entries] + ["", "not json"]))
    assert [r.tag for r in records] == ["web", None]
    assert records[0].text.endswith(" hakeeperd[10] INFO hakeeper.db.store tag=web: web OSU -> ISP (restore)")
    assert records[1].text.endswith(" hakeeperd[11] ERROR -: hi\n  | \ufffd")
    assert records[0].time == 1796331600.0


def test_following_shows_new_records_across_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "hakeeperd.log"
    handler = SharedRotatingFileHandler(str(path), max_bytes=600, backups=3)
    handler.setFormatter(OneLineFormatter())
    write(handler, 3, "before")  # history: not followed
    seen: list[Record] = []
    wanted = 20
    deadline = time.monotonic() + 30  # bounded: the test fails by its assertion, never hangs

    def writer() -> None:
        time.sleep(0.3)
        for number in range(wanted):
            handler.handle(record("after %03d %s", number, "z" * 40, tag="web" if number % 2 else None))
            time.sleep(0.01)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        follow_file(str(path), Filter(tag="web"), seen.append,
                    lambda: len(seen) >= wanted // 2 or time.monotonic() > deadline, poll=0.02)  # fmt: skip
    finally:
        thread.join(30)
        handler.close()
    assert len(log_files(str(path))) > 1  # it did rotate under the follower
    assert [r.text.split()[-2] for r in seen] == [f"{n:03d}" for n in range(1, wanted, 2)]


def test_hakeeper_log_reads_journald_through_journalctl_and_follows_after_what_it_showed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A journalctl of the test's own: what it is asked, and its JSON read back, filtered by tag."""
    entries = [
        {"__CURSOR": "c1", "__REALTIME_TIMESTAMP": "1796331600000000", "MESSAGE": "web OSU -> ISP (restore)",
         "PRIORITY": "6", "SYSLOG_IDENTIFIER": "hakeeperd", "_PID": "10", "HAKEEPER_TAG": "web"},
        {"__CURSOR": "c2", "__REALTIME_TIMESTAMP": "1796331601000000", "MESSAGE": "db OSU -> ISP (restore)",
         "PRIORITY": "6", "SYSLOG_IDENTIFIER": "hakeeperd", "_PID": "10", "HAKEEPER_TAG": "db"},
    ]  # fmt: skip
    later = {"__CURSOR": "c3", "__REALTIME_TIMESTAMP": "1796331602000000", "MESSAGE": "web ISP -> OSU (remove)",
             "PRIORITY": "6", "SYSLOG_IDENTIFIER": "hakeeperd", "_PID": "10", "HAKEEPER_TAG": "web"}  # fmt: skip
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "history.json").write_text("".join(json.dumps(e) + "\n" for e in entries))
    (tmp_path / "later.json").write_text(json.dumps(later) + "\n")
    journalctl = bin_dir / "journalctl"
    journalctl.write_text(
        f'#!/bin/sh\necho "$*" >> {tmp_path}/asked\n'
        f'case "$*" in *" -f "*) cat {tmp_path}/later.json ;; *) cat {tmp_path}/history.json ;; esac\n'
    )  # following: one more entry, then the end of its output (bounded)
    journalctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "hakeeper.toml"
    config.write_text('[log]\ntarget = "journal"\n')
    monkeypatch.setenv("HAKEEPER_CONFIG", str(config))
    out, err = io.StringIO(), io.StringIO()
    code = run("log", ["--tag", "web", "-f", "--since", "2026-12-03T20:00:00+00:00"], root=str(tmp_path), out=out,
               err=err)  # fmt: skip
    assert (code, err.getvalue()) == (0, "")
    assert [line.split(": ", 1)[1] for line in out.getvalue().splitlines()] == [
        "web OSU -> ISP (restore)", "web ISP -> OSU (remove)",
    ]  # fmt: skip
    asked = (tmp_path / "asked").read_text().splitlines()
    assert asked == [
        "--no-pager -o json SYSLOG_IDENTIFIER=hakeeperd --since=@1796328000",
        "--no-pager -o json SYSLOG_IDENTIFIER=hakeeperd --after-cursor=c2 -f -n all",  # after the last one read
    ]
