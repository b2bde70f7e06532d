"""Reading hakeeperd's log back: records from the file (rotated files first) or from journald, filtered by
time and resource tag, and followed as they come (``hakeeper log``).

A record concerns tag T when it was written with T (``tag=T`` in the file,
``HAKEEPER_TAG`` in the journal: every state change is) or when its message names
T as a word (a decision names its hierarchy: ``web+db: claimed by node2 ...``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from hakeeper.errors import IllegalArgument, NotFound, SystemCallFailed
from hakeeper.logs import CONTINUATION, IDENTIFIER
from hakeeper.logs.write import timestamp

HEAD = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?) (?P<process>[^\s\[]+)\[(?P<pid>\d+)\] "
    r"(?P<level>[A-Z]+) (?P<logger>[^\s:]+)(?: tag=(?P<tag>[^\s:]+))?: ?(?P<message>.*)"
)
#: What logging.basicConfig wrote (this log before hakeeper 0.x, and a guard started by hand).
OLD_HEAD = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) (?P<level>[A-Z]+) (?P<logger>[^\s:]+): ?(?P<message>.*)"
)
LEVELS = {2: "CRITICAL", 3: "ERROR", 4: "WARNING", 5: "INFO", 6: "INFO", 7: "DEBUG"}
MAX_BACKUPS = 1000
FOLLOW_POLL = 0.2
QUIET_FLUSH = 0.5  # following: a record is shown once its next one began, or after this long without more


@dataclass
class Record:
    """One record: the time (None: a line not written by hakeeper's logging, timed as the record before it),
    the tag it was written with, and its text as shown (several lines for a traceback)."""

    time: float | None
    text: str
    tag: str | None = None
    cursor: str | None = None  # journald's, where a follower goes on from

    def concerns(self, tag: str) -> bool:
        return self.tag == tag or names(self.text, tag)


def names(text: str, tag: str) -> bool:
    """Whether ``text`` names ``tag`` as a word: not inside a longer name (``web`` is not in ``web-ip``)."""
    return re.search(rf"(?<![\w.-]){re.escape(tag)}(?![\w-]|\.\w)", text) is not None


def parse_time(text: str) -> float | None:
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when.timestamp()  # a naive time is local time


def parse_lines(lines: Iterable[str]) -> Iterator[Record]:
    """Records from the file's lines: a record's continuation lines stay with it."""
    current: Record | None = None
    last_time: float | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if current is not None and line.startswith(CONTINUATION):
            current.text += "\n" + line
            continue
        if current is not None:
            yield current
        current = record_of(line, last_time)
        last_time = current.time if current.time is not None else last_time
    if current is not None:
        yield current


def record_of(line: str, last_time: float | None) -> Record:
    head = HEAD.match(line)
    if head is not None:
        when = parse_time(head["time"])
        return Record(when if when is not None else last_time, line, head["tag"])
    old = OLD_HEAD.match(line)
    if old is not None:
        when = parse_time(old["time"])
        return Record(when + int(old["ms"]) / 1000 if when is not None else last_time, line)
    return Record(last_time, line)  # printed by the interpreter itself (a crash), or by a script


def log_files(path: str) -> list[str]:
    """The log and its rotated files, oldest first: ``path.N`` ... ``path.1``, ``path``."""
    rotated = []
    for number in range(1, MAX_BACKUPS + 1):
        candidate = f"{path}.{number}"
        if not os.path.exists(candidate):
            break
        rotated.append(candidate)
    return [*reversed(rotated), *([path] if os.path.exists(path) else [])]


def read_files(files: Iterable[str]) -> Iterator[Record]:
    def lines() -> Iterator[str]:
        for name in files:
            try:
                with open(name, encoding="utf-8", errors="replace") as file:
                    yield from file
            except FileNotFoundError:  # rotated away while we read: its records are in the next one
                continue

    return parse_lines(lines())


@dataclass(frozen=True)
class Filter:
    since: float | None = None
    tag: str | None = None

    def __call__(self, record: Record) -> bool:
        if self.since is not None and (record.time is None or record.time < self.since):
            return False
        return self.tag is None or record.concerns(self.tag)


def last(records: Iterable[Record], keep: Filter, count: int | None) -> list[Record]:
    """The records ``keep`` accepts, the last ``count`` of them (None: all)."""
    chosen: Iterable[Record] = (r for r in records if keep(r))
    return list(deque(chosen, maxlen=count)) if count is not None else list(chosen)


def follow_file(
    path: str, keep: Filter, show: Callable[[Record], None], stop: Callable[[], bool], *, poll: float = FOLLOW_POLL
) -> None:
    """Show the records appended to ``path`` from now on, across rotations, until ``stop()``."""
    file = _open_at_end(path)
    buffer = ""
    pending: list[str] = []
    quiet_since = time.monotonic()
    last_time: list[float | None] = [None]

    def flush() -> None:
        for record in parse_lines(pending):
            record.time = record.time if record.time is not None else last_time[0]
            last_time[0] = record.time
            if keep(record):
                show(record)
        pending.clear()

    try:
        while not stop():
            chunk = file.read() if file is not None else ""
            if chunk:
                buffer += chunk
                *complete, buffer = buffer.split("\n")
                for line in complete:
                    if pending and not line.startswith(CONTINUATION):
                        flush()  # the next record began: the one before is whole
                    pending.append(line)
                quiet_since = time.monotonic()
                continue
            if pending and time.monotonic() - quiet_since >= QUIET_FLUSH:
                flush()
            if _rotated(file, path):
                rest = file.read() if file is not None else ""
                if rest:
                    buffer += rest
                    continue
                if file is not None:
                    file.close()
                file = _open(path)
                continue
            time.sleep(poll)
    finally:
        flush()
        if file is not None:
            file.close()


def _open(path: str) -> TextIO | None:
    try:
        return open(path, encoding="utf-8", errors="replace")  # closed by follow_file
    except FileNotFoundError:
        return None


def _open_at_end(path: str) -> TextIO | None:
    file = _open(path)
    if file is not None:
        file.seek(0, os.SEEK_END)
    return file


def _rotated(file: TextIO | None, path: str) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    if file is None:
        return True
    mine = os.fstat(file.fileno())
    return (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino)


# ---------------------------------------------------------------------- journald


def journal_record(entry: dict[str, Any]) -> Record:
    """A record of ``journalctl -o json``, shown as the file shows it."""
    micros = int(entry.get("__REALTIME_TIMESTAMP", 0))
    when = micros / 1e6
    message = _text(entry.get("MESSAGE", ""))
    tag = _text(entry.get("HAKEEPER_TAG", "")) or None
    try:
        level = LEVELS.get(int(_text(entry.get("PRIORITY", "6"))), "INFO")
    except ValueError:
        level = "INFO"
    process = _text(entry.get("SYSLOG_IDENTIFIER", IDENTIFIER))
    pid = _text(entry.get("_PID") or entry.get("SYSLOG_PID") or "0")
    logger = _text(entry.get("HAKEEPER_LOGGER", "-"))
    head = f"{timestamp(when)} {process}[{pid}] {level} {logger}" + (f" tag={tag}" if tag else "")
    text = f"{head}: " + ("\n" + CONTINUATION).join(message.split("\n"))
    cursor = entry.get("__CURSOR")
    return Record(when, text, tag, cursor if isinstance(cursor, str) else None)


def _text(value: Any) -> str:
    if isinstance(value, list):  # journalctl writes a value that is not UTF-8 as its bytes
        try:
            return bytes(value).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def journalctl_argv(since: float | None, follow: bool, after: str | None = None) -> list[str]:
    """``journalctl``'s command line: hakeeperd's entries as JSON, from ``since`` (or after the ``after`` cursor)."""
    argv = ["journalctl", "--no-pager", "-o", "json", f"SYSLOG_IDENTIFIER={IDENTIFIER}"]
    if after is not None:
        argv.append(f"--after-cursor={after}")
    elif since is not None:
        argv.append(f"--since=@{int(since)}")
    if follow:
        argv += ["-f", "-n", "all"]  # the filter and -n are ours: journalctl's -n would count before the tag filter
    return argv


def journal_records(lines: Iterable[str]) -> Iterator[Record]:
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield journal_record(entry)


def read_journal(since: float | None, *, timeout: float = 120.0) -> Iterator[Record]:
    """hakeeperd's records in journald (``journalctl``), oldest first."""
    if shutil.which("journalctl") is None:
        raise NotFound("journalctl is not installed: hakeeperd's journal cannot be read here")
    try:
        done = subprocess.run(journalctl_argv(since, False), capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise SystemCallFailed(f"journalctl did not answer within {timeout:g} s") from None
    if done.returncode != 0 and not done.stdout:
        said = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise SystemCallFailed(f"journalctl failed: {said[0]}")
    return journal_records(done.stdout.splitlines())


def follow_journal(after: str | None, keep: Filter, show: Callable[[Record], None], stop: Callable[[], bool]) -> None:
    """Show hakeeperd's records as journald gets them, after the entry of cursor ``after`` (None: from now),
    until ``stop()`` (checked as each record comes)."""
    argv = journalctl_argv(time.time() if after is None else None, True, after)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for record in journal_records(proc.stdout):
            if keep(record):
                show(record)
            if stop():
                break
    finally:
        if proc.poll() is None:
            proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------- --since

UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
SINCE_FORMS = "'10 min ago', '2h', 'today', 'yesterday', '22:00' or an ISO time such as 2026-12-03T22:00"


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: the time as seconds since the epoch. ``N UNIT [ago]`` (s, min, h, d), ``today``,
    ``yesterday``, ``HH:MM[:SS]`` (today), or an ISO 8601 time (without an offset: local time)."""
    now = time.time() if now is None else now
    words = text.strip().lower()
    if words in ("now",):
        return now
    if words in ("today", "yesterday"):
        midnight = dt.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - dt.timedelta(days=1 if words == "yesterday" else 0)).timestamp()
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]+)(?:\s+ago)?", words)
    if relative and relative[2] in UNITS:
        return now - float(relative[1]) * UNITS[relative[2]]
    clock = re.fullmatch(r"(\d{1,2}):(\d\d)(?::(\d\d))?", words)
    if clock:
        hour, minute, second = int(clock[1]), int(clock[2]), int(clock[3] or 0)
        if hour < 24 and minute < 60 and second < 60:
            today = dt.datetime.fromtimestamp(now)
            return today.replace(hour=hour, minute=minute, second=second, microsecond=0).timestamp()
    absolute = parse_time(text.strip())
    if absolute is not None:
        return absolute
    raise IllegalArgument(f"--since {text!r} is not a time: write {SINCE_FORMS}")
