"""The collector policy (api/gc_policy.py): what is alive after start-up is frozen; channels
opened since the last look are frozen after a young collection; frozen reference cycles left
by closed channels are collected by a thaw, only after enough closed and not too often."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from voipcloud.api import gc_policy
from voipcloud.api.gc_policy import CollectorPolicy


class Node:  # a stand-in for a channel's objects: weakly referenceable, may form cycles
    def __init__(self) -> None:
        self.peer: Node | None = None


class Fleet:
    def __init__(self) -> None:
        self.opened = 0
        self.open = 0
        self.now = 1000.0

    def policy(self) -> CollectorPolicy:
        return CollectorPolicy(lambda: self.opened, lambda: self.open, clock=lambda: self.now)


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # other tests in this process see the collector as it was


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    return weakref.ref(a)


def test_start_up_freezes_what_is_alive() -> None:
    fleet = Fleet()
    kept = [Node() for _ in range(2000)]
    fleet.policy().started()
    assert gc.get_freeze_count() >= len(kept)
    assert len(gc.get_objects(generation=2)) < 100  # nothing old left to walk


def test_opened_channels_are_frozen_and_a_quiet_tick_does_nothing() -> None:
    fleet = Fleet()
    policy = fleet.policy()
    policy.started()
    policy.tick()  # nothing opened since start
    assert policy.stats.freezes == 0
    before = gc.get_freeze_count()
    kept = [Node() for _ in range(3000)]  # the new channels' objects
    fleet.opened, fleet.open = 3000, 3000
    policy.tick()
    assert policy.stats.freezes == 1
    assert gc.get_freeze_count() >= before + len(kept)
    policy.tick()  # no new channel: no new freeze
    assert policy.stats.freezes == 1


def test_young_garbage_cycles_are_collected_before_a_freeze() -> None:
    fleet = Fleet()
    policy = fleet.policy()
    policy.started()
    dead = _cycle()  # garbage already (only the cycle holds it), not yet collected
    fleet.opened = fleet.open = 10
    policy.tick()
    assert dead() is None  # collected by the young collection, not frozen with the living


def test_a_thaw_collects_cycles_of_closed_channels_only_when_enough_closed() -> None:
    fleet = Fleet()
    policy = fleet.policy()
    policy.started()
    channels = [Node() for _ in range(2000)]
    for a, b in zip(channels[::2], channels[1::2], strict=True):
        a.peer, b.peer = b, a  # each channel's objects refer to each other
    probe = weakref.ref(channels[0])
    fleet.opened = fleet.open = 2000
    policy.tick()
    assert policy.stats.freezes == 1

    del channels  # every channel closes: their cycles are frozen garbage now
    fleet.open = 0
    fleet.now += gc_policy.THAW_MIN_SECONDS / 2
    policy.tick()  # enough closed, but too soon after the last thaw (start)
    assert policy.stats.thaws == 0
    assert probe() is not None  # still waiting, frozen

    fleet.now += gc_policy.THAW_MIN_SECONDS
    policy.tick()
    assert policy.stats.thaws == 1
    assert probe() is None  # collected
    policy.tick()  # nothing closed since the thaw: no second one
    assert policy.stats.thaws == 1


def test_a_few_closed_channels_never_cost_a_full_pause() -> None:
    fleet = Fleet()
    policy = fleet.policy()
    policy.started()
    fleet.opened, fleet.open = 400, 400
    policy.tick()
    fleet.open = 0  # all closed: 100 %, but fewer than THAW_MIN_CLOSED
    fleet.now += 10 * gc_policy.THAW_MIN_SECONDS
    policy.tick()
    assert policy.stats.thaws == 0


def test_what_grows_old_after_start_up_settles_on_a_check() -> None:
    fleet = Fleet()
    policy = fleet.policy()
    policy.started()
    built_later = [Node() for _ in range(gc_policy.SETTLE_OBJECTS + 1000)]  # caches, templates
    gc.collect()  # survived a full collection: in the old generation, walked by every one
    assert len(gc.get_objects(generation=2)) >= len(built_later)
    fleet.now += gc_policy.SETTLE_CHECK_SECONDS / 2
    policy.tick()  # not yet time to look
    assert policy.stats.settles == 0
    fleet.now += gc_policy.SETTLE_CHECK_SECONDS
    policy.tick()
    assert policy.stats.settles == 1
    assert len(gc.get_objects(generation=2)) < 100  # a full collection walks nothing old now
    assert policy.stats.freezes == 0  # no channel opened: the settle alone froze them


def test_a_small_old_generation_is_left_alone_and_its_garbage_is_not_frozen() -> None:
    fleet = Fleet()
    policy = fleet.policy()
    policy.started()
    few = [Node() for _ in range(100)]
    gc.collect()
    fleet.now += gc_policy.SETTLE_CHECK_SECONDS
    policy.tick()
    assert policy.stats.settles == 0  # too few to be worth it
    assert gc.get_objects(generation=2)  # still walked, as before

    holder = [_cycle_kept() for _ in range(3)]
    gc.collect()  # the cycles are old now, and alive
    dead = [weakref.ref(pair) for pair in holder]
    del holder  # garbage in the old generation
    kept = [Node() for _ in range(gc_policy.SETTLE_OBJECTS)]
    gc.collect(1)
    frozen_before = gc.get_freeze_count()
    assert policy.settle()
    assert all(ref() is None for ref in dead)  # collected first, not frozen with the living
    assert gc.get_freeze_count() >= frozen_before + len(kept) + len(few)  # the living frozen


def _cycle_kept() -> Node:
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    return a


def test_settles_that_keep_coming_end_in_a_thaw_so_frozen_garbage_stays_bounded() -> None:
    fleet = Fleet()
    policy = fleet.policy()
    policy.started()
    probes = []
    for _ in range(gc_policy.SETTLES_BEFORE_THAW):
        # a churning cache: its entries (reference cycles) live past a settle, then are dropped
        entries = [_cycle_kept() for _ in range(gc_policy.SETTLE_OBJECTS // 2 + 10)]
        probes.append(weakref.ref(entries[0]))
        gc.collect()
        fleet.now += gc_policy.SETTLE_CHECK_SECONDS
        policy.tick()
        del entries  # frozen garbage now: only a thaw collects it
    assert policy.stats.settles == gc_policy.SETTLES_BEFORE_THAW
    assert policy.stats.thaws == 0
    assert all(probe() is not None for probe in probes)  # waiting, frozen

    more = [_cycle_kept() for _ in range(gc_policy.SETTLE_OBJECTS)]
    gc.collect()
    fleet.now += gc_policy.THAW_MIN_SECONDS
    policy.tick()
    assert policy.stats.thaws == 1  # this time a thaw, not a settle
    assert policy.stats.settles == gc_policy.SETTLES_BEFORE_THAW
    assert all(probe() is None for probe in probes)  # the churned entries are collected
    assert more[0].peer is not None
