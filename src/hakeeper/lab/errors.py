"""The lab's exceptions: one family (under :class:`hakeeper.errors.HakeeperError`), so that a test can tell a
broken LAN from a failed assertion and ``hakeeper lab`` turns each into one line and an exit code."""

from __future__ import annotations

from hakeeper.errors import HakeeperError


class LabError(HakeeperError):
    """The lab could not do what was asked (a tool failed, a process would not die, ...)."""

    exit_code = 1


class LanUnavailable(LabError):
    """This machine cannot build a LAN of namespaces (not root, no network namespaces, a tool missing).

    Test fixtures turn it into ``pytest.skip(str(error))``; ``HAKEEPER_REQUIRE_ALL=1`` turns that skip into a failure.
    """


class NodeDown(LabError):
    """The node is powered off: nothing can run in it until ``lan.power_on(node)``."""


class TimedOut(LabError):
    """Something the lab waited for did not happen in time (a path ALIVE, a prober's round)."""
