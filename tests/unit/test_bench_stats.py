"""bench.stats: percentiles, rates, bins and the line fit, against hand-computed answers."""

from __future__ import annotations

import pytest

from bench.stats import bins, linear_fit, median, overall_rate, percentile, steady_rate, summarize


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),  # halfway between ranks 1 and 2
        ([float(n) for n in range(1, 101)], 99, 99.01),  # numpy.percentile(range(1, 101), 99)
        ([float(n) for n in range(1, 101)], 50, 50.5),
    ],
)
def test_percentile_interpolates_between_ranks_like_numpy(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


@pytest.mark.parametrize(("values", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_no_values_or_q_out_of_range(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_median_sorts_first() -> None:
    assert median([9.0, 1.0, 5.0]) == 5.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_summarize_reports_count_p50_p99_max_mean_and_none_for_nothing() -> None:
    summary = summarize(float(n) for n in range(1, 101))
    assert summary is not None
    assert (summary.count, summary.p50, summary.max, summary.mean) == (100, 50.5, 100.0, 50.5)
    assert summary.p99 == pytest.approx(99.01)
    assert summarize([]) is None


def test_steady_rate_uses_the_10th_to_90th_percentile_of_arrivals() -> None:
    # 101 arrivals, one per millisecond, then a straggler a second later.
    arrivals = [n * 1_000_000 for n in range(101)] + [2_000_000_000]
    # index 10 → 90 of 102 sorted arrivals: 80 events in 80 ms.
    assert steady_rate(arrivals) == pytest.approx(1000.0)


def test_steady_rate_is_none_for_too_few_arrivals_or_one_instant() -> None:
    assert steady_rate([1, 2, 3]) is None
    assert steady_rate([5] * 20) is None


def test_overall_rate() -> None:
    assert overall_rate(500, 0, 250_000_000) == pytest.approx(2000.0)
    assert overall_rate(500, 10, 10) is None


def test_bins_group_by_time_and_leave_out_empty_bins() -> None:
    found = bins([0.1, 0.2, 0.4, 1.7], [1.0, 3.0, 2.0, 10.0], 0.5)
    assert [(b.start_s, b.count, b.p50, b.max) for b in found] == [(0.0, 3, 2.0, 3.0), (1.5, 1, 10.0, 10.0)]


def test_bins_refuse_mismatched_input_and_a_zero_width() -> None:
    with pytest.raises(ValueError):
        bins([1.0], [], 1.0)
    with pytest.raises(ValueError):
        bins([1.0], [1.0], 0)


def test_linear_fit_recovers_a_line_and_refuses_a_vertical_one() -> None:
    slope, intercept = linear_fit([0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 5.0, 7.0])
    assert (slope, intercept) == pytest.approx((2.0, 1.0))
    with pytest.raises(ValueError):
        linear_fit([1.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        linear_fit([1.0], [1.0])
