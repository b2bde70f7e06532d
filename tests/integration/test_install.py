"""The product as an administrator gets it: ``pip install`` into a fresh venv outside the checkout, then
``hakeeper lab`` and ``hakeeper demo`` from there (issue 12: the test LAN is part of the product).

The venv is made once for the module, in the test's temporary directory, from a copy of the package's sources
(pyproject.toml, README.md, src/), so the build leaves nothing in the checkout. pip resolves the dependencies
and the build backend as ``pip install .`` would, from whatever index pip is configured with (offline: a local
one). Every command runs with its working directory outside the checkout and without PYTHONPATH, so only the
installed package can answer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LAB_SCRIPTS = ("icmp.py", "probe.py", "relay.py", "webapp.py")  # run by path inside the namespaces


def clean_env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HAKEEPER_ROOT")}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("installed")
    assert REPO not in base.parents, f"{base} is inside the checkout"
    source = base / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    target = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    python = str(target / "bin" / "python")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", str(source)]
    done = subprocess.run(
        install, env=clean_env(target), cwd=base, capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, f"pip install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return target


def run(venv: Path, *argv: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), env=clean_env(venv, **env), cwd=venv.parent, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_the_installed_package_holds_the_lab_and_imports_nothing_of_tests(venv: Path) -> None:
    code = """if True:
        import json, sys
        from pathlib import Path
        import hakeeper, hakeeper.lab, hakeeper.lab.keeper, hakeeper.cli.lab, hakeeper.demo, hakeeper.demo_cluster
        lab = Path(hakeeper.lab.__file__).parent
        print(json.dumps({
            "package": hakeeper.__file__,
            "tests": [m for m in sys.modules if m.split(".")[0] == "tests"],
            "scripts": sorted(p.name for p in lab.glob("*.py")),
            "path": sys.path,
        }))
    """
    done = run(venv, str(venv / "bin" / "python"), "-c", code)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert Path(found["package"]).is_relative_to(venv), found["package"]
    assert found["tests"] == []
    assert set(LAB_SCRIPTS) <= set(found["scripts"])
    assert not any(entry and Path(entry).resolve().is_relative_to(REPO) for entry in found["path"]), found["path"]


def test_hakeeper_lab_and_demo_answer_from_the_venv(venv: Path) -> None:
    hakeeper = str(venv / "bin" / "hakeeper")
    lab = run(venv, hakeeper, "lab", "--help")
    assert lab.returncode == 0, lab.stderr
    assert "up | down | status" in lab.stdout and "198.18.0.0/15" in lab.stdout
    demo = run(venv, hakeeper, "demo", "--help")
    assert demo.returncode == 0, demo.stderr
    assert "--part N" in demo.stdout
    status = run(venv, hakeeper, "lab", "status", "--run-dir", str(venv.parent))
    assert (status.returncode, status.stdout) == (0, "no lab is up (start one: hakeeper lab up)\n")
    listed = run(venv, hakeeper, "--help").stdout
    assert re.search(r"^  lab +a cluster on a LAN", listed, re.M) and re.search(r"^  demo +a tour", listed, re.M)


def test_the_installed_demo_builds_its_configuration(venv: Path) -> None:
    tmp = venv.parent / "tmp"
    tmp.mkdir(exist_ok=True)
    done = run(venv, str(venv / "bin" / "hakeeper"), "demo", "--part", "1", TMPDIR=str(tmp))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "$ lcdstatus -e" in done.stdout and "web-ip" in done.stdout
    assert [p.name.startswith("hakeeper-demo-") for p in tmp.iterdir()] == [True]


@pytest.mark.needs_root
@pytest.mark.usefixtures("needs_lan")
def test_the_installed_demo_runs_the_live_cluster_on_the_lab(venv: Path) -> None:
    """What issue 12 asks for in so many words: ``pip install .`` in a fresh venv, then ``hakeeper demo``."""
    done = run(venv, str(venv / "bin" / "hakeeper"), "demo", "--part", "3", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on a LAN of network namespaces" in done.stdout
    assert re.search(r"served by node[23] again after \d\.\d\d s without an answer", done.stdout), done.stdout
    assert "cluster stopped" in done.stdout
