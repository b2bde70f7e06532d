"""``hakeeper log [--since TIME] [--tag TAG] [-f] [-n N]``: hakeeperd's log, from its file or from journald.

Where it reads follows ``[log] target`` (docs/configuration.md): ``file`` reads
the file and its rotated files, oldest first; ``journal`` (and ``syslog``, which
journald keeps too on a systemd machine) runs ``journalctl -o json
SYSLOG_IDENTIFIER=hakeeperd``; ``auto`` reads the file when there is one, else
the journal if journald runs here. ``--source`` chooses. Always run here, never by hakeeperd: ``-f`` goes
on until interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterable, Iterator

from hakeeper.cli.base import Context, arg, command
from hakeeper.config import load
from hakeeper.errors import NotFound, OutOfRange
from hakeeper.logs.read import (
    SINCE_FORMS,
    Filter,
    Record,
    follow_file,
    follow_journal,
    last,
    log_files,
    parse_since,
    read_files,
    read_journal,
)

JOURNALD_RUNS = "/run/systemd/journal"  # there while journald runs
FOLLOW_HISTORY = 10  # -f without -n: the last records first, as tail -f


@command(
    "log",
    "show hakeeperd's log (this node's), by time and resource tag; -f follows it",
    arg("--since", metavar="TIME", help=f"records from TIME on: {SINCE_FORMS}"),
    arg("--tag", metavar="TAG", help="only the records about resource or hierarchy TAG"),
    arg("-f", "--follow", dest="follow", action="store_true", help="go on showing records as they come"),
    arg("-n", dest="count", type=int, metavar="N", help=f"the last N records only (with -f: default {FOLLOW_HISTORY})"),
    arg("--source", choices=("auto", "file", "journal"), default=None,
        help="read the log file or journald (default: as [log] target says)"),
    local=True,
    epilog="A record is about TAG when it was written for TAG (every state change is) or names TAG as a word\n"
    "(decisions name their hierarchy). Lines that continue a record (a traceback) begin with '  | '.",
)  # fmt: skip
def _log(ctx: Context, args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 0:
        raise OutOfRange(f"-n {args.count} must be 0 or more")
    settings = load(options={"node.state_dir": str(ctx.root)})
    since = parse_since(args.since) if args.since is not None else None
    keep = Filter(since, args.tag)
    count = args.count if args.count is not None or not args.follow else FOLLOW_HISTORY
    path = settings.log_file
    source = args.source or {"file": "file", "journal": "journal", "syslog": "journal"}.get(settings["log.target"])
    if source is None:  # auto: hakeeperd chose at its start; the file tells whether it wrote one
        journald = os.path.isdir(JOURNALD_RUNS) and shutil.which("journalctl") is not None
        source = "journal" if journald and not log_files(path) else "file"

    def show(record: Record) -> None:
        ctx.out.write(record.text + "\n")
        ctx.out.flush()

    if source == "journal":
        seen: list[str | None] = [None]  # the last entry's cursor, shown or not: -f goes on after it

        def noting(records: Iterable[Record]) -> Iterator[Record]:
            for record in records:
                seen[0] = record.cursor or seen[0]
                yield record

        for record in last(noting(read_journal(since)), keep, count):
            show(record)
        if args.follow:
            follow_journal(seen[0], keep, show, lambda: False)  # until Ctrl-C
        return 0
    files = log_files(path)
    if not files and not args.follow:
        raise NotFound(f"no log at {path} (hakeeperd has not written one here; see: hakeeper config check)")
    for record in last(read_files(files), keep, count):
        show(record)
    if args.follow:
        follow_file(path, keep, show, lambda: False)  # until Ctrl-C
    return 0
