"""Cluster decisions and keeping the configuration identical on the nodes of a hierarchy."""
