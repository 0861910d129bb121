"""The imperative shell: Faust agents, Kafka topics, RocksDB tables, HTTP.

Imports point from here into ``streams`` and never the other way.
"""
