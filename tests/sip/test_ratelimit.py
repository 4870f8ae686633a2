"""Per-source blocking after authentication failures, with bounded memory."""

from __future__ import annotations

import pytest

from gateway.sip.ratelimit import AuthFailureLimiter


def test_blocks_after_limit_failures_within_the_window() -> None:
    lim = AuthFailureLimiter(limit=3, window=60, block=300)
    assert not lim.record_failure("203.0.113.9", 0)
    assert not lim.record_failure("203.0.113.9", 10)
    assert not lim.is_blocked("203.0.113.9", 10)
    assert lim.record_failure("203.0.113.9", 20)  # the third one starts the block
    assert lim.is_blocked("203.0.113.9", 21)
    assert lim.blocked_until("203.0.113.9", 21) == 320
    assert not lim.record_failure("203.0.113.9", 22)  # already blocked
    assert lim.is_blocked("203.0.113.9", 319.9)
    assert not lim.is_blocked("203.0.113.9", 320)
    assert lim.blocked_until("203.0.113.9", 320) is None
    # Counting starts afresh after a block.
    assert not lim.record_failure("203.0.113.9", 330)
    assert not lim.is_blocked("203.0.113.9", 330)


def test_failures_spread_wider_than_the_window_do_not_block() -> None:
    lim = AuthFailureLimiter(limit=3, window=60, block=300)
    for t in (0, 40, 80, 120, 160, 200):
        assert not lim.record_failure("198.51.100.1", t)
    assert not lim.is_blocked("198.51.100.1", 200)


def test_sources_are_independent() -> None:
    lim = AuthFailureLimiter(limit=2, window=60, block=300)
    lim.record_failure("192.0.2.1", 0)
    lim.record_failure("192.0.2.1", 1)
    lim.record_failure("192.0.2.2", 1)
    assert lim.is_blocked("192.0.2.1", 2)
    assert not lim.is_blocked("192.0.2.2", 2)


def test_rejections_while_blocked_are_counted_for_log_throttling() -> None:
    lim = AuthFailureLimiter(limit=1, window=60, block=100)
    assert lim.note_rejected("192.0.2.1", 0) == 0
    lim.record_failure("192.0.2.1", 0)
    assert [lim.note_rejected("192.0.2.1", t) for t in (1, 2, 3)] == [1, 2, 3]
    assert lim.note_rejected("192.0.2.1", 100) == 0


def test_ipv6_sources_are_counted_per_prefix() -> None:
    lim = AuthFailureLimiter(limit=3, window=60, block=300)
    lim.record_failure("2001:db8:1:2::1", 0)
    lim.record_failure("2001:db8:1:2::ffff", 1)
    lim.record_failure("[2001:db8:1:2:aaaa::3]", 2)
    assert lim.is_blocked("2001:db8:1:2:dead:beef::", 3)
    assert not lim.is_blocked("2001:db8:1:3::1", 3)
    # IPv4-mapped IPv6 is the IPv4 source.
    lim.record_failure("::ffff:192.0.2.7", 0)
    lim.record_failure("192.0.2.7", 0)
    lim.record_failure("::ffff:192.0.2.7", 0)
    assert lim.is_blocked("192.0.2.7", 1)


def test_exempt_networks_are_never_blocked() -> None:
    lim = AuthFailureLimiter(limit=1, window=60, block=300, exempt=["10.20.0.0/16", "fd00::/8"])
    assert not lim.record_failure("10.20.3.4", 0)
    assert not lim.is_blocked("10.20.3.4", 0)
    assert not lim.record_failure("fd00::1", 0)
    assert not lim.is_blocked("fd00::1", 0)
    assert lim.record_failure("10.21.0.1", 0)
    assert lim.is_blocked("10.21.0.1", 0)
    assert len(lim) == 1


def test_clear_unblocks() -> None:
    lim = AuthFailureLimiter(limit=1, window=60, block=300)
    lim.record_failure("192.0.2.1", 0)
    lim.clear("192.0.2.1")
    assert not lim.is_blocked("192.0.2.1", 1)
    assert len(lim) == 0


def test_a_spray_of_a_million_sources_stays_bounded() -> None:
    lim = AuthFailureLimiter(limit=5, window=60, block=300, max_sources=1000)
    lim.record_failure("198.51.100.200", 0)
    for _ in range(5):
        lim.record_failure("203.0.113.66", 0)  # blocked before the spray
    for i in range(1_000_000):
        ip = f"{10 + (i >> 24)}.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        lim.record_failure(ip, 1 + i * 1e-6)
        if i % 100_000 == 0:
            assert len(lim) <= 2000
    assert len(lim) <= 2000
    # Single failures from new addresses do not flush a blocked one.
    assert lim.is_blocked("203.0.113.66", 2)


def test_expired_entries_are_dropped_as_time_passes() -> None:
    lim = AuthFailureLimiter(limit=3, window=10, block=20)
    for i in range(500):
        lim.record_failure(f"192.0.2.{i % 250}", 0)
    lim.record_failure("198.51.100.1", 0)
    lim.record_failure("198.51.100.1", 0)
    lim.record_failure("198.51.100.1", 0)
    assert len(lim) == 251
    lim.record_failure("198.51.100.2", 100)  # pruning happens on the next failure
    assert len(lim) == 1


def test_blocked_table_is_bounded_too() -> None:
    lim = AuthFailureLimiter(limit=1, window=60, block=300, max_sources=100)
    for i in range(10_000):
        lim.record_failure(f"10.0.{i >> 8}.{i & 255}", 0)
    assert len(lim) <= 200


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        AuthFailureLimiter(limit=0, window=60, block=300)
    with pytest.raises(ValueError):
        AuthFailureLimiter(limit=3, window=0, block=300)
    with pytest.raises(ValueError):
        AuthFailureLimiter(limit=3, window=60, block=300, ipv6_prefix=0)
