"""Namespace regexes that can backtrack exponentially are found; ordinary ones are not."""

from __future__ import annotations

import re
import time

import pytest

from streams.regex_safety import nested_repetition


@pytest.mark.parametrize(
    "regex",
    [
        "@(a+)+$",
        "@(a*)*:example.org",
        "(.*a)*",
        "@(x|(a+))+$",
        "@((ab)*c*)+",
        "@(?=(a+)+)b",
        "@(a{1,}){2,}",
        "@(?:(?:a+)b?)+$",
    ],
)
def test_nested_unbounded_repetition_is_found(regex: str) -> None:
    assert nested_repetition(regex)


@pytest.mark.parametrize(
    "regex",
    [
        "@bridge_.*:example.org",
        "@_discord_[0-9]+:example\\.org",
        "@(irc|freenode)_.*:example.org",
        "!.*",
        "#telegram_.+:example.org",
        "@(a+){1,3}$",  # bounded outer repetition: polynomial at worst
        "@(a++)+$",  # possessive: never backtracks into
        "@(?>a+)+$",  # atomic group
    ],
)
def test_ordinary_regexes_pass(regex: str) -> None:
    assert not nested_repetition(regex)


def test_the_found_regex_really_backtracks_and_the_check_is_quick() -> None:
    """Guards the premise and the private parser the check walks (``re._parser``)."""
    pattern = re.compile("@(a+)+$")
    started = time.perf_counter()
    assert pattern.match("@" + "a" * 18 + "!") is None
    slow = time.perf_counter() - started
    started = time.perf_counter()
    assert nested_repetition("@(a+)+$")
    assert time.perf_counter() - started < slow
