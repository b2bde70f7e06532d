"""The LCD's file: damage is refused and kept, reads need no write access, backup / restore / check.

Safety rule 3 (docs: DESIGN.md): a damaged LCD is refused and kept, never
silently replaced by an empty one. Only a missing file is a new LCD.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from hakeeper.cli.base import run
from hakeeper.db import Lcd
from hakeeper.db.schema import SCHEMA_VERSION
from hakeeper.errors import LcdDamaged, SystemCallFailed
from tests.conftest import Cli, Result
from tests.unit.test_cli_errors import assert_one_line, lcd_dump, script, stop_daemon

OK, SYSCALL, SYNTAX, INTERNAL, EXISTS, ILLEGAL, RANGE, MISSING = range(8)
PAGE = 4096

SETUP: tuple[tuple[str, ...], ...] = (
    ("sys_create", "-s", "node2"),
    ("ins_create", "-a", "gen", "-r", "app", "-t", "web", "-i", "web-id"),
    ("ins_create", "-a", "gen", "-r", "app", "-t", "db", "-i", "db-id"),
    ("dep_create", "-p", "web", "-c", "db"),
    ("flg_create", "-f", "maint"),
)


@pytest.fixture
def state(cli: Cli, root: Path) -> Iterator[Path]:
    """A state directory of node1 with a small hierarchy (web -> db), extended to node2."""
    for name, *argv in SETUP:
        assert cli(name, *argv) == Result(OK, "", ""), (name, argv)
    with Lcd.open(root) as lcd:  # as hakeeperd records it once node2 agreed (eqv_create needs the daemon)
        lcd.create_equivalency("web", "node2")
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
    ("lcd", "backup", "never-written.sqlite"),
    ("export",),
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


def test_first_writes_at_once_on_a_fresh_state_directory_all_succeed(tmp_path: Path) -> None:
    """Writers starting at once on a fresh state directory each create their resource, none sees 'locked'.

    Each one's first write registers the kits in the new LCD: that happens once, whoever wins.
    """
    root = tmp_path / "state"
    env = dict(os.environ, HAKEEPER_ROOT=str(root), HAKEEPER_NODE="node1")
    env.pop("HAKEEPER_DEBUG", None)
    program = Path(sys.executable).parent / "ins_create"
    tags = [f"r{i}" for i in range(12)]
    argvs = [[str(program), "-a", "gen", "-r", "app", "-t", tag, "-i", tag] for tag in tags]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv in argvs]
    results = [(*p.communicate(timeout=120), p.returncode) for p in procs]
    assert all(code == 0 and err == b"" for _out, err, code in results), results
    with Lcd.open(root) as lcd:
        assert sorted(r.tag for r in lcd.resources()) == sorted(tags)
        ops = [c.op for c in lcd.changes()]
        assert lcd.integrity_ok()
    assert ops.count("init_node") == 1
    assert ops.count("register_kits") == 1, ops
    assert ops.count("create_resource") == len(tags)


def test_what_a_killed_creation_left_is_removed(tmp_path: Path) -> None:
    """A process killed while it made the LCD leaves a temporary file; the next creation removes it."""
    root = tmp_path / "state"
    root.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    pid = int(gone.stdout)
    for name in (f".lcd.sqlite.new-{pid}-0000", f".lcd.sqlite.new-{pid}-0000-wal", f".lcd.sqlite.new-{os.getpid()}-1"):
        (root / name).write_bytes(b"half made")
    Lcd.open(root, node="node1").close()
    assert sorted(p.name for p in root.iterdir()) == [f".lcd.sqlite.new-{os.getpid()}-1", "lcd.sqlite"]


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
    assert len(changes.out.splitlines()) == len(SETUP) + 3  # creation, kits, equivalency
    assert run_readonly(readonly_state, "flg_test", "-f", "maint") == Result(OK, "", "")
    exported = run_readonly(readonly_state, "hakeeper", "export")
    assert exported.code == OK, exported.err
    assert '"tag": "web"' in exported.out
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


# ---------------------------------------------------------------------- backup


def test_backup_is_a_whole_self_contained_copy(state: Path, tmp_path: Path) -> None:
    target = tmp_path / "backups" / "lcd-1.sqlite"
    target.parent.mkdir()
    result = invoke(state, "lcd", "backup", str(target))
    assert result.code == OK, result.err
    assert result.err == "" and str(target) in result.out and "node node1" in result.out
    with closing(sqlite3.connect(target)) as copy, closing(sqlite3.connect(lcd_of(state))) as live:
        assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # no log to carry along
        for table in ("nodes", "resources", "dependencies", "equivalencies", "flags", "changes"):
            query = f"SELECT * FROM {table} ORDER BY 1"
            assert copy.execute(query).fetchall() == live.execute(query).fetchall(), table
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["lcd-1.sqlite"]
    assert invoke(state, "lcd", "check", str(target)).code == OK


def test_backup_never_overwrites(state: Path, tmp_path: Path) -> None:
    target = tmp_path / "lcd.bak"
    target.write_text("keep me")
    result = invoke(state, "lcd", "backup", str(target))
    assert result.code == EXISTS
    assert_one_line(result.err, "hakeeper lcd: ")
    assert target.read_text() == "keep me"


def test_backup_is_consistent_while_hakeeperd_writes(state: Path, tmp_path: Path) -> None:
    """Backups taken while changes stream through hakeeperd each hold exactly a prefix of the change log."""
    assert script("lkstart", state_dir=state).code == OK
    stop = threading.Event()
    written: list[int] = []
    failed: list[Result] = []

    def writer() -> None:
        n = 0
        while not stop.is_set() and n < 400:
            n += 1
            result = invoke(state, "flg_create", "-f", f"f{n}")
            if result.code != OK:
                failed.append(result)
                return
            written.append(n)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        backups = []
        for i in range(6):
            while len(written) < 10 * (i + 1) and thread.is_alive():
                stop.wait(0.01)
            target = tmp_path / f"b{i}.sqlite"
            result = invoke(state, "lcd", "backup", str(target))
            assert result.code == OK, result.err
            backups.append(target)
    finally:
        stop.set()
        thread.join()
        stop_daemon(state)
    assert not failed, failed
    for target in backups:
        assert invoke(state, "lcd", "check", str(target)).code == OK
        with closing(sqlite3.connect(target)) as db:
            seqs = [row[0] for row in db.execute("SELECT seq FROM changes ORDER BY seq")]
            assert seqs == list(range(1, len(seqs) + 1)), "the change log is a prefix, with no gap"
            changes = db.execute("SELECT args FROM changes WHERE op = 'create_flag'")
            created = {json.loads(args)["flag"] for (args,) in changes}
            flags = {row[0] for row in db.execute("SELECT name FROM flags")}
            assert flags == created, "the flags are exactly those of the changes in the copy"


# ---------------------------------------------------------------------- restore


def backup_of(root: Path, target: Path) -> Path:
    assert invoke(root, "lcd", "backup", str(target)).code == OK
    return target


def test_restore_replaces_a_healthy_lcd_and_keeps_it(state: Path, tmp_path: Path) -> None:
    saved = backup_of(state, tmp_path / "saved.sqlite")
    expected = lcd_dump(state)
    assert invoke(state, "ins_remove", "-t", "web").code == OK
    assert invoke(state, "flg_create", "-f", "later").code == OK
    replaced = lcd_dump(state)
    result = invoke(state, "lcd", "restore", str(saved))
    assert result.code == OK, result.err
    assert "replaced-" in result.out
    assert lcd_dump(state) == expected
    [kept] = [p for p in state.iterdir() if p.name.startswith("lcd.sqlite.replaced-")]
    kept_dir = tmp_path / "kept"
    kept_dir.mkdir()
    shutil.copy(kept, kept_dir / "lcd.sqlite")
    assert lcd_dump(kept_dir) == replaced
    assert invoke(state, "ins_list", "-t", "web").code == OK
    assert invoke(state, "lcd", "check").code == OK


@pytest.mark.parametrize("kind", ["empty", "truncated at a page", "text", "missing, with its log"])
def test_restore_over_a_damaged_lcd_keeps_the_damaged_file_as_it_was(kind: str, state: Path, tmp_path: Path) -> None:
    saved = backup_of(state, tmp_path / "saved.sqlite")
    expected = lcd_dump(state)
    DAMAGE[kind][0](lcd_of(state))
    damaged = sorted(digest for name, digest in listing(state).items() if name.startswith("lcd.sqlite"))
    result = invoke(state, "lcd", "restore", str(saved))
    assert result.code == OK, result.err
    assert "damaged-" in result.out
    assert lcd_dump(state) == expected
    kept = sorted(digest for name, digest in listing(state).items() if name.startswith("lcd.sqlite.damaged-"))
    assert kept == damaged, "the damaged file and its companions are kept, byte for byte"


def test_restore_onto_a_node_without_an_lcd(state: Path, tmp_path: Path) -> None:
    saved = backup_of(state, tmp_path / "saved.sqlite")
    fresh = tmp_path / "fresh"
    result = invoke(fresh, "lcd", "restore", str(saved))
    assert result.code == OK, result.err
    assert lcd_dump(fresh) == lcd_dump(state)


def test_restore_is_refused_while_hakeeperd_runs(state: Path, tmp_path: Path) -> None:
    saved = backup_of(state, tmp_path / "saved.sqlite")
    assert script("lkstart", state_dir=state).code == OK
    try:
        assert invoke(state, "flg_create", "-f", "after").code == OK
        before = lcd_dump(state)
        result = invoke(state, "lcd", "restore", str(saved))
        assert result.code == SYSCALL, result
        assert_one_line(result.err, "hakeeper lcd: ")
        assert "lkstop" in result.err
        assert lcd_dump(state) == before
    finally:
        stop_daemon(state)


def test_restore_refuses_another_nodes_backup(state: Path, tmp_path: Path) -> None:
    other = tmp_path / "node2"
    Lcd.open(other, node="node2").close()
    theirs = backup_of(other, tmp_path / "node2.sqlite")
    before = lcd_dump(state)
    result = invoke(state, "lcd", "restore", str(theirs))
    assert result.code == ILLEGAL, result
    assert "node2" in result.err and "node1" in result.err
    assert lcd_dump(state) == before
    assert not [p for p in state.iterdir() if ".replaced-" in p.name or ".restore-" in p.name]


def _older_schema(path: Path) -> None:
    """Make ``path`` an LCD of schema version 2 (before the outbox of migration 3)."""
    with closing(sqlite3.connect(path)) as db:
        db.executescript(
            "DROP TABLE mirror_targets; DROP TABLE mirror_stores; DROP TABLE mirrors; "  # migration 4's
            "DROP TABLE outbox; DROP TABLE applied; PRAGMA user_version = 2;"
        )


def _newer_schema(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def _cycle(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("INSERT INTO dependencies (parent, child) VALUES ('db', 'web')")
        db.commit()


def _dangling(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:  # foreign keys are off in a plain connection
        db.execute("INSERT INTO dependencies (parent, child) VALUES ('web', 'ghost')")
        db.commit()


def _no_local_node(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE nodes SET local = 0")
        db.commit()


def test_restore_upgrades_an_older_schema(state: Path, tmp_path: Path) -> None:
    saved = backup_of(state, tmp_path / "saved.sqlite")
    _older_schema(saved)
    result = invoke(state, "lcd", "restore", str(saved))
    assert result.code == OK, result.err
    assert f"schema version {SCHEMA_VERSION}" in result.out
    with closing(sqlite3.connect(lcd_of(state))) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


BAD_BACKUPS: dict[str, tuple[Callable[[Path], None], str]] = {
    "newer schema": (_newer_schema, "newer than this hakeeper"),
    "dependency cycle": (_cycle, "dependency cycle"),
    "dangling dependency": (_dangling, "foreign key: dependencies"),
    "no local node": (_no_local_node, "0 nodes are marked as this node"),
    "corrupt page": (_corrupt_the_flags_table, "integrity:"),
    "empty": (_empty, "empty: 0 bytes"),
}


@pytest.mark.parametrize("kind", sorted(BAD_BACKUPS))
def test_restore_checks_the_backup_first(kind: str, state: Path, tmp_path: Path) -> None:
    spoil, what = BAD_BACKUPS[kind]
    saved = backup_of(state, tmp_path / "saved.sqlite")
    spoil(saved)
    before, files_before = lcd_dump(state), listing(state)
    result = invoke(state, "lcd", "restore", str(saved))
    assert result.code == ILLEGAL, result
    assert_one_line(result.err, "hakeeper lcd: ")
    assert what in result.err, result.err
    assert lcd_dump(state) == before
    assert {k: v for k, v in listing(state).items() if k != "hakeeperd.pid"} == files_before


# ---------------------------------------------------------------------- check


def test_check_passes_a_healthy_lcd(state: Path) -> None:
    result = invoke(state, "lcd", "check")
    assert result.code == OK, result.err
    assert result.err == "" and len(result.out.splitlines()) == 1 and ": ok" in result.out


@pytest.mark.parametrize("kind", sorted(set(BAD_BACKUPS) - {"empty"}))
def test_check_lists_each_problem_of_the_lcd(kind: str, state: Path) -> None:
    spoil, what = BAD_BACKUPS[kind]
    spoil(lcd_of(state))
    result = invoke(state, "lcd", "check")
    assert result.code == SYSCALL, result
    assert_one_line(result.err, "hakeeper lcd: ")
    assert "problem" in result.err and "damaged" in result.err
    assert result.out and all(line.startswith(f"{lcd_of(state)}: ") for line in result.out.splitlines())
    assert what in result.out, result.out


def test_check_of_a_damaged_file_says_what_is_wrong(state: Path) -> None:
    _page_aligned(lcd_of(state))
    result = invoke(state, "lcd", "check")
    assert result.code == SYSCALL
    assert result.out == f"{lcd_of(state)}: SQLite: database disk image is malformed\n"
    assert_one_line(result.err, "hakeeper lcd: ")


def test_damage_is_an_error_of_its_own(state: Path) -> None:
    _empty(lcd_of(state))
    with pytest.raises(LcdDamaged, match="empty: 0 bytes"):
        Lcd.open(state)
    assert lcd_of(state).stat().st_size == 0
