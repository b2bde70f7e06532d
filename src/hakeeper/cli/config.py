"""``hakeeper config check [FILE]``: read the configuration file as hakeeperd would, and say what it gives.

Every setting is printed with its value and where it came from (default, file
with its line, environment variable, option), then what does not agree with this
node: a node name that is not the LCD's or the certificate's, a log directory that
is not there. Exit 0 when all is well; else each problem on stderr and exit 5. A
communication path from an address ``listen.addresses`` does not name is a warning.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from hakeeper.cli.base import Context, arg, command
from hakeeper.config import KEYS, ConfigError, Settings, load
from hakeeper.layout import CONFIG_ENV, DEFAULT_CONFIG, LCD_NAME

if TYPE_CHECKING:
    from hakeeper.db.store import Lcd

T = TypeVar("T")


@command(
    "config",
    "check the configuration file: every setting, its value and where it came from",
    arg("action", choices=("check",), metavar="ACTION", help="check"),
    arg("file", nargs="?", metavar="FILE", help=f"the file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})"),
    arg("--root", metavar="DIR", help="state directory, as hakeeperd --root would override state_dir"),
    stateless=True,
    epilog="Precedence: a command-line option, then the environment (HAKEEPER_ROOT, HAKEEPER_NODE,\n"
    "HAKEEPER_LOG_TARGET, HAKEEPER_LOG_LEVEL, HAKEEPER_LOG_FILE), then the file, then the default.\n"
    "See docs/configuration.md.",
)
def _config(ctx: Context, args: argparse.Namespace) -> int:
    settings = load(args.file, options={"node.state_dir": args.root})
    if settings.path is None:
        ctx.print(f"# no configuration file ({os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG} does not exist): defaults")
    else:
        ctx.print(f"# {settings.path}")
    width = max(len(key.dotted) for key in KEYS)
    for key in KEYS:
        value = settings.values[key.dotted]
        ctx.print(f"{key.dotted.ljust(width)} = {_shown(key.dotted, value.value)}  # {value.shown()}")
    for warning in unlistened_paths(settings):
        ctx.warn(f"hakeeper config: warning: {warning}")
    problems = disagreements(settings)
    for problem in problems:
        ctx.warn(f"hakeeper config: {problem}")
    if problems:
        return ConfigError.exit_code
    ctx.print("# OK")
    return 0


def _shown(dotted: str, value: object) -> str:
    if value is None and dotted == "node.name":
        return f"(none: the host name, {os.uname().nodename.split('.')[0]!r}, for a new LCD)"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{item}"' for item in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def disagreements(settings: Settings) -> list[str]:
    """What in ``settings`` does not agree with this node as it is on disk."""
    problems: list[str] = []
    root = Path(settings.state_dir)
    name = settings.node_name
    if name is not None:
        where = settings.values["node.name"].shown()
        lcd_node = _lcd_node(root)
        if lcd_node is not None and lcd_node != name:
            problems.append(
                f"node.name is {name!r} ({where}), but the LCD in {root} belongs to node {lcd_node!r}: "
                "a node keeps the name its LCD was created with (set node.name to it)"
            )
        cert_node = _certificate_node(root)
        if cert_node is not None and cert_node != name:
            problems.append(
                f"node.name is {name!r} ({where}), but this node's certificate in {root / 'cluster'} names "
                f"{cert_node!r} (set node.name to it)"
            )
    target = settings["log.target"]
    if target in ("file", "auto"):
        directory = os.path.dirname(settings.log_file)
        if not os.path.isdir(directory) and directory != str(root):  # the state directory is made at start
            problems.append(f"log.file {settings.log_file}: its directory {directory} does not exist")
    if target == "syslog" and not os.path.exists("/dev/log"):
        problems.append("log.target is syslog, but /dev/log does not exist here (is a syslog daemon running?)")
    return problems


def unlistened_paths(settings: Settings) -> list[str]:
    """The communication paths whose local address is not among ``listen.addresses`` (when that is set).

    hakeeperd listens at each path's local address (not at the list): a path the list does
    not name is likely an address the administrator forgot, or a path left from before.
    """
    if not settings.listen:
        return []
    from hakeeper.comm.addresses import parse_address

    hosts = {parse_address(address, 0, listen=True)[0] for address in settings.listen}
    paths = _lcd_read(Path(settings.state_dir), lambda lcd: lcd.paths())
    return [
        f"the path to {p.node} ({p.local} -> {p.remote}) is from an address listen.addresses does not name"
        for p in paths or []
        if p.local not in hosts
    ]


def _lcd_node(root: Path) -> str | None:
    """The LCD's own node name, if there is an LCD (never created here)."""
    return _lcd_read(root, lambda lcd: lcd.local_node)


def _lcd_read(root: Path, read: Callable[[Lcd], T]) -> T | None:
    """What ``read`` finds in the LCD of ``root``; None when there is none (never created here) or it is damaged
    (that is for lkstart and lcdstatus to report)."""
    if not (root / LCD_NAME).exists():
        return None
    from hakeeper.db.store import Lcd
    from hakeeper.errors import HakeeperError

    try:
        with Lcd.open(root, readonly=True) as lcd:
            return read(lcd)
    except HakeeperError:
        return None


def _certificate_node(root: Path) -> str | None:
    from hakeeper.comm.identity import identity_exists, load_identity
    from hakeeper.errors import HakeeperError

    if not identity_exists(root):
        return None
    try:
        return load_identity(root).node
    except HakeeperError:
        return None
