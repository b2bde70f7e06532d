"""The exception family of hakeeper.

Every error a user can cause is a :class:`HakeeperError`; its ``exit_code`` is
LifeKeeper's LCDI code for that kind of failure, so that scripts written for
LifeKeeper's commands read our exit statuses the same way:

====  =====================================
code  meaning
====  =====================================
0     OK
1     a system or library call failed
2     syntax error (bad usage)
3     internal error
4     the object already exists
5     illegal argument
6     index out of range
7     the object does not exist
8     delete refused: something depends on it
9     communication with the other system failed
====  =====================================
"""

from __future__ import annotations

from typing import ClassVar


class HakeeperError(Exception):
    """Base of every error hakeeper raises on purpose.

    The message is one sentence a user can act on, with a hint of what to do
    where there is one.
    """

    exit_code: ClassVar[int] = 1


class SystemCallFailed(HakeeperError):
    """A system or library call failed (disk, permissions, subprocess)."""

    exit_code = 1


class UsageError(HakeeperError):
    """The command line could not be parsed."""

    exit_code = 2


class InternalError(HakeeperError):
    """A bug or an inconsistency that should not happen."""

    exit_code = 3


class AlreadyExists(HakeeperError):
    """The object to create exists already."""

    exit_code = 4


class IllegalArgument(HakeeperError):
    """An argument is malformed or not allowed here."""

    exit_code = 5


class OutOfRange(HakeeperError):
    """A number is outside its allowed range."""

    exit_code = 6


class NotFound(HakeeperError):
    """The object named does not exist."""

    exit_code = 7


class DeleteRefused(HakeeperError):
    """The object cannot be deleted because something depends on it."""

    exit_code = 8


class CommunicationFailed(HakeeperError):
    """Another node could not be reached."""

    exit_code = 9


class StateDirError(SystemCallFailed):
    """The state directory cannot be created or used."""


class SchemaError(InternalError):
    """The database schema is newer than this program or damaged."""


class LcdDamaged(SystemCallFailed):
    """The LCD's file exists but is not a whole hakeeper LCD (empty, truncated, not SQLite, unreadable).

    It is refused and kept as it is, never replaced by a new, empty LCD.
    """


def error_for(code: int, message: str) -> HakeeperError:
    """An error of the kind whose exit code is ``code`` (as another node answered), saying ``message``."""
    for kind in (
        SystemCallFailed,
        UsageError,
        InternalError,
        AlreadyExists,
        IllegalArgument,
        OutOfRange,
        NotFound,
        DeleteRefused,
        CommunicationFailed,
    ):
        if kind.exit_code == code:
            return kind(message)
    return HakeeperError(message)
