"""appservice-streams core: Matrix appservice delivery logic, free of I/O.

Everything in this package is plain Python: it never imports faust, aiohttp,
aiokafka, confluent_kafka, rocksdict, asyncio, socket, subprocess or threading,
nor anything from ``agents`` (the shell). ``tests/unit/test_layers.py`` holds
the contract, and that no module imports itself through others.
"""
