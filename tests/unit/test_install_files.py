"""What ``python -m hakeeper.install`` puts on a machine, into temporary directories: the commands' links,
the systemd units with their paths, the example configuration; and what ``--uninstall`` takes away."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

import pytest

from hakeeper.errors import IllegalArgument, NotFound
from hakeeper.install import EXAMPLE, MARK, SHIPPED_PREFIX, UNITS, Layout, commands, data_text, install, main
from hakeeper.install import uninstall as remove


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(data_text(name))
    return parser


def test_hakeeperd_unit_is_a_notify_service_that_lets_the_guard_outlive_hakeeperd() -> None:
    service = unit("hakeeperd.service")
    assert {k: service["Service"][k] for k in ("Type", "NotifyAccess", "KillMode", "Restart")} == {
        "Type": "notify", "NotifyAccess": "main", "KillMode": "process", "Restart": "on-failure",
    }  # fmt: skip
    assert service["Service"]["WatchdogSec"] == "10s"
    assert service["Service"]["ExecStart"] == f"{SHIPPED_PREFIX}/bin/hakeeperd"  # in the foreground, as lkstart
    assert service["Service"]["ExecStop"] == f"{SHIPPED_PREFIX}/bin/lkstop"
    assert service["Unit"]["After"] == service["Unit"]["Wants"] == "network-online.target"
    assert service["Install"]["WantedBy"] == "multi-user.target"
    # The choice of KillMode is explained where an administrator reads it.
    assert re.search(r"^# KillMode=process, not mixed nor control-group", data_text("hakeeperd.service"), re.M)


def test_the_join_unit_runs_serve_join_where_join_env_says() -> None:
    service = unit("hakeeper-join.service")["Service"]
    assert service["ExecStart"].startswith(f"{SHIPPED_PREFIX}/bin/hakeeper cluster serve-join --listen ")
    assert service["EnvironmentFile"] == "-/etc/hakeeper/join.env"


def test_the_example_configuration_parses_and_names_every_key_commented() -> None:
    text = data_text(EXAMPLE)
    assert tomllib.loads(text) == {"node": {}, "log": {}, "listen": {}}  # everything commented out: the defaults
    uncommented = re.sub(r"^# (\w+ = )", r"\1", text, flags=re.M)
    assert tomllib.loads(uncommented) == {
        "node": {"name": "node1", "state_dir": "/var/lib/hakeeper"},
        "log": {
            "target": "auto",
            "level": "INFO",
            "file": "/var/lib/hakeeper/hakeeperd.log",
            "max_bytes": 10485760,
            "backups": 5,
        },
        "listen": {"addresses": ["198.18.0.11", "198.18.1.11"]},
    }


def fake_venv(path: Path) -> Path:
    """A venv as install() sees one: pyvenv.cfg and a bin/ with the commands."""
    (path / "bin").mkdir(parents=True)
    (path / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for name in commands():
        (path / "bin" / name).write_text("#!/bin/sh\n")
        (path / "bin" / name).chmod(0o755)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(fake_venv(tmp_path / "opt" / "hakeeper"), tmp_path / "sbin", tmp_path / "units",
                  tmp_path / "etc" / "hakeeper")  # fmt: skip


def test_install_links_the_commands_writes_the_units_and_keeps_the_configuration(layout: Layout) -> None:
    layout.confdir.mkdir(parents=True)
    (layout.confdir / "hakeeper.toml").write_text("[node]\nname = 'mine'\n")
    layout.sbindir.mkdir()
    (layout.sbindir / "lkstart").write_text("someone else's\n")  # not hakeeper's: left alone
    said: list[str] = []
    install(layout, said.append)
    names = commands()
    assert {"hakeeper", "hakeeperd", "lkstart", "lkstop", "lcdstatus"} <= set(names)
    for name in set(names) - {"lkstart"}:
        assert (layout.sbindir / name).readlink() == layout.bindir / name
    assert (layout.sbindir / "lkstart").read_text() == "someone else's\n"
    assert any("left alone" in line and "lkstart" in line for line in said), said
    for name in UNITS:
        text = (layout.unitdir / name).read_text()
        assert text.startswith(MARK)
        rest = text.split("\n", 1)[1].replace(str(layout.prefix), "<venv>").replace(str(layout.confdir), "<conf>")
        rest = rest.replace(f"(default {SHIPPED_PREFIX})", "")
        assert SHIPPED_PREFIX not in rest and "/etc/hakeeper" not in rest
        assert f"{layout.bindir}/" in text
    assert f"EnvironmentFile=-{layout.confdir}/join.env" in (layout.unitdir / "hakeeper-join.service").read_text()
    assert (layout.confdir / EXAMPLE).read_text() == data_text(EXAMPLE)
    assert (layout.confdir / "hakeeper.toml").read_text() == "[node]\nname = 'mine'\n"
    install(layout, said.append)  # again: the same result
    assert (layout.sbindir / "hakeeperd").readlink() == layout.bindir / "hakeeperd"


def test_a_new_install_takes_over_links_into_an_older_hakeeper_venv_only(layout: Layout, tmp_path: Path) -> None:
    old = fake_venv(tmp_path / "old-venv")
    layout.sbindir.mkdir()
    (layout.sbindir / "hakeeperd").symlink_to(old / "bin" / "hakeeperd")
    (layout.sbindir / "lkstop").symlink_to("/bin/true")  # another program's link
    layout.unitdir.mkdir()
    (layout.unitdir / "hakeeper-join.service").write_text("[Service]\nExecStart=/bin/true\n")  # the admin's own
    install(layout, lambda _line: None)
    assert (layout.sbindir / "hakeeperd").readlink() == layout.bindir / "hakeeperd"
    assert (layout.sbindir / "lkstop").readlink() == Path("/bin/true")
    assert (layout.unitdir / "hakeeper-join.service").read_text() == "[Service]\nExecStart=/bin/true\n"


def test_uninstall_removes_what_install_made_and_nothing_else(layout: Layout) -> None:
    install(layout, lambda _line: None)
    (layout.confdir / "hakeeper.toml").write_text("# mine\n")
    (layout.sbindir / "other").symlink_to("/bin/true")
    (layout.unitdir / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    remove(layout, lambda _line: None, venv=True)
    assert sorted(p.name for p in layout.sbindir.iterdir()) == ["other"]
    assert sorted(p.name for p in layout.unitdir.iterdir()) == ["other.service"]
    assert sorted(p.name for p in layout.confdir.iterdir()) == ["hakeeper.toml"]
    assert not layout.prefix.exists()


def test_uninstall_removes_no_directory_that_is_not_a_hakeeper_venv(tmp_path: Path) -> None:
    prefix = tmp_path / "usr"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "keep").write_text("")
    with pytest.raises(IllegalArgument, match="is not a venv holding hakeeper"):
        remove(Layout(prefix, tmp_path / "sbin", tmp_path / "units", tmp_path / "etc"), lambda _l: None, venv=True)
    assert (prefix / "bin" / "keep").exists()


def test_install_needs_a_venv_holding_hakeeperd(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="has no hakeeperd"):
        install(Layout(tmp_path, tmp_path / "sbin", tmp_path / "units", tmp_path / "etc"), lambda _l: None)
    assert not (tmp_path / "sbin").exists()


def test_relative_directories_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sbindir", "sbin"]) == IllegalArgument.exit_code
    assert "--sbindir 'sbin' must be an absolute path" in capsys.readouterr().err
