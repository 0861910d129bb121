"""bench.results and bench.report: ratios, pass/miss, the table and the JSON document."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bench.profile import parse_folded, short, top_frames
from bench.progress import render
from bench.report import document, format_table, format_value, panel_names, rows, write_json
from bench.results import Figure, ScenarioResult, Target


@pytest.mark.parametrize(
    ("value", "target", "status", "ratio"),
    [
        (8.0, Target(10.0, "<="), "pass", 0.8),
        (12.0, Target(10.0, "<="), "miss", 1.2),
        (12_000.0, Target(10_000.0, ">="), "pass", 1.2),
        (9_000.0, Target(10_000.0, ">="), "miss", 0.9),
        (10.0, Target(10.0, "<="), "pass", 1.0),
        (5.0, None, "info", None),
        (None, Target(10.0, "<="), "n/a", None),
    ],
)
def test_status_and_ratio_follow_the_target_direction(
    value: float | None, target: Target | None, status: str, ratio: float | None
) -> None:
    figure = Figure("s", "f", value, "ms", target)
    assert figure.status == status
    assert figure.ratio == (None if ratio is None else pytest.approx(ratio))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (12345.6, "12,346"),
        (250.0, "250"),
        (123.45, "123.5"),
        (3.14159, "3.14"),
        (0.012345, "0.0123"),
        (0, "0.00"),
    ],
)
def test_format_value(value: float | None, text: str) -> None:
    assert format_value(value) == text


def _result() -> ScenarioResult:
    result = ScenarioResult("latency")
    result.add("p99", 60.0, "ms", Target(50.0, "<="))
    result.add("samples", 1000, "events", note="after warm-up")
    return result


def test_table_has_one_aligned_line_per_figure_with_target_ratio_and_status() -> None:
    lines = format_table([_result()]).splitlines()
    assert lines[0].split() == ["scenario", "figure", "value", "unit", "target", "ratio", "status"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split() == ["latency", "p99", "60", "ms", "<=", "50", "1.20", "miss"]
    assert "(after warm-up)" in lines[3] and lines[3].rstrip().endswith("info")


def test_a_failed_scenario_shows_as_an_error_row() -> None:
    failed = ScenarioResult("memory", error="RuntimeError: worker exited with 1\ntraceback…")
    assert rows([failed]) == [("memory", "ERROR", "", "", "", "", "RuntimeError: worker exited with 1")]


def test_json_document_carries_machine_targets_ratios_and_counts(tmp_path: Path) -> None:
    doc = document([_result()], started="2026-11-28T00:00:00+00:00", machine={"nproc": 2}, argv=["--quick"], quick=True)
    path = tmp_path / "out" / "r.json"
    write_json(doc, path)
    loaded = orjson.loads(path.read_bytes())
    assert loaded["machine"] == {"nproc": 2}
    assert loaded["summary"] == {"figures": 2, "pass": 0, "miss": 1, "errors": []}
    p99 = loaded["scenarios"][0]["figures"][0]
    assert p99["target"] == {"bound": 50.0, "direction": "<=", "against": "absolute"}
    assert (p99["ratio"], p99["status"]) == (1.2, "miss")


def test_progress_line_shows_bar_percentage_and_counts() -> None:
    line = render("catch-up: draining", 250, 1000, 2.0, "ev")
    assert "[#######" in line and " 25%" in line and "250/1,000 ev" in line


def test_profile_tables_count_self_and_inclusive_samples() -> None:
    stacks = parse_folded(
        [
            "main (a.py:1);route (agents/router.py:10);decode (streams/envelope.py:5) 3",
            "main (a.py:1);route (agents/router.py:12) 1",
            "bad line",
        ]
    )
    own, inclusive = top_frames(stacks)
    assert own[0].name == "decode (streams/envelope.py)" and own[0].self_pct == 75.0
    by_name = {f.name: f.total_pct for f in inclusive}
    assert by_name["route (agents/router.py)"] == 100.0  # line numbers do not split a frame
    assert short("put (/x/site-packages/aiohttp/client.py:9)") == "put (aiohttp/client.py)"


def test_a_baseline_series_is_drawn_on_its_scenarios_panel_not_on_its_own() -> None:
    line = {"t_s": [0.0], "p50_ms": [1.0], "p99_ms": [2.0]}
    series = {
        "latency": line,
        "latency baseline (a)": line,
        "latency at 500/s": line,
        "latency at 500/s baseline (a)": line,
        "isolation": {"t_s": []},
    }
    assert panel_names(series) == ["latency", "latency at 500/s"]
