"""hakeeper: a high-availability failover cluster manager for Linux."""

from __future__ import annotations

import logging

__version__ = "0.1.0"

# Commands print their own one-line errors; log records reach a terminal only where a
# program (hakeeperd) configures logging, never through Python's last-resort handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())
