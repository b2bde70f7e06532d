"""The alarm interface (sendevent, event handlers), monitoring (quickCheck) and local recovery."""
