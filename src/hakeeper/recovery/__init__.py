"""The recovery engine (LRACI): which actions run, in which order."""
