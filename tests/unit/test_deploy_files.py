"""The Docker compose file and the systemd unit, read as an operator's tools would read them."""

from __future__ import annotations

import configparser
import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text()))


def test_broker_data_survives_down_and_up_on_a_named_volume_with_a_fixed_cluster_id() -> None:
    kafka = compose()["services"]["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert f"kafka-data:{log_dirs}" in kafka["volumes"]
    assert "kafka-data" in compose()["volumes"]
    cluster_id = kafka["environment"]["CLUSTER_ID"]
    assert len(cluster_id) == 22, "a Kafka cluster id is 16 bytes in unpadded base64url"


def test_worker_state_is_on_a_named_volume_where_the_worker_keeps_it() -> None:
    worker = compose()["services"]["worker"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "APPSERVICE_STREAMS_DATA_DIR=/data" in dockerfile
    assert "worker-state:/data" in worker["volumes"]


def test_a_missing_registrations_folder_is_an_error_at_up_not_a_restart_loop() -> None:
    [bind] = [v for v in compose()["services"]["worker"]["volumes"] if isinstance(v, dict)]
    assert (bind["source"], bind["target"], bind["bind"]["create_host_path"]) == (
        "./registrations",
        "/registrations",
        False,
    )


def test_nothing_is_published_beyond_loopback() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_the_build_context_leaves_out_environments_data_and_tests() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv*", ".kafka", ".data", "**/node_modules", "tests", ".git"} <= set(ignored)


def test_systemd_restarts_on_failure_but_not_on_a_configuration_error() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy/systemd/appservice-streams-worker.service")
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "2"
    assert service["ExecStart"].split()[1:3] == ["worker", "--registrations"]


def test_the_package_carries_every_file_the_local_broker_needs() -> None:
    """`kafka start` after `pip install`: agents/kafka/* must be package data."""
    import tomllib

    from agents.local_kafka import KAFKA_FILES

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agents"]
    shipped = {path for glob in globs for path in (ROOT / "agents").glob(glob)}
    needed = set(KAFKA_FILES.iterdir())
    assert needed and needed <= shipped, sorted(str(p) for p in needed - shipped)


def test_the_monitoring_profile_provisions_grafana_with_the_prometheus_datasource_and_the_dashboard() -> None:
    services = compose()["services"]
    grafana, prometheus = services["grafana"], services["prometheus"]
    assert grafana["profiles"] == prometheus["profiles"] == ["monitoring"]
    mounts = dict(volume.removesuffix(":ro").split(":") for volume in grafana["volumes"])
    assert mounts == {
        "./deploy/grafana/provisioning": "/etc/grafana/provisioning",
        "./deploy/grafana/dashboards": "/var/lib/grafana/dashboards",
    }
    provisioning = ROOT / "deploy/grafana/provisioning"
    [source] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")  # the service beside it
    [provider] = yaml.safe_load((provisioning / "dashboards/appservice-streams.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/appservice-streams.json").read_text())
    uids = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert uids == {source["uid"]}
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/appservice-streams.json"
