"""The state directory: where it is, and what it holds.

One directory per node (``--root DIR``, else ``$HAKEEPER_ROOT``, else
:data:`DEFAULT_ROOT`), mode 0700::

    lcd.sqlite       the LCD (and SQLite's -wal and -shm beside it)
    hakeeperd.sock   the control socket (mode 0600): commands sent to hakeeperd
    hakeeperd.pid    hakeeperd's pid, locked while it runs
    hakeeperd.log    hakeeperd's log (lkstart's default)
    placement.db     this node's votes on who holds each hierarchy (cluster.placement)
    cluster/         this node's cluster identity and the join tokens (comm.identity)
    subsys/          script kits and gen/app's scripts, LifeKeeper's layout (kits.actions)

Kept to the names and ``os``: every command reads it before it knows what it
will need (a command answered by hakeeperd loads nothing more; see
:mod:`hakeeper.cli.main`).
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


def state_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The state directory: ``root`` if given, else ``$HAKEEPER_ROOT``, else /var/lib/hakeeper.

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
        return Path(DEFAULT_ROOT)
    if not chosen:
        raise IllegalArgument(
            f"HAKEEPER_ROOT is set but empty: set it to the state directory, or unset it to use {DEFAULT_ROOT}"
        )
    return Path(chosen)


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
