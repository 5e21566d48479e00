"""OSC address patterns: OSC 1.0 semantics, and time linear in the pattern's size whatever a subscriber sends."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oscbridge.osc.pattern import AddressPattern
from oscbridge.plugins.fanout import MAX_PATTERNS, MAX_SUBSCRIBERS, Fanout, FanoutFull
from tests.hub_support import free_block


@pytest.mark.parametrize(("pattern", "matches", "misses"), [
    ("/aiplayer/*", ["/aiplayer/telemetry", "/aiplayer/rms"], ["/aiplayer/chat/request", "/bridge/event/plugin"]),
    ("/aiplayer/*/*", ["/aiplayer/chat/request"], ["/aiplayer/rms"]),
    ("/bridge/event/*", ["/bridge/event/plugin", "/bridge/event/assigned"], ["/bridge/events/plugin"]),
    ("/aiplayer/{telemetry,rms}", ["/aiplayer/telemetry", "/aiplayer/rms"], ["/aiplayer/rms_response"]),
    ("/aiplayer/rms?response", ["/aiplayer/rms_response"], ["/aiplayer/rms/response", "/aiplayer/rmsresponse"]),
    ("/aiplayer/[p-r]*", ["/aiplayer/rms", "/aiplayer/port_confirmed"], ["/aiplayer/telemetry"]),
    ("/aiplayer/[!p-r]*", ["/aiplayer/telemetry"], ["/aiplayer/rms", "/aiplayer//x"]),
    ("/a.b/c+d", ["/a.b/c+d"], ["/aXb/c+d", "/a.b/cd"]),
])
def test_osc_address_patterns(pattern: str, matches: list[str], misses: list[str]) -> None:
    compiled = AddressPattern(pattern)
    assert all(compiled.matches(a) for a in matches)
    assert not any(compiled.matches(a) for a in misses)


@pytest.mark.parametrize("pattern", ["/aiplayer/[abc", "/aiplayer/{a,b"])
def test_unclosed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="unclosed"):
        AddressPattern(pattern)


def test_a_pattern_of_many_stars_cannot_stall_the_bridge() -> None:
    # As a regular expression, 14 stars took 61 ms on this address and each 2 more took 4x as long.
    pattern = AddressPattern("/aiplayer/" + "*" * 200 + "?*[a-z]*" * 20 + "x")
    started = time.perf_counter()
    for _ in range(100):
        assert not pattern.matches("/aiplayer/telemetry_of_a_rather_long_track_name")
    assert time.perf_counter() - started < 1.0  # ~0.2 ms each here; exponential would never finish


@settings(derandomize=True, max_examples=300, deadline=None)
@given(st.text("ab*?", max_size=8), st.text("ab", max_size=8))
def test_stars_and_question_marks_match_like_fnmatch_within_a_part(pattern: str, text: str) -> None:
    import fnmatch

    assert AddressPattern("/" + pattern).matches("/" + text) == fnmatch.fnmatchcase(text, pattern)


def test_subscribers_and_patterns_are_capped() -> None:
    fanout = Fanout(ttl=10.0, max_errors=3)
    base = free_block(1)
    try:
        for n in range(MAX_PATTERNS):
            fanout.subscribe(("127.0.0.1", base), f"/aiplayer/p{n}", 0.0)
        with pytest.raises(FanoutFull, match="patterns"):
            fanout.subscribe(("127.0.0.1", base), "/aiplayer/one_more", 0.0)
        fanout.subscribe(("127.0.0.1", base), "/aiplayer/p0", 1.0)  # renewing an existing one is fine
        for port in range(20000, 20000 + MAX_SUBSCRIBERS - 1):
            fanout.subscribe(("127.0.0.1", port), "/x", 0.0)
        with pytest.raises(FanoutFull, match="subscribers"):
            fanout.subscribe(("127.0.0.1", 30000), "/x", 0.0)
    finally:
        fanout.close()
