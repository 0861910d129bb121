"""A Synapse module that feeds the appservice-streams input topic with room events.

Load it in ``homeserver.yaml``::

    modules:
      - module: appservice_streams_synapse.FeedModule
        config:
          bootstrap_servers: kafka1:9092
          topic: matrix.events

It imports nothing from Synapse at module level and nothing from the worker
(faust, aiohttp, rocksdict): Synapse's environment needs only confluent-kafka.
"""

from appservice_streams_synapse.module import FeedModule

__all__ = ["FeedModule"]
