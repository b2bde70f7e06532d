"""Resource states and settings with fixed codes.

This module imports nothing of hakeeper's, so that anything may use it
(Supervisor keeps its ``states.py`` the same way). The integer codes are stored
in the LCD and never change meaning; add new members at new codes.
"""

from __future__ import annotations

import enum


class State(enum.IntEnum):
    """The state of one resource instance on one node (LifeKeeper's states)."""

    ILLSTATE = 0  # not yet set; transient at start-up
    ISP = 1  # in service, protected: local and inter-node recovery active
    ISU = 2  # in service, unprotected: no recovery
    OSU = 3  # out of service, unimpaired: removed, or in service elsewhere
    OSF = 4  # out of service, failed: a restore failed, alarming off

    @property
    def in_service(self) -> bool:
        return self in (State.ISP, State.ISU)


#: The states an administrator may set with ``ins_setstate`` (never OSF, as LifeKeeper).
SETTABLE_STATES = frozenset({State.ISP, State.ISU, State.OSU})


class Init(enum.IntEnum):
    """What a node does with a resource when hakeeper starts there."""

    AUTORES_ISP = 1  # bring it in service if it is in service nowhere else
    INIT_ISP = 2  # bring it in service
    INIT_OSU = 3  # leave it out of service


class Switchback(enum.IntEnum):
    """What happens when a higher-priority node returns."""

    INTELLIGENT = 1  # stay where it is until moved by hand
    AUTOMATIC = 2  # move back to the higher-priority node


class EqvKind(enum.IntEnum):
    """Kinds of equivalency; LifeKeeper only uses SHARED."""

    SHARED = 1
