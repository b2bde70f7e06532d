"""The harness's exceptions: one family, so a test can tell a broken LAN from a failed assertion."""

from __future__ import annotations


class HarnessError(Exception):
    """The test LAN could not do what was asked (a tool failed, a process would not die, ...)."""


class LanUnavailable(HarnessError):
    """This machine cannot build a test LAN (not root, no network namespaces, a tool missing).

    Fixtures turn it into ``pytest.skip(str(error))``; ``HAKEEPER_REQUIRE_ALL=1`` turns that skip into a failure.
    """


class NodeDown(HarnessError):
    """The node is powered off: nothing can run in it until ``lan.power_on(node)``."""
