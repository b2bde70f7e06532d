"""The ``hakeeper`` command and the LifeKeeper-named console scripts (``ins_create``, ``lcdstatus``…).

Every command is registered once in :data:`hakeeper.cli.base.COMMANDS` and can
be run two ways: ``hakeeper ins_list -t web`` or ``ins_list -t web``.

LifeKeeper's commands are small C programs that administrators call in loops,
so a command here starts as light as it can (:func:`front`): while hakeeperd
runs on the state directory, the command line goes to it as it is, and this
process imports nothing but :mod:`hakeeper.wire` and :mod:`hakeeper.cli.console`
(the daemon parses, checks and runs it, and answers with the output and exit
code). Only without a daemon, or for ``--help``, does the command load its
parser and the LCD here (:func:`hakeeper.cli.base.run`).
"""

from __future__ import annotations

import os
import sys

from hakeeper import __version__
from hakeeper.cli.console import as_shown, console_streams
from hakeeper.wire import NoAnswer, ask, root_of

TYPE_CHECKING = False  # typing is not imported: see the module's docstring
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import NoReturn

#: The commands that hakeeperd never runs: they start and stop it, or work on the state
#: directory itself. (:data:`hakeeper.cli.base.COMMANDS` says the same with ``local``; a test
#: keeps the two in step.)
LOCAL = frozenset(
    {"lkstart", "lkstop", "cluster", "lcd", "lab", "demo", "status", "config", "log"}
)  # status asks hakeeperd itself

#: The commands with a step of their own where they are typed, before hakeeperd runs them
#: (``apply`` reads its file here): they go to the daemon through :func:`hakeeper.cli.base.run`.
#: (``client`` in :data:`hakeeper.cli.base.COMMANDS`; the same test keeps them in step.)
CLIENT_STEP = frozenset({"apply"})


USAGE = """usage: hakeeper [--root DIR] [--config FILE] COMMAND [ARGS...]

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
        elif option == "--config" or option.startswith("--config="):
            if option == "--config" and not argv:
                sys.stderr.write("hakeeper: --config needs a value: the configuration file (see: hakeeper --help)\n")
                return 2
            # The command and what it starts (lkstart's hakeeperd) read the file named here: see hakeeper.config.
            chosen = argv.pop(0) if option == "--config" else option.split("=", 1)[1]
            os.environ["HAKEEPER_CONFIG"] = os.path.abspath(chosen) if chosen else chosen
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
    return front(name, argv, prog=f"hakeeper {name}", root=root)


def front(name: str, argv: list[str], *, prog: str, root: str | None = None) -> int:
    """Run command ``name``: answered by hakeeperd when it listens, else in this process (see the module)."""
    chosen = root_of(argv, root)
    light = name not in LOCAL and name not in CLIENT_STEP
    if light and chosen is not None and "-h" not in argv and "--help" not in argv:
        try:
            answer = ask(chosen, name, argv)
        except NoAnswer as exc:  # a daemon is there and took the command: never run it a second time here
            return _failed(prog, str(exc))
        if answer is not None:
            code, out, err = answer
            sys.stdout.write(out)
            sys.stderr.write(as_shown(err, name, prog))
            return code
    from hakeeper.cli.base import run

    return run(name, argv, prog=prog, root=root)


def _failed(prog: str, message: str) -> int:
    from hakeeper.errors import CommunicationFailed

    sys.stderr.write(f"{prog}: {message}\n")
    return CommunicationFailed.exit_code


def usage() -> str:
    from hakeeper.cli.base import load_all

    commands = load_all()
    width = max(len(name) for name in commands)
    lines = [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in sorted(commands.items())]
    return USAGE + "\n".join(lines) + "\n"


def entry(name: str) -> Callable[[], NoReturn]:
    """A console-script entry point running command ``name`` under its own name."""

    def script() -> NoReturn:
        console_streams()
        sys.exit(front(name, sys.argv[1:], prog=name))

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
sendevent = entry("sendevent")  # a monitor runs it the moment something failed
lkstart = entry("lkstart")
lkstop = entry("lkstop")
lcdremexec = entry("lcdremexec")
lk_confirmso = entry("lk_confirmso")


def hakeeperd() -> NoReturn:
    """Entry point of ``hakeeperd`` (the daemon in the foreground)."""
    from hakeeper.cli.daemon import hakeeperd as serve

    serve()
