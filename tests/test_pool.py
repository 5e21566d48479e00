"""Units of the plugin hub without a bridge: the port pool, the instance registry, fan-out routes, the levels table."""

from __future__ import annotations

import socket

import pytest

from oscbridge.plugins.fanout import Fanout
from oscbridge.plugins.levels import MAX_TRACKS, Levels, to_dbfs
from oscbridge.plugins.pool import PortPool, port_is_bindable
from oscbridge.plugins.registry import Instance, InstanceRegistry, RegistryFull
from oscbridge.ratelimit import TokenBucket
from oscbridge.typedefs import PluginState
from tests.hub_support import free_block


def pool_of(size: int, busy: frozenset[int] = frozenset()) -> PortPool:
    return PortPool(9000, 9000 + size - 1, lambda port: port not in busy)


def test_lowest_free_port_first_and_released_ports_come_back() -> None:
    pool = pool_of(4)
    assert [pool.allocate(f"p{i}", 0.0, 60.0)[0] for i in range(3)] == [9000, 9001, 9002]
    assert pool.release(9001, "p1")
    assert pool.allocate("p3", 0.0, 60.0)[0] == 9001
    assert pool.allocate("p4", 0.0, 60.0)[0] == 9003
    assert pool.allocate("p5", 0.0, 60.0) == (None, [])  # exhausted


def test_a_stale_release_does_not_free_someone_elses_port() -> None:
    pool = pool_of(2)
    pool.allocate("a", 0.0, 60.0)
    assert not pool.release(9000, "b")
    assert pool.owner_of(9000) == "a"


def test_busy_ports_are_quarantined_and_skipped_until_the_quarantine_ends() -> None:
    pool = pool_of(3, busy=frozenset({9000}))
    port, found = pool.allocate("a", 100.0, 60.0)
    assert port == 9001
    assert [(q.port, q.until) for q in found] == [(9000, 160.0)]
    assert pool.is_quarantined(9000, 159.0)
    pool.bindable = lambda port: True  # the other process went away
    assert pool.allocate("b", 159.0, 60.0)[0] == 9002  # still quarantined
    pool.release(9002, "b")
    assert pool.allocate("b", 161.0, 60.0)[0] == 9000  # quarantine over


def test_a_failed_port_is_quarantined_not_handed_to_the_next_plugin() -> None:
    pool = pool_of(3)
    pool.allocate("a", 0.0, 60.0)
    pool.quarantine(9000, "the plugin could not bind it", 0.0, 60.0, owner="a")
    assert pool.owner_of(9000) is None
    assert pool.allocate("b", 1.0, 60.0)[0] == 9001


def test_preferred_port_when_usable_else_lowest() -> None:
    pool = pool_of(5)
    assert pool.allocate("a", 0.0, 60.0, preferred=9003)[0] == 9003
    assert pool.allocate("b", 0.0, 60.0, preferred=9003)[0] == 9000


def test_claim_takes_a_port_back_from_quarantine_and_names_the_displaced_owner() -> None:
    pool = pool_of(3)
    pool.allocate("a", 0.0, 60.0)
    pool.quarantine(9001, "x", 0.0, 60.0)
    assert pool.claim(9000, "b") == "a"
    assert pool.claim(9001, "c") is None
    assert not pool.is_quarantined(9001, 1.0)
    assert pool.claim(9001, "c") is None  # claiming again is not a displacement


def test_bind_test_sees_a_real_socket() -> None:
    port = free_block(1)
    assert port_is_bindable("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", port))
        assert not port_is_bindable("127.0.0.1", port)


def test_routes_are_cached_until_the_subscriptions_change() -> None:
    fanout = Fanout(ttl=10.0, max_errors=3)
    port = free_block(1)
    fanout.subscribe(("127.0.0.1", port), "/aiplayer/*", 0.0)
    first = fanout.route("/aiplayer/rms")
    assert len(first) == 1 and fanout.route("/aiplayer/rms") is first
    fanout.subscribe(("127.0.0.1", port), "/bridge/event/*", 0.0)
    assert fanout.route("/bridge/event/plugin")
    assert fanout.expire(11.0) == 1
    assert fanout.route("/aiplayer/rms") == ()
    fanout.close()


def test_levels_table_is_bounded_and_sorted_by_track_number() -> None:
    levels = Levels()
    for name in ("TR10", "TR2", "TR1", "TRx"):
        record = levels.track(name)
        assert record is not None
        record.rms = 0.1
    assert [row[0] for row in levels.rows(0.0)] == ["TR1", "TR2", "TR10", "TRx"]
    for n in range(MAX_TRACKS):
        levels.track(f"TR{1000 + n}")
    assert levels.track("TR99999") is None
    levels.expire(10.0, 5.0)
    assert not levels.tracks  # none was updated within the last 5 s
    assert to_dbfs(1.0) == 0.0 and to_dbfs(0.0) == -100.0 and round(to_dbfs(0.1)) == -20


def instance(instance_id: str, state: PluginState = PluginState.REQUESTING, port: int | None = None) -> Instance:
    return Instance(instance_id, first_seen=0.0, last_heard=0.0, changed_at=0.0, port=port, state=state)


def test_the_registry_forgets_the_oldest_dead_instances_at_its_bound() -> None:
    registry = InstanceRegistry(max_instances=8)
    live = [registry.add(instance(f"live{n}", PluginState.BOUND, 9000 + n)) for n in range(4)]
    for n in range(4):
        registry.add(instance(f"dead{n}", PluginState.FAILED))
    registry.add(instance("newcomer"))  # a flood of new tempIDs cannot grow it past 8
    assert len(registry.by_id) <= 8
    assert "dead0" not in registry.by_id and all(registry.get(i.instance_id) is i for i in live)
    full = InstanceRegistry(max_instances=2)
    full.add(instance("a", PluginState.BOUND, 1))
    full.add(instance("b", PluginState.IDENTIFIED, 2))
    with pytest.raises(RegistryFull):
        full.add(instance("c"))


def test_the_token_bucket_allows_its_rate_and_bursts() -> None:
    now = [0.0]
    bucket = TokenBucket(10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.1  # one token back
    assert bucket.take() and not bucket.take()
    now[0] += 10.0  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3
    assert bucket.refused == 2 + 7
