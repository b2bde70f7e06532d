"""The LCD's file: damage is refused and kept, reads need no write access, backup / restore / check.

Safety rule 3 (docs: DESIGN.md): a damaged LCD is refused and kept, never
silently replaced by an empty one. Only a missing file is a new LCD.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from hakeeper.cli.main import run
from hakeeper.db import Lcd
from hakeeper.errors import LcdDamaged, SystemCallFailed
from tests.conftest import Cli, Result
from tests.unit.test_cli_errors import assert_one_line, lcd_dump, script, stop_daemon

OK, SYSCALL, SYNTAX, INTERNAL, EXISTS, ILLEGAL, RANGE, MISSING = range(8)
PAGE = 4096

SETUP: tuple[tuple[str, ...], ...] = (
    ("app_create", "-a", "gen"),
    ("typ_create", "-a", "gen", "-r", "app"),
    ("sys_create", "-s", "node2"),
    ("ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-id"),
    ("ins_create", "-a", "gen", "-r", "app", "-t", "db", "-i", "db-id"),
    ("dep_create", "-p", "web", "-c", "db"),
    ("eqv_create", "-t", "web", "-S", "node2"),
    ("flg_create", "-f", "maint"),
)


@pytest.fixture
def state(cli: Cli, root: Path) -> Iterator[Path]:
    """A state directory of node1 with a small hierarchy (web -> db), extended to node2."""
    for name, *argv in SETUP:
        assert cli(name, *argv) == Result(OK, "", ""), (name, argv)
    yield root
    stop_daemon(root)


def invoke(root: Path, name: str, *argv: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = run(name, list(argv), prog=f"hakeeper {name}", root=str(root), out=out, err=err)
    return Result(code, out.getvalue(), err.getvalue())


def listing(root: Path) -> dict[str, str]:
    """Every file of the state directory and a digest of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir" for p in root.iterdir()}


def lcd_of(root: Path) -> Path:
    return root / "lcd.sqlite"


# ---------------------------------------------------------------------- damage


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _page_aligned(path: Path) -> None:  # what an interrupted cp leaves: whole pages, too few
    os.truncate(path, 3 * PAGE)


def _mid_page(path: Path) -> None:
    os.truncate(path, 3 * PAGE + 123)


def _header_only(path: Path) -> None:
    os.truncate(path, 60)


def _text(path: Path) -> None:  # a configuration file copied over it
    path.write_text("name=web\nstate=ISP\n" * 512)


def _zeros(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _log_without_its_file(path: Path) -> None:
    (path.parent / "lcd.sqlite-wal").write_bytes(b"\x37\x7f\x06\x82" + bytes(PAGE))
    path.unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty": (_empty, "empty: 0 bytes"),
    "truncated at a page": (_page_aligned, "malformed"),
    "truncated in a page": (_mid_page, "not a whole number"),
    "truncated in the header": (_header_only, "too short"),
    "text": (_text, "not an SQLite database"),
    "zeros": (_zeros, "not an SQLite database"),
    "a directory": (_directory, "not a regular file"),
    "missing, with its log": (_log_without_its_file, "write-ahead log"),
}

