"""DataKeeper: a volume mirrored block by block from the node in service (the source) to its backups (the targets).

How the parts fit (``docs/replication.md`` for operators):

* :mod:`.states` -- the mirror states with DataKeeper's numbers (imports nothing of ours);
* :mod:`.device` -- :class:`~.device.BlockStore`, what the volume serves, and :class:`~.device.LocalStore`,
  the node's own backing store (a block device or an image file);
* the mirror engine (a ``BlockStore`` that writes locally and to every target), its intent
  bitmap and resync, and the target side;
* the FUSE volume: one file, ``vol.img``, served from a ``BlockStore``, with a loop device on it
  for the administrator to ``mkfs`` and mount.

Block I/O never runs on hakeeperd's event loop: the volume and the engine run in a replication
process of their own (libfuse's worker threads, blocking sockets in threads), supervised by hakeeperd.
"""
