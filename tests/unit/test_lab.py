"""The lab as a product: it lives in the package, not in tests/, and ``hakeeper lab`` says clearly what it cannot do.

What needs root (a lab really built and removed) is in tests/integration/test_lab.py; the installed package,
outside the checkout, in tests/integration/test_install.py.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hakeeper.lab import keeper, procs
from tests.conftest import Cli

SRC = Path(__file__).resolve().parents[2] / "src"


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports (absolute imports; relative ones stay inside the package)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_nothing_in_src_imports_tests() -> None:
    """The product must run where tests/ is not: from a wheel, in a venv outside the checkout."""
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50 and SRC / "hakeeper" / "lab" / "lan.py" in files
    offenders = [
        f"{path.relative_to(SRC)}: imports {name}"
        for path in files
        for name in imported_modules(path)
        if name == "tests" or name.startswith("tests.")
    ]
    assert offenders == []


def test_the_scan_finds_an_import_of_tests(tmp_path: Path) -> None:
    """The scan above can fail: it sees both forms of import, also inside a function."""
    sample = tmp_path / "sample.py"
    sample.write_text("import os\ndef f():\n    from tests.lan_fixtures import x\n    import tests.bind\n")
    assert imported_modules(sample) == ["os", "tests.lan_fixtures", "tests.bind"]


def test_importing_the_lab_imports_nothing_of_tests() -> None:
    code = (
        "import sys, hakeeper.lab, hakeeper.lab.keeper, hakeeper.lab.cluster, hakeeper.lab.probe, hakeeper.demo, "
        "hakeeper.demo_cluster, hakeeper.cli.lab; print([m for m in sys.modules if m.split('.')[0] == 'tests'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_lab_up_without_root_says_so_and_makes_nothing(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = cli("lab", "up", "--run-dir", str(run_dir), "--dir", str(tmp_path / "nodes"))
    assert result.code == 1
    assert result.err == "lab: needs root (network namespaces): run 'hakeeper lab up' as root\n"
    assert result.out == ""
    assert list(run_dir.iterdir()) == []
    assert not (tmp_path / "nodes").exists()


def test_status_and_down_without_a_lab(cli: Cli, tmp_path: Path) -> None:
    assert cli("lab", "status", "--run-dir", str(tmp_path)).out == "no lab is up (start one: hakeeper lab up)\n"
    down = cli("lab", "down", "--run-dir", str(tmp_path))
    assert (down.code, down.out, down.err) == (0, "no lab is up\n", "")


def dead_process() -> dict[str, int | None]:
    """The identity of a process that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    start = procs.start_time(proc.pid)
    proc.wait(timeout=10)
    return {"pid": proc.pid, "start": start}


def test_status_of_a_lab_whose_keeper_died_says_what_is_wrong(cli: Cli, tmp_path: Path) -> None:
    record: dict[str, Any] = {
        "status": "up",
        "keeper": dead_process(),
        "prefix": "hk0badee",
        "namespaces": ["hk0badee-netA", "hk0badee-node1", "hk0badee-client"],
        "networks": [{"name": "A", "cidr": "198.18.0.0/24", "netns": "hk0badee-netA", "iface": "eth0"}],
        "hosts": [
            {"name": "node1", "netns": "hk0badee-node1", "addresses": {"eth0": "198.18.0.11"}, "holder": None},
            {"name": "client", "netns": "hk0badee-client", "addresses": {"eth0": "198.18.0.100"}, "holder": None},
        ],
        "directory": str(tmp_path / "nodes"),
    }
    (tmp_path / keeper.RECORD_NAME).write_text(json.dumps(record))
    result = cli("lab", "status", "--run-dir", str(tmp_path))
    assert result.code == 1
    assert "lab hk0badee: up since" in result.out and "(GONE)" in result.out
    assert "198.18.0.11" in result.out and "hk0badee-client" in result.out
    assert result.err.startswith(f"lab: the lab is not whole: its keeper (pid {record['keeper']['pid']}) has died")
    assert "namespace hk0badee-node1 is gone" in result.err and result.err.endswith("hakeeper lab down)\n")


def test_a_damaged_record_is_refused_not_guessed_at(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / keeper.RECORD_NAME).write_text('{"status": "up", "pref')
    for action in ("status", "down"):
        result = cli("lab", action, "--run-dir", str(tmp_path))
        assert result.code == 1, action
        assert "is damaged; check 'ip netns list', then remove it" in result.err
    assert (tmp_path / keeper.RECORD_NAME).exists()


def test_a_record_names_only_the_namespaces_of_its_own_lab() -> None:
    """What lab down deletes is what the record names, and only names of its prefix in the LAN's pattern."""
    record = {"prefix": "hk123abc", "namespaces": ["hk123abc-node1", "hk999999-node1", "hk123abc-x y", "other"]}
    assert keeper._namespaces(record) == ["hk123abc-node1"]
    assert keeper._namespaces({"prefix": "../etc", "namespaces": ["../etc-node1"]}) == []
