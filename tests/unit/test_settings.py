"""Settings from the environment: defaults, numbers, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import from_environment

BASE = {"MATRIX_SERVER_NAME": "example.org"}


def settings(**env: str) -> object:
    return from_environment(Path("registrations"), {**BASE, **env})


def test_defaults_bound_the_fetch_wait_and_serve_the_http_api_on_loopback() -> None:
    s = from_environment(Path("registrations"), BASE)
    assert (s.fetch_max_wait_ms, s.http_host, s.http_port) == (10, "127.0.0.1", 8009)


def test_a_http_port_of_zero_turns_the_api_off_rather_than_failing() -> None:
    assert from_environment(Path("r"), {**BASE, "APPSERVICE_STREAMS_HTTP_PORT": "0"}).http_port == 0


@pytest.mark.parametrize(
    "name", ["APPSERVICE_STREAMS_HTTP_PORT", "APPSERVICE_STREAMS_FETCH_MAX_WAIT_MS", "APPSERVICE_STREAMS_PARTITIONS"]
)
def test_a_non_numeric_value_is_a_config_error_naming_the_variable(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        settings(**{name: "eight"})


def test_a_negative_port_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_HTTP_PORT"):
        settings(APPSERVICE_STREAMS_HTTP_PORT="-1")


def test_a_zero_fetch_wait_is_refused() -> None:
    with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_FETCH_MAX_WAIT_MS"):
        settings(APPSERVICE_STREAMS_FETCH_MAX_WAIT_MS="0")


def test_a_missing_server_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MATRIX_SERVER_NAME"):
        from_environment(Path("r"), {})


@pytest.mark.parametrize("raw", ["80.5", "99999", "65536", "1e3", " "])
def test_a_port_that_is_not_a_whole_number_from_0_to_65535_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"APPSERVICE_STREAMS_HTTP_PORT.*not a port"):
        settings(APPSERVICE_STREAMS_HTTP_PORT=raw)


def test_the_highest_port_is_accepted() -> None:
    assert from_environment(Path("r"), {**BASE, "APPSERVICE_STREAMS_HTTP_PORT": "65535"}).http_port == 65535


def test_an_appservice_ca_file_that_does_not_exist_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_APPSERVICE_CA_FILE"):
        settings(APPSERVICE_STREAMS_APPSERVICE_CA_FILE="/nonexistent/ca.pem")


def test_metrics_listen_on_loopback_port_9109_by_default_and_0_turns_them_off() -> None:
    s = from_environment(Path("r"), BASE)
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 9109)
    s = from_environment(Path("r"), {**BASE, "APPSERVICE_STREAMS_METRICS_PORT": "0"})
    assert s.metrics_port == 0
    s = from_environment(Path("r"), {**BASE, "APPSERVICE_STREAMS_METRICS_HOST": "0.0.0.0"})
    assert s.metrics_host == "0.0.0.0"


@pytest.mark.parametrize("raw", ["metrics", "-1", "65536", "9109.5"])
def test_a_metrics_port_that_is_not_a_port_is_a_config_error_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_METRICS_PORT"):
        settings(APPSERVICE_STREAMS_METRICS_PORT=raw)


def test_a_new_app_id_starts_from_the_end_of_the_input_unless_told_otherwise() -> None:
    assert from_environment(Path("r"), BASE).start_from == "latest"
    assert from_environment(Path("r"), {**BASE, "APPSERVICE_STREAMS_START_FROM": "earliest"}).start_from == "earliest"
    assert from_environment(Path("r"), BASE, start_from="earliest").start_from == "earliest"  # --from-beginning


def test_an_unknown_start_position_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_START_FROM='beginning'"):
        settings(APPSERVICE_STREAMS_START_FROM="beginning")


def test_the_lag_is_taken_every_5_s_unless_told_otherwise_and_never_every_0_s() -> None:
    assert from_environment(Path("r"), BASE).lag_interval_s == 5.0
    assert from_environment(Path("r"), {**BASE, "APPSERVICE_STREAMS_LAG_INTERVAL_S": "0.5"}).lag_interval_s == 0.5
    with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_LAG_INTERVAL_S"):
        settings(APPSERVICE_STREAMS_LAG_INTERVAL_S="0")


def test_logs_are_text_unless_json_is_asked_for_and_anything_else_is_refused() -> None:
    assert from_environment(Path("r"), BASE).log_format == "text"
    assert from_environment(Path("r"), {**BASE, "APPSERVICE_STREAMS_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="APPSERVICE_STREAMS_LOG_FORMAT='JSON'"):
        settings(APPSERVICE_STREAMS_LOG_FORMAT="JSON")
