"""Command-line interface. Commands live in ``lcdi``, ``status``, ``actions`` and ``daemon``;
:func:`hakeeper.cli.base.load` imports the one a command needs."""
