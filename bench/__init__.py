"""The benchmark: the real worker against a real broker and real loopback appservices.

``python -m bench`` (or ``appservice-streams bench``) runs the scenarios of
issue 4 (throughput, latency, catch-up, isolation, recovery, memory) and the
two baselines, prints a table and writes JSON and a PNG under ``bench-results/``.
Figures are reported against their targets; nothing here asserts on them.
"""
