"""A local three-broker KRaft cluster for tests of broker faults (``appservice-streams kafka start --brokers 3``).

Each node is a ``LocalKafka`` in combined broker+controller mode, the three
forming a 3-voter controller quorum: node ``i`` (1-based) listens on
``port + 2(i-1)`` for clients and the next port for the controller, all on
127.0.0.1. With the default port 9400: clients on 9400, 9402, 9404,
controllers on 9401, 9403, 9405. Every node keeps its files apart, and the
jars are shared with the lone broker::

    .kafka/libs/                     shared runtime classpath
    .kafka/cluster/cluster.id        the id every node was formatted with
    .kafka/cluster/node-<i>/         server.properties, data/, logs/, broker.pid

Kafka's internal topics are replicated 3 times with ``min.insync.replicas``
2, as on a production cluster, so one node may be down and every write
still succeeds. Heaps are 512 MB per node (three JVMs on a small machine).

Typical use::

    cluster = LocalCluster(root=Path("."), port=9400)
    cluster.start()                  # idempotent; returns once all brokers answer
    cluster.kill(1)                  # SIGKILL node 2 (a crash)
    cluster.start()                  # starts what is not running
    cluster.stop()
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from agents.local_kafka import BrokerStatus, LocalKafka, LocalKafkaError, _random_cluster_id, _signal, _wait_exit

__all__ = ["LocalCluster", "describe"]

log = logging.getLogger(__name__)

NODE_HEAP = "512m"
_REPLICATED = (
    ("default.replication.factor", "3"),
    ("min.insync.replicas", "2"),
    ("offsets.topic.replication.factor", "3"),
    ("transaction.state.log.replication.factor", "3"),
    ("transaction.state.log.min.isr", "2"),
    ("share.coordinator.state.topic.replication.factor", "3"),
    ("share.coordinator.state.topic.min.isr", "2"),
)


@dataclass(frozen=True)
class LocalCluster:
    """``brokers`` combined KRaft nodes under ``root/.kafka/cluster``, on ports from ``port`` upward."""

    root: Path
    port: int = 9400
    brokers: int = 3

    @property
    def home(self) -> Path:
        return self.root.resolve() / ".kafka" / "cluster"

    @property
    def bootstrap(self) -> str:
        """Every node's client address: clients find the others from any one."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def _cluster_id_file(self) -> Path:
        return self.home / "cluster.id"

    @cached_property
    def nodes(self) -> list[LocalKafka]:
        return self._nodes(None)

    def _nodes(self, cluster_id: str | None) -> list[LocalKafka]:
        ports = [(self.port + 2 * i, self.port + 2 * i + 1) for i in range(self.brokers)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{controller}" for i, (_, controller) in enumerate(ports))
        return [
            LocalKafka(
                root=self.root,
                port=port,
                controller_port=controller,
                node_id=i + 1,
                quorum_voters=voters,
                node_dir=f"cluster/node-{i + 1}",
                cluster_id=cluster_id,
                extra_properties=_REPLICATED,
                max_heap=NODE_HEAP,
            )
            for i, (port, controller) in enumerate(ports)
        ]

    # --------------------------------------------------------------- lifecycle

    def start(self, timeout_s: float = 120) -> None:
        """Start every node that is not running (fetching jars and formatting storage if needed).

        Idempotent, and the way to bring back a node after ``kill``. Returns
        once every broker answers and the cluster's metadata lists them all.

        Raises:
            LocalKafkaError: as ``LocalKafka.start`` for any node, or the
                cluster did not list every broker within ``timeout_s``.
        """
        with self.nodes[0]._lock():
            self.nodes[0]._fetch_jars_locked()
            nodes = self._nodes(self._cluster_id())
            launched: list[tuple[LocalKafka, int]] = []
            for node in nodes:
                pid = node._our_pid()
                if pid is not None and node._read_properties() != node._properties_text():
                    raise LocalKafkaError(
                        f"node {node.node_id} (pid {pid}) runs with other settings; `kafka stop --brokers"
                        f" {self.brokers}` first"
                    )
                if pid is None:
                    node._check_ports_free()
                    node._write_properties()
                    node._format_storage()
                    pid = node._launch()
                launched.append((node, pid))
            # All launched before any wait: no node answers before a quorum of controllers is up.
            deadline = time.monotonic() + timeout_s
            for node, pid in launched:
                node._wait_ready(pid, max(1.0, deadline - time.monotonic()))
            self._wait_all_listed(deadline)

    def _cluster_id(self) -> str:
        """The id the nodes were formatted with; a new one if none is formatted yet."""
        try:
            return self._cluster_id_file.read_text().strip()
        except FileNotFoundError:
            pass
        cluster_id = _random_cluster_id()
        self.home.mkdir(parents=True, exist_ok=True)
        self._cluster_id_file.write_text(cluster_id + "\n")
        return cluster_id

    def _wait_all_listed(self, deadline: float) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        listed = 0
        while True:
            with contextlib.suppress(KafkaException):
                listed = len(admin.list_topics(timeout=5).brokers)
                if listed >= self.brokers:
                    log.info("cluster ready on %s (%d brokers)", self.bootstrap, listed)
                    return
            if time.monotonic() >= deadline:
                raise LocalKafkaError(f"the cluster on {self.bootstrap} lists {listed} of {self.brokers} brokers")
            time.sleep(0.2)

    def stop(self, timeout_s: float = 30) -> None:
        """Stop every node (SIGTERM, then SIGKILL after ``timeout_s``). Idempotent.

        Raises:
            LocalKafkaError: a node survived SIGKILL or could not be signalled.
        """
        with self.nodes[0]._lock():
            # SIGTERM to all first: a node stopping alone waits for the others to take its leaderships.
            for node in self.nodes:
                pid = node._our_pid()
                if pid is not None:
                    _signal(pid, signal.SIGTERM)
            for node in self.nodes:
                node._stop_locked(timeout_s)

    def kill(self, index: int) -> int:
        """SIGKILL node ``index`` (0-based), as a crash would; return its pid.

        Raises:
            LocalKafkaError: the node is not running, or survived SIGKILL.
        """
        node = self.nodes[index]
        pid = node._our_pid()
        if pid is None:
            raise LocalKafkaError(f"node {node.node_id} is not running")
        _signal(pid, signal.SIGKILL)
        if not _wait_exit(pid, 10):
            raise LocalKafkaError(f"node {node.node_id} (pid {pid}) survived SIGKILL")
        return pid

    def reset(self) -> None:
        """Stop every node and delete the cluster's data (jars are kept).

        Raises:
            LocalKafkaError: as ``stop``.
        """
        self.stop()
        with self.nodes[0]._lock():
            for node in self.nodes:
                shutil.rmtree(node.data_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                self._cluster_id_file.unlink()

    def status(self) -> list[BrokerStatus]:
        """Each node's status, in order. Raises nothing."""
        return [node.status() for node in self.nodes]


def describe(statuses: list[BrokerStatus], home: Path) -> str:
    """One readable line per node for ``kafka status --brokers N``."""
    lines = []
    for number, status in enumerate(statuses, start=1):
        if status.running:
            state = f"running (pid {status.pid})"
        elif status.answering:
            state = f"not started from {home}, but the port answers (another process)"
        else:
            state = "not running"
        lines.append(f"node {number} on 127.0.0.1:{status.port}: {state}")
    return "\n".join(lines)
