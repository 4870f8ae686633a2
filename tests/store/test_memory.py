"""The in-process shared-state store."""

from __future__ import annotations

import pytest

from gateway.store import MemoryStore, Record, Store


def test_is_a_store() -> None:
    assert isinstance(MemoryStore(), Store)


def test_put_get_delete() -> None:
    s = MemoryStore()
    s.put("reg", "alice", {"contact": "sip:a@10.0.0.1", "port": 5060}, ttl=None, now=0)
    assert s.get("reg", "alice", 0) == {"contact": "sip:a@10.0.0.1", "port": 5060}
    assert s.get("reg", "bob", 0) is None
    assert s.get("other", "alice", 0) is None
    s.put("reg", "alice", {"contact": "sip:a@10.0.0.2"}, ttl=None, now=1)  # replaces whole
    assert s.get("reg", "alice", 1) == {"contact": "sip:a@10.0.0.2"}
    assert s.delete("reg", "alice")
    assert not s.delete("reg", "alice")
    assert s.get("reg", "alice", 1) is None
    assert len(s) == 0


def test_values_are_copied_both_ways() -> None:
    s = MemoryStore()
    value: dict[str, str | int] = {"a": "1"}
    s.put("ns", "k", value, ttl=None, now=0)
    value["a"] = "changed"
    got = s.get("ns", "k", 0)
    assert got == {"a": "1"}
    assert got is not None
    got["a"] = "changed too"
    assert s.get("ns", "k", 0) == {"a": "1"}
    for _, v in s.scan("ns", 0):
        v["a"] = "and again"
    assert s.get("ns", "k", 0) == {"a": "1"}


@pytest.mark.parametrize("bad", [{"a": 1.5}, {"a": None}, {"a": True}, {"a": b"x"}, {1: "x"}])
def test_only_redis_shaped_values(bad: dict[object, object]) -> None:
    with pytest.raises(TypeError):
        MemoryStore().put("ns", "k", bad, ttl=None, now=0)  # type: ignore[arg-type]


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryStore().put("ns", "k", {}, ttl=0, now=0)


def test_expired_records_vanish_and_are_handed_out_once() -> None:
    s = MemoryStore()
    s.put("ns", "a", {"n": 1}, ttl=10, now=0)
    s.put("ns", "b", {"n": 2}, ttl=5, now=0)
    s.put("ns", "c", {"n": 3}, ttl=None, now=0)
    s.put("other", "d", {"n": 4}, ttl=7, now=0)
    assert s.get("ns", "a", 9.99) == {"n": 1}
    assert s.get("ns", "a", 10) is None  # gone at its expiry time, before expire_due
    assert sorted(k for k, _ in s.scan("ns", 6)) == ["a", "c"]
    assert s.count("ns", 6) == 2
    assert s.expire_due(4) == []
    assert s.expire_due(10) == [
        Record("ns", "b", {"n": 2}),
        Record("other", "d", {"n": 4}),
        Record("ns", "a", {"n": 1}),
    ]
    assert s.expire_due(10) == []
    assert s.expire_due(10**9) == []
    assert len(s) == 1
    assert s.get("ns", "c", 10**9) == {"n": 3}


def test_refresh_postpones_expiry() -> None:
    s = MemoryStore()
    s.put("ns", "k", {"v": "old"}, ttl=10, now=0)
    s.put("ns", "k", {"v": "new"}, ttl=10, now=8)
    assert s.expire_due(12) == []
    assert s.get("ns", "k", 12) == {"v": "new"}
    assert s.expire_due(18) == [Record("ns", "k", {"v": "new"})]


def test_deleted_or_persisted_records_do_not_expire() -> None:
    s = MemoryStore()
    s.put("ns", "gone", {}, ttl=5, now=0)
    s.put("ns", "kept", {}, ttl=5, now=0)
    s.delete("ns", "gone")
    s.put("ns", "kept", {}, ttl=None, now=1)
    assert s.expire_due(100) == []
    assert s.get("ns", "kept", 100) == {}


def test_scan_is_a_snapshot() -> None:
    s = MemoryStore()
    for i in range(10):
        s.put("ns", str(i), {"i": i}, ttl=None, now=0)
    for key, _ in s.scan("ns", 0):
        s.delete("ns", key)  # mutating while scanning is allowed
    assert s.count("ns", 0) == 0
    assert list(s.scan("missing", 0)) == []


def test_repeated_refreshes_keep_memory_bounded() -> None:
    s = MemoryStore()
    for i in range(100):
        s.put("reg", f"k{i}", {"i": i}, ttl=3600, now=0)
    for t in range(1, 2000):
        for i in range(100):
            s.put("reg", f"k{i}", {"i": i}, ttl=3600, now=t)
    assert len(s) == 100
    assert len(s._heap) <= 2 * len(s) + 1024 + 1
    assert s.expire_due(1999 + 3600) and len(s) == 0


def test_stores_share_nothing() -> None:
    a, b = MemoryStore(), MemoryStore()
    a.put("ns", "k", {"v": 1}, ttl=None, now=0)
    assert b.get("ns", "k", 0) is None
    assert len(b) == 0


def test_empty_namespaces_are_dropped() -> None:
    s = MemoryStore()
    for i in range(1000):
        s.put(f"ns{i}", "k", {}, ttl=1, now=0)
    s.expire_due(1)
    assert s._data == {}
