"""The ``hakeeper`` command and the LifeKeeper-named console scripts (``ins_create``, ``lcdstatus``…).

Every command is registered once in :data:`hakeeper.cli.base.COMMANDS` and can
be run two ways: ``hakeeper ins_list -t web`` or ``ins_list -t web``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from hakeeper import __version__
from hakeeper.cli.base import COMMANDS, console_streams, load_all, run

__all__ = ["COMMANDS", "load_all", "main", "run"]


USAGE = """usage: hakeeper [--root DIR] COMMAND [ARGS...]

hakeeper keeps applications in service on one node of a cluster and moves them
to a backup node when they or their node fail. Each command below is also
installed under its own (LifeKeeper) name: 'hakeeper ins_list' = 'ins_list'.
'hakeeper COMMAND --help' tells more about one.

commands:
"""


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of ``hakeeper``."""
    console_streams()
    sys.exit(dispatch(list(sys.argv[1:] if argv is None else argv)))


def dispatch(argv: list[str]) -> int:
    root: str | None = None
    while argv and argv[0].startswith("-"):
        option = argv.pop(0)
        if option in ("-h", "--help"):
            sys.stdout.write(usage())
            return 0
        if option == "--version":
            sys.stdout.write(f"hakeeper {__version__}\n")
            return 0
        if option == "--root":
            if not argv:
                sys.stderr.write("hakeeper: --root needs a value: the state directory (see: hakeeper --help)\n")
                return 2
            root = argv.pop(0)
        elif option.startswith("--root="):
            root = option.split("=", 1)[1]
        else:
            sys.stderr.write(f"hakeeper: unknown option {option!r} (see: hakeeper --help)\n")
            return 2
    if not argv:
        sys.stderr.write("hakeeper: no command given (see: hakeeper --help)\n")
        return 2
    name = argv.pop(0)
    if name == "help":
        sys.stdout.write(usage())
        return 0
    return run(name, argv, prog=f"hakeeper {name}", root=root)


def usage() -> str:
    commands = load_all()
    width = max(len(name) for name in commands)
    lines = [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in sorted(commands.items())]
    return USAGE + "\n".join(lines) + "\n"


def entry(name: str) -> Callable[[], NoReturn]:
    """A console-script entry point running command ``name`` under its own name."""

    def script() -> NoReturn:
        console_streams()
        sys.exit(run(name, sys.argv[1:], prog=name))

    script.__name__ = name
    return script


lcdstatus = entry("lcdstatus")
ins_create = entry("ins_create")
ins_remove = entry("ins_remove")
ins_list = entry("ins_list")
ins_gettag = entry("ins_gettag")
ins_setstate = entry("ins_setstate")
ins_setinfo = entry("ins_setinfo")
ins_setas = entry("ins_setas")
ins_setinit = entry("ins_setinit")
ins_setchkint = entry("ins_setchkint")
ins_setlocalrecover = entry("ins_setlocalrecover")
dep_create = entry("dep_create")
dep_remove = entry("dep_remove")
dep_list = entry("dep_list")
eqv_create = entry("eqv_create")
eqv_remove = entry("eqv_remove")
eqv_list = entry("eqv_list")
typ_create = entry("typ_create")
typ_remove = entry("typ_remove")
typ_list = entry("typ_list")
app_create = entry("app_create")
app_remove = entry("app_remove")
app_list = entry("app_list")
flg_create = entry("flg_create")
flg_remove = entry("flg_remove")
flg_test = entry("flg_test")
flg_list = entry("flg_list")
sys_create = entry("sys_create")
sys_remove = entry("sys_remove")
sys_list = entry("sys_list")
sys_getds = entry("sys_getds")
sys_getst = entry("sys_getst")
net_create = entry("net_create")
net_change = entry("net_change")
net_remove = entry("net_remove")
net_list = entry("net_list")
perform_action = entry("perform_action")
sendevent = entry("sendevent")
lkstart = entry("lkstart")
lkstop = entry("lkstop")
lcdremexec = entry("lcdremexec")
lk_confirmso = entry("lk_confirmso")


def hakeeperd() -> NoReturn:
    """Entry point of ``hakeeperd`` (the daemon in the foreground)."""
    from hakeeper.cli.daemon import hakeeperd as serve

    serve()
