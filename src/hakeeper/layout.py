"""The state directory: where it is, and what it holds.

One directory per node (``--root DIR``, else ``$HAKEEPER_ROOT``, else ``state_dir``
under ``[node]`` in the configuration file, else :data:`DEFAULT_ROOT`), mode 0700::

    lcd.sqlite       the LCD (and SQLite's -wal and -shm beside it)
    hakeeperd.sock   the control socket (mode 0600): commands sent to hakeeperd
    hakeeperd.pid    hakeeperd's pid, locked while it runs
    hakeeperd.log    hakeeperd's log (lkstart's default)
    placement.db     this node's votes on who holds each hierarchy (cluster.placement)
    cluster/         this node's cluster identity and the join tokens (comm.identity)
    subsys/          script kits and gen/app's scripts, LifeKeeper's layout (kits.actions)

Kept to the names and ``os``: every command reads it before it knows what it
will need (a command answered by hakeeperd loads nothing more; see
:mod:`hakeeper.cli.main`). So the configuration file (:mod:`hakeeper.config`,
which loads :mod:`tomllib`, and with it ``re``, ``datetime`` and ``typing``) is
not parsed here: :func:`configured_root` only scans it for ``state_dir`` under
``[node]``, and leaves any file it cannot read with certainty to the full parser.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing is not imported: see the module's docstring
if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_ROOT = "/var/lib/hakeeper"
LCD_NAME = "lcd.sqlite"
SOCKET_NAME = "hakeeperd.sock"
PID_NAME = "hakeeperd.pid"
LOG_NAME = "hakeeperd.log"
PLACEMENT_NAME = "placement.db"
CLUSTER_DIR = "cluster"
SUBSYS_DIR = "subsys"
DEFAULT_CONFIG = "/etc/hakeeper/hakeeper.toml"
CONFIG_ENV = "HAKEEPER_CONFIG"  # another configuration file (``hakeeper --config FILE`` sets it)


def state_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: ``root`` if given, else ``$HAKEEPER_ROOT``, else the configuration file's
    ``state_dir`` (the whole file read and checked: :func:`hakeeper.config.load`), else /var/lib/hakeeper.

    An empty value is refused, never taken for "not given": a script whose
    variable is unset must not reach the production LCD.
    """
    from pathlib import Path

    from hakeeper.errors import IllegalArgument

    if root is not None:
        if not os.fspath(root):
            raise IllegalArgument("the state directory is empty (--root ''): name a directory, or leave --root out")
        return Path(root)
    chosen = os.environ.get("HAKEEPER_ROOT")
    if chosen is None:
        from hakeeper.config import load

        return Path(load().state_dir)  # the file's state_dir, checked with the whole file, else the default
    if not chosen:
        raise IllegalArgument(
            f"HAKEEPER_ROOT is set but empty: set it to the state directory, or unset it to use {DEFAULT_ROOT}"
        )
    return Path(chosen)


def config_path() -> str | None:
    """The configuration file: ``$HAKEEPER_CONFIG``, else :data:`DEFAULT_CONFIG`; None when the variable is empty."""
    chosen = os.environ.get(CONFIG_ENV)
    if chosen is None:
        return DEFAULT_CONFIG
    return chosen or None


def configured_root() -> str | None:
    """The state directory the configuration file names (or :data:`DEFAULT_ROOT`), without parsing TOML.

    For the light path of a command (:func:`hakeeper.wire.root_of`). None when only
    the full parser can tell: the file cannot be read, or ``state_dir`` is written in a
    way this scan does not read with certainty (escapes, a dotted key, an inline table,
    multi-line strings...). The full command then reads the file, and says what is wrong.
    """
    path = config_path()
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            data = file.read(1 << 20)
    except FileNotFoundError:
        return DEFAULT_ROOT if path == DEFAULT_CONFIG else None  # a file named on purpose must be there
    except OSError:
        return None
    try:
        return scan_state_dir(data.decode())
    except UnicodeDecodeError:
        return None


def scan_state_dir(text: str) -> str | None:
    """``state_dir`` under ``[node]`` of a TOML text as tomllib would read it, :data:`DEFAULT_ROOT` when
    absent, None when unsure (see :func:`configured_root`). A test holds it to tomllib."""
    table: str | None = ""
    found: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if '"""' in line or "'''" in line:
            return None  # a multi-line string could hold anything
        if line.startswith("["):
            header, _, rest = line.partition("]")
            name, rest = header[1:].strip(), rest.strip()
            if (rest and not rest.startswith("#")) or not name.replace("_", "").replace("-", "").isalnum():
                if "node" in line:
                    return None  # [[node]], [node.sub], ["node"]...
                table = None  # another table: its keys do not matter
                continue
            table = name
            continue
        if "state_dir" in line or (table == "" and line.startswith(("node", '"node"', "'node'"))):
            key, equals, value = line.partition("=")
            if table != "node" or key.strip() != "state_dir" or not equals or found is not None:
                return None
            found = _plain_string(value.strip())
            if found is None:
                return None
    return DEFAULT_ROOT if found is None else found


def _plain_string(value: str) -> str | None:
    """A TOML string without escapes, and an optional comment after it; None for anything else."""
    if len(value) < 2 or value[0] not in "\"'":
        return None
    end = value.find(value[0], 1)
    if end < 0:
        return None
    inside, rest = value[1:end], value[end + 1 :].strip()
    if (value[0] == '"' and "\\" in inside) or (rest and not rest.startswith("#")):
        return None
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in inside):
        return None
    return inside


def ensure_state_dir(root: Path) -> Path:
    """Create the state directory (mode 0700) if it does not exist, with a clear error if it cannot be."""
    from hakeeper.errors import StateDirError

    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise StateDirError(f"state directory {root} exists but is not a directory") from None
    except OSError as exc:
        raise StateDirError(
            f"cannot create state directory {root}: {exc.strerror} (choose another with --root DIR or HAKEEPER_ROOT)"
        ) from None
    if not root.is_dir():
        raise StateDirError(f"state directory {root} exists but is not a directory")
    if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
        raise StateDirError(f"state directory {root} is not writable by this user (choose another with --root DIR)")
    return root
