"""Reading a worker process's ``/metrics`` (and probes) in integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.worker_process import WorkerProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def get(worker: WorkerProcess, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{worker.metrics_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def scrape(worker: WorkerProcess) -> Samples:
    status, text = await get(worker, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(("appservice_streams_" + name, frozenset(labels.items())))


async def until(worker: WorkerProcess, check: Callable[[Samples], bool], timeout_s: float, what: str) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await scrape(worker)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            shown = {k: v for k, v in samples.items() if "appservice" in dict(k[1]) or "lag" in k[0]}
            raise AssertionError(f"{what} not seen within {timeout_s} s; last scrape: {shown}")
        await asyncio.sleep(0.2)
