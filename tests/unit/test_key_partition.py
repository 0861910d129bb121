"""The router's explicit inbox partition must be the one the producer's partitioner picks for the key."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from agents.topics import key_partition


def test_key_partition_agrees_with_the_partitioner_faust_uses_for_keyed_inbox_records() -> None:
    partitioner = DefaultPartitioner()
    for partitions in (1, 3, 8, 32):
        everyone = list(range(partitions))
        for n in range(500):
            key = f"appservice-{n}".encode()
            assert key_partition(key, partitions) == partitioner(key, everyone, everyone)
