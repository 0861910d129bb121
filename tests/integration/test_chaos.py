"""The chaos check, short: workers and the broker killed, appservices failing and hanging; nothing lost."""

from __future__ import annotations

from pathlib import Path

from agents.local_kafka import LocalKafka
from tests.chaos.run import ChaosConfig, run_chaos


async def test_a_short_chaos_run_loses_reorders_and_conflicts_nothing(kafka: LocalKafka, tmp_path: Path) -> None:
    config = ChaosConfig(
        duration_s=40, rate=50, workers=2, appservices=3, rooms=6, seed=7, drain_timeout_s=120, fault_gap_s=(1.0, 3.0)
    )
    report = await run_chaos(config, kafka, tmp_path)
    print(report.as_json())
    assert {"kill_worker", "kill_broker", "appservice_fails", "appservice_hangs"} <= set(report.faults), report.faults
    assert report.verdict.produced >= 1500
    assert report.verdict.clean(), report.as_json()
