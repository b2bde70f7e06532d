"""Command-line interface: importing the package registers every command."""

from __future__ import annotations

from hakeeper.cli import actions, daemon, lcdi, status

__all__ = ["actions", "daemon", "lcdi", "status"]
