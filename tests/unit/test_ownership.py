"""An outcome is settled in-process only while no rebalance broke the worker's ownership."""

from __future__ import annotations

from types import SimpleNamespace

from agents.ownership import Ownership


def test_ownership_is_unbroken_while_no_rebalance_began() -> None:
    app = SimpleNamespace(rebalancing=False, rebalancing_count=4)
    ownership = Ownership(app)
    epoch = ownership.epoch()
    assert ownership.unbroken(epoch)


def test_a_rebalance_in_progress_breaks_ownership() -> None:
    app = SimpleNamespace(rebalancing=False, rebalancing_count=4)
    ownership = Ownership(app)
    epoch = ownership.epoch()
    app.rebalancing, app.rebalancing_count = True, 5
    assert not ownership.unbroken(epoch)


def test_a_finished_rebalance_still_broke_ownership() -> None:
    app = SimpleNamespace(rebalancing=False, rebalancing_count=4)
    ownership = Ownership(app)
    epoch = ownership.epoch()
    app.rebalancing_count = 5  # revoked, reassigned, recovered: the partition may have moved and back
    assert not ownership.unbroken(epoch)


def test_nothing_is_owned_for_sure_during_a_rebalance() -> None:
    ownership = Ownership(SimpleNamespace(rebalancing=True, rebalancing_count=5))
    assert ownership.epoch() is None
    assert not ownership.unbroken(None)
