"""Put the hakeeper of this venv in service on this machine, or take it away: ``python -m hakeeper.install``.

``make install`` creates the venv (``/opt/hakeeper``), installs the wheel into it,
and then runs this module with that venv's Python; after ``pip install`` of the
wheel into a venv of one's own, running it by hand does the same. It

- links every command of the package (``hakeeper``, ``hakeeperd``, ``lkstart``,
  ``ins_list``…) from the venv's ``bin/`` into ``/usr/local/sbin``;
- writes the systemd units (``hakeeperd.service``, ``hakeeper-join.service``) into
  ``/etc/systemd/system``, their paths pointing into this venv;
- writes ``/etc/hakeeper/hakeeper.toml.example``; an existing ``hakeeper.toml`` is
  never touched;
- tells systemd (``daemon-reload``) when systemd runs and the units went to its directory.

``--uninstall`` removes exactly that — only links that point into this venv and
only units this module wrote (they carry :data:`MARK`) — and, with ``--venv``, the
venv itself. Never the state directory, nor ``hakeeper.toml``. The directories are
options (``--sbindir``, ``--unitdir``, ``--confdir``) so that a test installs into
a temporary directory. The units and the example travel in the package
(``hakeeper/data/``), read with :mod:`importlib.resources`: no checkout is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

from hakeeper.errors import HakeeperError, IllegalArgument, NotFound, SystemCallFailed

SHIPPED_PREFIX = "/opt/hakeeper"  # the venv the shipped units name; rewritten to the real one
SHIPPED_CONFDIR = "/etc/hakeeper"
SBINDIR = Path("/usr/local/sbin")
UNITDIR = Path("/etc/systemd/system")
CONFDIR = Path(SHIPPED_CONFDIR)
UNITS = ("hakeeperd.service", "hakeeper-join.service")
EXAMPLE = "hakeeper.toml.example"
CONFIG = "hakeeper.toml"
MARK = "# Installed by 'python -m hakeeper.install' from"  # first line of every unit it writes
SYSTEMCTL_TIMEOUT = 60.0

Say = Callable[[str], None]


@dataclass(frozen=True)
class Layout:
    """Where things go: the venv holding hakeeper, and the system's directories."""

    prefix: Path
    sbindir: Path = SBINDIR
    unitdir: Path = UNITDIR
    confdir: Path = CONFDIR

    @property
    def bindir(self) -> Path:
        return self.prefix / "bin"


def data_text(name: str) -> str:
    """A file of ``hakeeper/data`` (a unit, the example configuration), from the installed package."""
    return resources.files("hakeeper").joinpath("data", name).read_text(encoding="utf-8")


def commands() -> list[str]:
    """The names of the package's commands (its console scripts)."""
    names = sorted(ep.name for ep in metadata.distribution("hakeeper").entry_points if ep.group == "console_scripts")
    if not names:
        raise NotFound("the hakeeper package declares no commands: is it installed (pip install)?")
    return names


def render_unit(name: str, layout: Layout) -> str:
    """Unit ``name`` with its paths pointing at ``layout``'s venv and configuration directory."""
    text = data_text(name)
    text = text.replace(f"{SHIPPED_PREFIX}/bin/", f"{layout.bindir}/")
    text = text.replace(f"{SHIPPED_CONFDIR}/", f"{layout.confdir}/")
    return f"{MARK} {layout.prefix}; edit with a drop-in (systemctl edit), not here.\n{text}"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``path`` whole or not at all (a unit half written is worse than none)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _ours(unit: Path) -> bool:
    try:
        with unit.open(encoding="utf-8") as f:
            return f.readline().startswith(MARK)
    except (FileNotFoundError, UnicodeDecodeError):
        return False


def _a_hakeeper_venv(target: Path) -> bool:
    """Whether ``target`` (a link's target) is a command in the bin/ of a venv holding hakeeper."""
    venv = target.parent.parent
    return target.parent.name == "bin" and (venv / "pyvenv.cfg").exists() and (target.parent / "hakeeperd").exists()