#: Reads and writes, the LCDI and hakeeper's own: every one refuses the damaged file.
COMMANDS: list[tuple[str, ...]] = [
    ("ins_list",),
    ("lcdstatus", "-e"),
    ("changes",),
    ("flg_list",),
    ("flg_create", "-f", "new"),
    ("ins_create", "-a", "gen", "-r", "app", "-t", "new", "-i", "new-id"),
    ("dep_remove", "-p", "web", "-c", "db"),
]


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_lcd_is_refused_by_every_command_and_kept(
    kind: str, state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    damage, what = DAMAGE[kind]
    damage(lcd_of(state))
    before = listing(state)
    for name, *argv in COMMANDS:
        result = invoke(state, name, *argv)
        assert result.code == SYSCALL, (name, result)
        assert_one_line(result.err, f"hakeeper {name}: ")
        assert result.out == ""
        assert str(lcd_of(state)) in result.err and what in result.err, result.err
        assert "damaged" in result.err and "hakeeper lcd restore FILE" in result.err, result.err
        assert listing(state) == before, f"{name} changed the state directory"
    assert not (tmp_path / "never-written.sqlite").exists()


def test_a_zero_byte_lcd_does_not_read_as_a_new_cluster(state: Path) -> None:
    """The issue's case: after truncate -s 0, 'changes' showed a fresh initialisation and exit 0."""
    _empty(lcd_of(state))
    result = invoke(state, "changes")
    assert result.code == SYSCALL
    assert "init_node" not in result.out
    assert lcd_of(state).stat().st_size == 0


@pytest.mark.parametrize("kind", ["empty", "truncated at a page", "text"])
def test_hakeeperd_and_lkstart_refuse_a_damaged_lcd(kind: str, state: Path) -> None:
    DAMAGE[kind][0](lcd_of(state))
    before = listing(state)
    started = script("lkstart", state_dir=state)
    assert started.code == SYSCALL, started
    assert_one_line(started.err, "lkstart: ")
    assert "damaged" in started.err
    daemon = script("hakeeperd", "--root", str(state))
    assert daemon.code == SYSCALL, daemon
    assert "damaged" in daemon.err and "Traceback" not in daemon.err
    assert not (state / "hakeeperd.sock").exists()
    assert {k: v for k, v in listing(state).items() if k != "hakeeperd.pid"} == before


def _corrupt_the_flags_table(path: Path) -> None:
    """Garbage over the page of one table: the header is fine, SQLite finds it when it reads there."""
    with closing(sqlite3.connect(path)) as db:
        pages = [row[0] for row in db.execute("SELECT rootpage FROM sqlite_master WHERE tbl_name = 'flags'")]
    with open(path, "r+b") as file:
        for page in pages:  # the table and its index (flg_list reads only the index)
            file.seek((page - 1) * PAGE)
            file.write(b"\xa5" * PAGE)


def test_hakeeperd_runs_a_quick_check_when_it_starts(state: Path) -> None:
    _corrupt_the_flags_table(lcd_of(state))
    before = listing(state)
    daemon = script("hakeeperd", "--root", str(state))
    assert daemon.code == SYSCALL, daemon
    assert "damaged (quick_check" in daemon.err and "Traceback" not in daemon.err
    flags = invoke(state, "flg_list")  # a command that reads the page: the same refusal, in one line
    assert flags.code == SYSCALL
    assert_one_line(flags.err, "hakeeper flg_list: ")
    assert "damaged" in flags.err
    assert {k: v for k, v in listing(state).items() if k != "hakeeperd.pid"} == before


def test_an_sqlite_database_that_is_not_an_lcd_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir()
    with closing(sqlite3.connect(lcd_of(root))) as db:
        db.execute("CREATE TABLE photos (name TEXT)")
        db.commit()
    before = listing(root)
    for argv in (["ins_list"], ["flg_create", "-f", "new"]):
        result = invoke(root, *argv)
        assert result.code == SYSCALL
        assert "not an LCD" in result.err
        assert listing(root) == before


def test_only_a_missing_lcd_is_created_and_never_seen_half_made(tmp_path: Path) -> None:
    """Processes starting at once on a fresh state directory all see one whole LCD, none an empty one."""
    root = tmp_path / "state"
    env = dict(os.environ, HAKEEPER_ROOT=str(root), HAKEEPER_NODE="node1")
    env.pop("HAKEEPER_DEBUG", None)
    program = Path(sys.executable).parent / "sys_list"
    procs = [subprocess.Popen([program], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(8)]
    results = [(*p.communicate(timeout=60), p.returncode) for p in procs]
    assert all(r == (b"node1\n", b"", 0) for r in results), results
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("lcd.sqlite-")) == ["lcd.sqlite"]
    with Lcd.open(root) as lcd:
        assert [c.op for c in lcd.changes()] == ["init_node"]


# ---------------------------------------------------------------------- reads without write access


def run_readonly(root: Path, *argv: str) -> Result:
    """Run a console script where ``root`` cannot be written: a read-only bind mount (root), or mode 0555."""
    env = {k: v for k, v in os.environ.items() if k != "HAKEEPER_DEBUG"}
    env["HAKEEPER_ROOT"] = str(root)
    program = str(Path(sys.executable).parent / argv[0])
    if os.geteuid() == 0:
        shell = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0" && exec "$@"'
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, str(root), program, *argv[1:]]
    else:
        command = [program, *argv[1:]]
    proc = subprocess.run(command, capture_output=True, env=env, timeout=60, check=False)
    return Result(proc.returncode, os.fsdecode(proc.stdout), os.fsdecode(proc.stderr))


@pytest.fixture
def readonly_state(state: Path) -> Iterator[Path]:
    if os.geteuid() == 0:
        probe = subprocess.run(
            [
                "unshare",
                "--mount",
                "sh",
                "-c",
                'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" "$0"',
                str(state),
            ],
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            pytest.skip(f"no read-only bind mount here: {probe.stderr.decode().strip()}")
        yield state
        return
    state.chmod(0o555)
    lcd_of(state).chmod(0o444)
    try:
        yield state
    finally:
        lcd_of(state).chmod(0o644)
        state.chmod(0o700)


def test_a_read_only_state_directory_still_answers_reads(readonly_state: Path) -> None:
    before = lcd_dump(readonly_state)
    files_before = listing(readonly_state)
    web = run_readonly(readonly_state, "ins_list", "-t", "web", "-f", ":")
    assert web.code == OK, web.err
    assert web.out.startswith("gen:app:web:web-id:OSU:"), web.out
    status = run_readonly(readonly_state, "lcdstatus", "-e")
    assert status.code == OK, status.err
    assert "web" in status.out and "db" in status.out
    changes = run_readonly(readonly_state, "hakeeper", "changes")
    assert changes.code == OK, changes.err
    assert len(changes.out.splitlines()) == len(SETUP) + 1
    assert run_readonly(readonly_state, "flg_test", "-f", "maint") == Result(OK, "", "")
    write = run_readonly(readonly_state, "flg_create", "-f", "new")
    assert write.code == SYSCALL, write
    assert_one_line(write.err, "flg_create: ")
    assert "not writable" in write.err
    assert lcd_dump(readonly_state) == before
    assert listing(readonly_state) == files_before


def test_a_read_only_open_cannot_write(state: Path) -> None:
    before = lcd_dump(state)
    with Lcd.open(state, readonly=True) as lcd:
        assert lcd.local_node == "node1"
        assert [r.tag for r in lcd.resources()] == ["db", "web"]
        with pytest.raises(SystemCallFailed):
            lcd.create_flag("new")
    assert lcd_dump(state) == before


def test_damage_is_an_error_of_its_own(state: Path) -> None:
    _empty(lcd_of(state))
    with pytest.raises(LcdDamaged, match="empty: 0 bytes"):
        Lcd.open(state)
    assert lcd_of(state).stat().st_size == 0
