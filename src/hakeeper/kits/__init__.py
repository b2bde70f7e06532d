"""Recovery kits: one module per kind of resource (the kit interface arrives with the recovery engine)."""

from __future__ import annotations