def _systemd_runs(layout: Layout) -> bool:
    return layout.unitdir == UNITDIR and Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _systemctl(*argv: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["systemctl", *argv], capture_output=True, text=True, timeout=SYSTEMCTL_TIMEOUT,
                              check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemCallFailed(f"systemctl {' '.join(argv)}: {exc}") from None


def install(layout: Layout, say: Say) -> None:
    """Link the commands, write the units and the example configuration (see the module)."""
    if not (layout.bindir / "hakeeperd").exists():
        raise NotFound(f"{layout.bindir} has no hakeeperd: install the wheel into the venv {layout.prefix} first")
    names = commands()
    layout.sbindir.mkdir(parents=True, exist_ok=True)
    linked, left = 0, []
    for name in names:
        source, link = layout.bindir / name, layout.sbindir / name
        if link.is_symlink():
            if Path(os.readlink(link)) == source:
                linked += 1
                continue
            if not _a_hakeeper_venv(Path(os.readlink(link))):
                left.append(name)
                continue
            link.unlink()  # a link into another hakeeper venv (an earlier install elsewhere): now this one's
        elif link.exists():
            left.append(name)
            continue
        link.symlink_to(source)
        linked += 1
    say(f"linked {linked} commands into {layout.sbindir} (-> {layout.bindir})")
    if left:
        say(f"warning: left alone, not hakeeper's: {', '.join(str(layout.sbindir / n) for n in left)}")
    layout.unitdir.mkdir(parents=True, exist_ok=True)
    for unit in UNITS:
        path = layout.unitdir / unit
        if path.exists() and not _ours(path):
            say(f"warning: {path} was not written by hakeeper: left alone (customize with a drop-in instead)")
            continue
        _write(path, render_unit(unit, layout))
        say(f"wrote {path}")
    layout.confdir.mkdir(mode=0o755, parents=True, exist_ok=True)
    _write(layout.confdir / EXAMPLE, data_text(EXAMPLE))
    config = layout.confdir / CONFIG
    kept = "kept as it is" if config.exists() else f"none yet: copy {EXAMPLE} to it to change the defaults"
    say(f"wrote {layout.confdir / EXAMPLE} ({config}: {kept})")
    if _systemd_runs(layout):
        done = _systemctl("daemon-reload")
        if done.returncode != 0:
            raise SystemCallFailed(f"systemctl daemon-reload failed: {done.stderr.strip()}")
        say("systemd reloaded; start hakeeper with: systemctl enable --now hakeeperd")


def uninstall(layout: Layout, say: Say, *, venv: bool = False) -> None:
    """Remove what :func:`install` made (and the venv with ``venv``); never the state directory nor hakeeper.toml."""
    systemd = _systemd_runs(layout)
    if systemd and _systemctl("is-active", "--quiet", "hakeeperd.service").returncode == 0:
        raise IllegalArgument("hakeeperd.service is active: stop it first (systemctl stop hakeeperd), then uninstall")
    if systemd:
        _systemctl("disable", *UNITS)  # the links systemctl enable made; fails harmlessly when none
    removed = 0
    if layout.sbindir.is_dir():
        for link in sorted(layout.sbindir.iterdir()):
            if link.is_symlink() and Path(os.readlink(link)).parent == layout.bindir:
                link.unlink()
                removed += 1
    say(f"removed {removed} links from {layout.sbindir}")
    for unit in UNITS:
        path = layout.unitdir / unit
        if _ours(path):
            path.unlink()
            say(f"removed {path}")
        elif path.exists():
            say(f"warning: {path} was not written by hakeeper: left alone")
    with contextlib.suppress(FileNotFoundError):
        (layout.confdir / EXAMPLE).unlink()
        say(f"removed {layout.confdir / EXAMPLE}")
    with contextlib.suppress(OSError):
        layout.confdir.rmdir()  # only when empty: hakeeper.toml and join.env stay
    if (layout.confdir / CONFIG).exists():
        say(f"kept {layout.confdir / CONFIG}")
    if systemd:
        _systemctl("daemon-reload")
    if venv:
        if not ((layout.prefix / "pyvenv.cfg").exists() and (layout.bindir / "hakeeperd").exists()):
            raise IllegalArgument(f"{layout.prefix} is not a venv holding hakeeper: not removed")
        shutil.rmtree(layout.prefix)
        say(f"removed the venv {layout.prefix}")
    say("the state directory is kept (default /var/lib/hakeeper)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hakeeper.install",
        description="Link this venv's hakeeper commands into the system, write the systemd units and the example "
        "configuration (or, with --uninstall, remove them). Run it with the Python of the venv that holds hakeeper.",
    )
    parser.add_argument("--uninstall", action="store_true", help="remove what install made")
    parser.add_argument("--venv", action="store_true", help="with --uninstall: remove this venv too")
    parser.add_argument("--sbindir", type=Path, default=SBINDIR, help=f"where the commands go (default {SBINDIR})")
    parser.add_argument("--unitdir", type=Path, default=UNITDIR, help=f"where the units go (default {UNITDIR})")
    parser.add_argument("--confdir", type=Path, default=CONFDIR, help=f"the configuration (default {CONFDIR})")
    args = parser.parse_args(argv)
    prefix = Path(sys.prefix)
    try:
        if prefix == Path(sys.base_prefix):
            raise IllegalArgument(f"this Python ({sys.executable}) is not a venv's: install hakeeper into a venv first "
                                  f"(make install, or docs/deploy.md)")  # fmt: skip
        for option, value in (("--sbindir", args.sbindir), ("--unitdir", args.unitdir), ("--confdir", args.confdir)):
            if not value.is_absolute():
                raise IllegalArgument(f"{option} {str(value)!r} must be an absolute path")
        if args.venv and not args.uninstall:
            raise IllegalArgument("--venv goes with --uninstall")
        layout = Layout(prefix, args.sbindir, args.unitdir, args.confdir)
        if args.uninstall:
            uninstall(layout, print, venv=args.venv)
        else:
            install(layout, print)
    except HakeeperError as exc:
        sys.stderr.write(f"hakeeper install: {exc}\n")
        return exc.exit_code
    except OSError as exc:
        sys.stderr.write(f"hakeeper install: {exc}\n")
        return SystemCallFailed.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
