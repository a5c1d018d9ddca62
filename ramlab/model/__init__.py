"""The model layer: what QEMU's two sides hold and do, in numpy.

Destination (loading a stream): :mod:`~ramlab.model.destination` (RAM images and the received
bitmap), :mod:`~ramlab.model.passes` (cutting records into passes),
:mod:`~ramlab.model.multifd_loader` and :mod:`~ramlab.model.mapped_ram` (the other page carriers).

Source (simulating a migration): :mod:`~ramlab.model.guest` and :mod:`~ramlab.model.workloads`
(the VM and what it writes), :mod:`~ramlab.model.sender` (``ram.c``'s save side),
:mod:`~ramlab.model.page_cache` (the XBZRLE cache),
:mod:`~ramlab.model.postcopy_plan` (discards, requests, placement, recovery) and
:mod:`~ramlab.model.postcopy_sender` (the sender with ``postcopy-ram``).
"""
