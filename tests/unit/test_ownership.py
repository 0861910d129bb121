"""An outcome is settled in-process only while no rebalance broke the worker's ownership."""

from __future__ import annotations

from types import SimpleNamespace

from agents.ownership import Ownership


def assigned_at(count: int) -> tuple[SimpleNamespace, Ownership]:
    app = SimpleNamespace(rebalancing_count=count)
    ownership = Ownership(app)
    ownership.assigned()
    return app, ownership


def test_ownership_is_unbroken_while_no_rebalance_began() -> None:
    _, ownership = assigned_at(4)
    assert ownership.unbroken(ownership.epoch())


def test_a_revocation_breaks_ownership_at_once() -> None:
    app, ownership = assigned_at(4)
    epoch = ownership.epoch()
    app.rebalancing_count = 5  # partitions are being revoked
    assert not ownership.unbroken(epoch)
    assert ownership.epoch() is None, "nothing is owned for sure until the new assignment lands"


def test_the_next_assignment_is_a_new_epoch_and_the_old_one_stays_broken() -> None:
    app, ownership = assigned_at(4)
    epoch = ownership.epoch()
    app.rebalancing_count = 5
    ownership.assigned()  # the partition may have moved away and back
    assert ownership.epoch() == 5 and ownership.unbroken(5)
    assert not ownership.unbroken(epoch)


def test_nothing_is_owned_before_the_first_assignment() -> None:
    ownership = Ownership(SimpleNamespace(rebalancing_count=1))
    assert ownership.epoch() is None
    assert not ownership.unbroken(None)
