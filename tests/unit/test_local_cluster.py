"""The local three-broker cluster's layout: consecutive ports, a 3-voter quorum, replicated internals."""

from __future__ import annotations

from pathlib import Path

from agents.local_cluster import LocalCluster
from agents.local_kafka import LocalKafka


def properties(node: LocalKafka) -> dict[str, str]:
    lines = node._properties_text().splitlines()[1:]
    return dict(line.split("=", 1) for line in lines)


def test_nodes_use_consecutive_ports_and_one_quorum(tmp_path: Path) -> None:
    cluster = LocalCluster(root=tmp_path, port=9400)
    assert [(n.port, n.controller_port) for n in cluster.nodes] == [(9400, 9401), (9402, 9403), (9404, 9405)]
    assert cluster.bootstrap == "127.0.0.1:9400,127.0.0.1:9402,127.0.0.1:9404"
    voters = "1@127.0.0.1:9401,2@127.0.0.1:9403,3@127.0.0.1:9405"
    for number, node in enumerate(cluster.nodes, start=1):
        props = properties(node)
        assert props["node.id"] == str(number)
        assert props["controller.quorum.voters"] == voters
        assert props["log.dirs"] == str(tmp_path.resolve() / ".kafka" / "cluster" / f"node-{number}" / "data")
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert "-Xmx512m" in node._java_cmd("kafka.Kafka")


def test_the_lone_broker_keeps_its_files_and_settings(tmp_path: Path) -> None:
    lone = LocalKafka(root=tmp_path, port=9092, controller_port=9093)
    props = properties(lone)
    assert (props["node.id"], props["controller.quorum.voters"]) == ("1", "1@127.0.0.1:9093")
    assert props["log.dirs"] == str(tmp_path.resolve() / ".kafka" / "data")
    assert lone.pid_file == tmp_path.resolve() / ".kafka" / "broker.pid"
    assert (props["offsets.topic.replication.factor"], props["min.insync.replicas"]) == ("1", "1")
    assert "-Xmx1g" in lone._java_cmd("kafka.Kafka")
