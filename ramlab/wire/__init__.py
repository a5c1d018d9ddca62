"""Sans-IO codecs of QEMU's migration wire formats: fed bytes, they emit small frozen events.

Nothing in this package opens files or sockets. The main entry points are
:class:`ramlab.wire.decoder.StreamDecoder` (the savevm stream) and
:func:`ramlab.wire.encoder.encode_events` (its byte-exact inverse).
"""
