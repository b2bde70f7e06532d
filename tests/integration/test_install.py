"""The product as an administrator gets it: a wheel, ``pip install`` of it into a fresh venv outside the
checkout, then ``hakeeper lab`` and ``hakeeper demo`` from there (issue 12: the test LAN is part of the
product); and ``make install`` / ``make uninstall`` of that wheel into temporary directories standing for
/opt/hakeeper, /usr/local/sbin, /etc/systemd/system and /etc/hakeeper, with the daemon run as its systemd
unit says (issue 13).

The wheel is built once for the module (``pip wheel --no-deps``), in the test's temporary directory, from a
copy of the package's sources (pyproject.toml, README.md, src/), so the build leaves nothing in the checkout.
pip resolves the dependencies and the build backend from whatever index pip is configured with (offline: a
local one). Every command runs with its working directory outside the checkout and without PYTHONPATH, so
only the installed package can answer.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_port
from tests.wheel_fixtures import REPO, clean_env

pytestmark = pytest.mark.slow

LAB_SCRIPTS = ("icmp.py", "probe.py", "relay.py", "webapp.py")  # run by path inside the namespaces


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    base = tmp_path_factory.mktemp("installed")
    assert REPO not in base.parents, f"{base} is inside the checkout"
    target = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True, timeout=120)
    python = str(target / "bin" / "python")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", str(wheel)]
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


# ---------------------------------------------------------------------- issue 13: the wheel, make install, systemd

DATA = ("hakeeperd.service", "hakeeper-join.service", "hakeeper.toml.example")


def test_the_wheel_holds_the_units_and_the_example_configuration(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        unit = archive.read("hakeeper/data/hakeeperd.service").decode()
    assert {f"hakeeper/data/{name}" for name in DATA} <= names
    assert not [n for n in names if n.startswith("tests/")]
    assert "Type=notify" in unit


def test_the_installed_package_says_its_version_and_finds_its_units(venv: Path) -> None:
    from hakeeper import __version__

    version = run(venv, str(venv / "bin" / "hakeeper"), "--version")
    assert (version.returncode, version.stdout) == (0, f"hakeeper {__version__}\n"), version.stderr
    code = f"""if True:
        import json
        from importlib import resources
        print(json.dumps({{n: str(resources.files("hakeeper").joinpath("data", n)) for n in {DATA!r}}}))
    """
    done = run(venv, str(venv / "bin" / "python"), "-c", code)
    assert done.returncode == 0, done.stderr
    for name, where in json.loads(done.stdout).items():
        assert Path(where).is_relative_to(venv) and Path(where).is_file(), (name, where)


@dataclass(frozen=True)
class Installed:
    """What ``make install`` made, in temporary directories standing for the system's."""

    base: Path
    prefix: Path
    sbindir: Path
    unitdir: Path
    confdir: Path

    def make(self, target: str, wheel: Path | None) -> subprocess.CompletedProcess[str]:
        """``make TARGET`` in the checkout; without ``wheel``, make builds one from the checkout itself."""
        return subprocess.run(
            ["make", "-s", "-C", str(REPO), target, f"PYTHON={sys.executable}", f"WHEEL={wheel or ''}",
             f"PREFIX={self.prefix}", f"SBINDIR={self.sbindir}", f"UNITDIR={self.unitdir}", f"CONFDIR={self.confdir}"],
            env=clean_env(self.base), cwd=self.base, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=900, check=False,
        )  # fmt: skip

    def unit(self, name: str) -> configparser.SectionProxy:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string((self.unitdir / name).read_text())
        return parser["Service"]


def make_install(base: Path, wheel: Path | None) -> Installed:
    if shutil.which("make") is None:
        pytest.skip("no make here (apt-get install make)")
    installed = Installed(base, base / "opt" / "hakeeper", base / "sbin", base / "systemd", base / "etc" / "hakeeper")
    installed.confdir.mkdir(parents=True)
    (installed.confdir / "hakeeper.toml").write_text("# the administrator's own\n")
    done = installed.make("install", wheel)
    assert done.returncode == 0, f"make install failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return installed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Installed:
    return make_install(tmp_path_factory.mktemp("make-install"), wheel)


def test_make_install_links_the_commands_and_writes_units_and_example(installed: Installed) -> None:
    from hakeeper import __version__

    for name in ("hakeeper", "hakeeperd", "lkstart", "lkstop", "lcdstatus", "ins_list"):
        assert (installed.sbindir / name).readlink() == installed.prefix / "bin" / name
    env = clean_env(installed.prefix)
    env["PATH"] = f"{installed.sbindir}:/usr/bin:/bin"  # the commands as an administrator's PATH finds them
    done = subprocess.run(["hakeeper", "--version"], env=env, cwd=installed.base, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, f"hakeeper {__version__}\n"), done.stderr
    assert installed.unit("hakeeperd.service")["ExecStart"] == f"{installed.prefix}/bin/hakeeperd"
    assert (installed.confdir / "hakeeper.toml").read_text() == "# the administrator's own\n"  # never overwritten
    assert "[log]" in (installed.confdir / "hakeeper.toml.example").read_text()


