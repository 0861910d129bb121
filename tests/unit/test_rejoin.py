"""After librdkafka declared the router's consumer dead: rejoin, unless it keeps dying (streams.rejoin)."""

from __future__ import annotations

import pytest

from streams.rejoin import REJOIN_LIMIT, REJOIN_WINDOW_S, GiveUp, Rejoin, after_consumer_died


@pytest.mark.parametrize(
    ("earlier", "now", "expected"),
    [
        ((), 100.0, Rejoin((100.0,))),  # the failover race: once
        ((100.0, 150.0), 200.0, Rejoin((100.0, 150.0, 200.0))),  # up to the limit within the window
        ((100.0, 150.0, 200.0), 250.0, GiveUp(4, REJOIN_WINDOW_S)),  # a fourth within 300 s: a shared id
        ((100.0, 150.0, 200.0), 400.0, Rejoin((150.0, 200.0, 400.0))),  # the first left the window
        ((0.0, 1.0, 2.0), 2.0 + REJOIN_WINDOW_S + 1, Rejoin((2.0 + REJOIN_WINDOW_S + 1,))),  # node kills far apart
    ],
)
def test_after_consumer_died(earlier: tuple[float, ...], now: float, expected: Rejoin | GiveUp) -> None:
    assert after_consumer_died(earlier, now) == expected


def test_the_limit_counts_rejoins() -> None:
    deaths: tuple[float, ...] = ()
    for n in range(REJOIN_LIMIT):
        decision = after_consumer_died(deaths, float(n))
        assert isinstance(decision, Rejoin)
        deaths = decision.deaths
    assert after_consumer_died(deaths, float(REJOIN_LIMIT)) == GiveUp(REJOIN_LIMIT + 1, REJOIN_WINDOW_S)
