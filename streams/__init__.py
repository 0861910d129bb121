"""appservice-streams core: Matrix appservice delivery logic, free of I/O.

Everything in this package is plain Python: it never imports faust, aiohttp,
confluent_kafka, rocksdict or asyncio (``local_kafka`` and ``producer`` are the
two documented exceptions: they are client-side tools, not part of the worker's
decision making).
"""
