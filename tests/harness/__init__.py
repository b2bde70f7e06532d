"""The test LAN: nodes in network namespaces (each with its own mount, UTS and IPC namespace) on bridged
networks in 198.18.0.0/15, a client, and real faults. See ``lan.py`` for the model, ``fixtures.py`` for pytest.
For failover tests: ``webapp.py`` (action scripts of a web app that answers with its node's name) and
``probe.py`` (the client asks every node every 10 ms who serves; finds double service and outages).
"""

from __future__ import annotations

from .errors import HarnessError, LanUnavailable, NodeDown
from .hog import CpuHog
from .lan import NEEDS_ROOT, Lan, unavailable_reason
from .netem import Impairment
from .node import Node
from .state import cleanup_stale
from .topology import Iface, Network

__all__ = [
    "NEEDS_ROOT",
    "CpuHog",
    "HarnessError",
    "Iface",
    "Impairment",
    "Lan",
    "LanUnavailable",
    "Network",
    "Node",
    "NodeDown",
    "cleanup_stale",
    "unavailable_reason",
]
