"""hakeeperd's log: where it goes (:mod:`.write`, :mod:`.journal`) and how ``hakeeper log`` reads it (:mod:`.read`).

One record a line in a file::

    2026-12-03T22:03:27.123+00:00 hakeeperd[1234] INFO hakeeper.db.store tag=web: web OSU -> ISP (restore)

time (ISO 8601, milliseconds, UTC offset), process and pid (hakeeperd, and its
guard and heartbeat processes write the same log), level, logger (``LEVEL
logger: message`` as logging's own format had it), ``tag=TAG`` when
the record concerns one resource, then the message. A message of several lines (a
traceback) goes on in lines that begin with :data:`CONTINUATION`: no line of a
message can pass for a record of its own, and a reader keeps them with their record.
"""

from __future__ import annotations

#: What each further line of a record's message begins with.
CONTINUATION = "  | "
#: The identifier of every record hakeeper writes to journald and syslog (the guard's and heartbeat's too).
IDENTIFIER = "hakeeperd"
#: The environment variable by which hakeeperd tells its guard and heartbeat processes where it logs.
SETUP_ENV = "HAKEEPER_LOG_SETUP"
