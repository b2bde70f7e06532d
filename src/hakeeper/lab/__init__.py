"""The lab: a LAN of network namespaces on one machine, for trying a cluster before deploying it.

Nodes live in network namespaces (each with its own mount, UTS and IPC namespace) on bridged networks in
198.18.0.0/15, with a client that plays the users, and real faults: power-off, pulled cables, partitions,
delay and loss, CPU hogs. The same LAN serves ``hakeeper lab up|down|status`` (:mod:`.keeper`), the demo's
live cluster (``hakeeper demo``) and the integration tests.

Modules: ``lan.py`` the model and the faults, ``node.py`` a host, ``topology.py`` the address plan,
``cluster.py`` hakeeperd on every node (``HaCluster``), ``webapp.py`` a web app that answers with its node's
name, ``probe.py`` a client asking every 10 ms who serves, ``keeper.py`` a lab that outlives the command
that started it. ``icmp.py``, ``probe.py``, ``relay.py`` and ``webapp.py`` also run as scripts inside the
namespaces (stdlib only).
"""

from __future__ import annotations

from .errors import LabError, LanUnavailable, NodeDown, TimedOut
from .hog import CpuHog
from .lan import NEEDS_ROOT, Lan, unavailable_reason
from .netem import Impairment
from .node import Node
from .state import cleanup_stale
from .topology import Iface, Network

__all__ = [
    "NEEDS_ROOT",
    "CpuHog",
    "Iface",
    "Impairment",
    "LabError",
    "Lan",
    "LanUnavailable",
    "Network",
    "Node",
    "NodeDown",
    "TimedOut",
    "cleanup_stale",
    "unavailable_reason",
]