def test_the_installed_units_and_the_documented_drop_in_pass_systemd_analyze_verify(installed: Installed) -> None:
    """What systemd would say of them: every key known, every command executable (they point into the venv)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze here (apt-get install systemd)")
    drop_in = re.search(r"order\.conf <<'EOF'\n(.*?)\nEOF\n", (REPO / "docs" / "deploy.md").read_text(), re.S)
    assert drop_in is not None, "docs/deploy.md shows no drop-in order.conf"
    (installed.unitdir / "hakeeperd.service.d").mkdir(exist_ok=True)
    (installed.unitdir / "hakeeperd.service.d" / "order.conf").write_text(drop_in.group(1) + "\n")
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{installed.unitdir}:")  # ':' - and the system's own units after
    done = subprocess.run([analyze, "verify", "hakeeperd.service", "hakeeper-join.service"], env=env,
                          cwd=installed.base, capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    said = [line for line in (done.stdout + done.stderr).splitlines() if "hakeeper" in line or "order.conf" in line]
    assert (done.returncode, said) == (0, []), done.stdout + done.stderr


def test_hakeeperd_runs_and_stops_as_its_installed_unit_says(installed: Installed, tmp_path: Path) -> None:
    """ExecStart under Type=notify (READY=1 on systemd's socket, here the test's), then ExecStop (lkstop)."""
    service = installed.unit("hakeeperd.service")
    assert service["WatchdogSec"] == "10s"
    env = clean_env(installed.prefix, HAKEEPER_ROOT=str(tmp_path / "state"), HAKEEPER_NODE="node1")
    env["PATH"] = "/usr/bin:/bin"  # as systemd's: the unit names every command by its path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(30)
    daemon_env = dict(env, NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="10000000")
    proc = subprocess.Popen(shlex.split(service["ExecStart"]), env=daemon_env, cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    messages: list[list[str]] = []

    def until(key: str) -> list[str]:
        for _ in range(20):  # bounded: watchdog pings may come in between
            messages.append(sock.recv(4096).decode().split("\n"))
            if key in messages[-1]:
                return messages[-1]
        raise AssertionError(f"no {key}: {messages}")

    try:
        assert until("READY=1") == ["READY=1", "STATUS=serving node1 (no cluster)"], messages
        status = subprocess.run([str(installed.sbindir / "lcdstatus")], env=env, capture_output=True, text=True,
                                timeout=120, check=False)  # fmt: skip
        assert status.returncode == 0, status.stderr
        stop = subprocess.run(shlex.split(service["ExecStop"]), env=env, capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
        assert stop.returncode == 0, stop.stderr
        until("STOPPING=1")
        assert proc.wait(timeout=60) == 0
    finally:
        sock.close()
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def checkout_files() -> list[str]:
    """What git sees in the checkout besides its files, ignored ones too (build/, *.egg-info), but no caches."""
    done = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--ignored"], capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    return [line for line in done.stdout.splitlines() if not re.search(r"__pycache__|\.\w+_cache/", line)]


def test_make_install_builds_upgrades_and_uninstall_removes_what_it_made(tmp_path: Path, wheel: Path) -> None:
    """make install with no wheel given builds one from the checkout (and leaves nothing there); a second
    install upgrades the venv in place; make uninstall keeps hakeeper.toml and what is not hakeeper's."""
    before = checkout_files()
    installed = make_install(tmp_path, None)
    assert checkout_files() == before, "make install left files in the checkout"
    (installed.sbindir / "other").symlink_to("/bin/true")
    upgrade = installed.make("install", wheel)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert (installed.sbindir / "hakeeperd").readlink() == installed.prefix / "bin" / "hakeeperd"
    done = installed.make("uninstall", wheel)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [p.name for p in installed.sbindir.iterdir()] == ["other"]
    assert list(installed.unitdir.iterdir()) == []
    assert [p.name for p in installed.confdir.iterdir()] == ["hakeeper.toml"]
    assert not installed.prefix.exists()
    again = installed.make("uninstall", wheel)
    assert (again.returncode, again.stdout) == (0, f"no hakeeper venv in {installed.prefix}: nothing to uninstall\n")


def test_the_join_unit_serves_joins_where_join_env_says(installed: Installed, tmp_path: Path) -> None:
    """The join unit's command line, with its variables expanded as systemd would: Environment=, then join.env."""
    service = installed.unit("hakeeper-join.service")
    variables = dict(word.split("=", 1) for word in shlex.split(service["Environment"]))
    assert variables == {"HAKEEPER_JOIN_LISTEN": "0.0.0.0", "HAKEEPER_JOIN_TIMEOUT": "600"}
    join_env = Path(service["EnvironmentFile"].removeprefix("-"))
    assert join_env == installed.confdir / "join.env"
    port = free_port()
    join_env.write_text(f"HAKEEPER_JOIN_LISTEN=127.0.0.1:{port}\nHAKEEPER_JOIN_TIMEOUT=1\n")
    try:
        for line in join_env.read_text().splitlines():
            name, value = line.split("=", 1)
            variables[name] = value
        argv = [re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], w) for w in shlex.split(service["ExecStart"])]
        env = clean_env(installed.prefix, HAKEEPER_ROOT=str(tmp_path / "state"), HAKEEPER_NODE="node1")
        init = subprocess.run([str(installed.sbindir / "hakeeper"), "cluster", "init"], env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        assert init.returncode == 0, init.stderr
        done = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"serving joins to cluster hakeeper on 127.0.0.1:{port} for 1 s"), done.stdout
    finally:
        join_env.unlink()
