"""The LCD (configuration database) and its typed API (LCDI).

``from hakeeper.db import Lcd`` is what kits, the recovery engine and the
daemon use; :mod:`hakeeper.db.graph` holds the pure ordering functions.
"""

from __future__ import annotations

from hakeeper.db.model import Change, Dependency, Equivalency, Node, Resource, ResourceType
from hakeeper.db.states import SETTABLE_STATES, EqvKind, Init, State, Switchback
from hakeeper.db.store import Lcd
from hakeeper.layout import DEFAULT_ROOT, state_root

__all__ = [
    "DEFAULT_ROOT",
    "SETTABLE_STATES",
    "Change",
    "Dependency",
    "Equivalency",
    "EqvKind",
    "Init",
    "Lcd",
    "Node",
    "Resource",
    "ResourceType",
    "State",
    "Switchback",
    "state_root",
]
