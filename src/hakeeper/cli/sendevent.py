"""``sendevent``'s fast path: a monitor runs it the moment something failed, so it must start fast.

When hakeeperd listens, the raw arguments go straight to it (it parses and
checks them, and answers with one line); only ``json`` and ``socket`` are
imported. Otherwise — no daemon, or ``--help`` — the full command runs and
says what is wrong.
"""

from __future__ import annotations

import json
import os
import sys

from hakeeper.wire import SOCKET_NAME, exchange, request, root_of


def main() -> None:
    # Imports are kept to the standard library's json, os, socket and sys: no typing, no logging.
    argv = sys.argv[1:]
    root = root_of(argv)
    if root is not None and "-h" not in argv and "--help" not in argv:
        try:
            data = exchange(os.path.join(root, SOCKET_NAME), request("sendevent", argv))
        except OSError:
            data = None  # the full command reports the trouble properly
        if data:
            try:
                reply = json.loads(data)
                sys.stdout.write(str(reply.get("out", "")))
                sys.stderr.write(str(reply.get("err", "")))
                sys.exit(int(reply["code"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                pass
    from hakeeper.cli.main import run

    sys.exit(run("sendevent", argv, prog="sendevent"))
