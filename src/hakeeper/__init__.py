"""hakeeper: a high-availability failover cluster manager for Linux."""

from __future__ import annotations

__version__ = "0.1.0"
