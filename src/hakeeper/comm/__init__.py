"""Cluster communication (LifeKeeper's LCM): identity, paths, heartbeats, messages."""
