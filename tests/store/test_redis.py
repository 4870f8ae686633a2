"""RedisStore against the real Redis on 127.0.0.1:6379 (started by `make test` / CI).

Each test uses its own random key prefix and deletes its keys afterwards.  Waits are
bounded polls for a condition, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from conftest import GatewayProcess, free_port

from gateway.sip.digest import authorization_for
from gateway.sip.message import Request, Response, parse_datagram
from gateway.store import MemoryStore, Record, RedisStore, Store
from gateway.store.redis import CHANNEL_PREFIX

REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_PORT = 6379


@pytest.fixture(scope="module")
def sync_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:{REDIS_PORT} ({exc}): run `make test`, "
                    "which starts it")
    yield client
    client.close()


@pytest.fixture
def prefix(sync_redis: redis.Redis) -> Iterator[str]:
    p = f"test:{uuid.uuid4().hex[:12]}:"
    yield p
    keys = list(sync_redis.scan_iter(match=p + "*", count=1000))
    if keys:
        sync_redis.delete(*keys)


def fast(url: str, prefix: str, node_id: str, **kw: Any) -> RedisStore:
    """A store with short timers, so liveness and retries are quick to observe."""
    opts: dict[str, Any] = dict(heartbeat=0.05, node_timeout=0.5, retry_min=0.02,
                                retry_max=0.2, connect_timeout=1.0)
    opts.update(kw)
    return RedisStore(url, prefix, node_id=node_id, **opts)


async def until(cond: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.002)


def entries(store: RedisStore) -> dict[tuple[str, str], tuple[object, float | None]]:
    return {(ns, k): (v, e) for ns, k, v, e in store._local.entries()}


# The behaviour of tests/store/test_memory.py, on both stores -----------------------------


class Harness:
    """Synchronous use of RedisStores, as the SIP cores use them, on a private loop."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.loop = asyncio.new_event_loop()
        self.stores: list[RedisStore] = []

    def make(self, prefix: str | None = None) -> RedisStore:
        s = RedisStore(REDIS_URL, prefix or self.prefix, node_id=f"n{len(self.stores)}")
        assert self.loop.run_until_complete(s.start())
        self.stores.append(s)
        return s

    def settle(self) -> None:
        async def flushed() -> None:
            await until(lambda: all(s.queued == 0 for s in self.stores), "flush")

        self.loop.run_until_complete(flushed())

    def check_redis_matches(self) -> None:
        """What a new node loads equals the writer's records without a TTL (the tests
        use made-up clocks, so every record with a TTL has long expired in Redis)."""
        if len(self.stores) != 1:
            return
        self.settle()
        writer = self.stores[0]
        reader = self.make()
        expected = {ref: v for ref, (v, e) in entries(writer).items() if e is None}
        assert {ref: v for ref, (v, _) in entries(reader).items()} == expected

    def close(self) -> None:
        for s in self.stores:
            self.loop.run_until_complete(s.close())
            assert s.queued == 0
        self.loop.close()


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Iterator[Callable[[], Store]]:
    if request.param == "memory":
        yield MemoryStore
        return
    harness = Harness(request.getfixturevalue("prefix"))
    try:
        yield harness.make
        harness.check_redis_matches()
    finally:
        harness.close()


def local(s: Store) -> MemoryStore:
    return s._local if isinstance(s, RedisStore) else s  # type: ignore[return-value]


def test_is_a_store(make: Callable[[], Store]) -> None:
    assert isinstance(make(), Store)


def test_put_get_delete(make: Callable[[], Store]) -> None:
    s = make()
    s.put("reg", "alice", {"contact": "sip:a@10.0.0.1", "port": 5060}, ttl=None, now=0)
    assert s.get("reg", "alice", 0) == {"contact": "sip:a@10.0.0.1", "port": 5060}
    assert s.get("reg", "bob", 0) is None
    assert s.get("other", "alice", 0) is None
    s.put("reg", "alice", {"contact": "sip:a@10.0.0.2"}, ttl=None, now=1)  # replaces whole
    assert s.get("reg", "alice", 1) == {"contact": "sip:a@10.0.0.2"}
    assert s.delete("reg", "alice")
    assert not s.delete("reg", "alice")
    assert s.get("reg", "alice", 1) is None
    assert len(local(s)) == 0
    s.put("reg", "kept", {"contact": "sip:k@10.0.0.3", "n": -7, "empty": ""}, None, 2)


def test_values_are_copied_both_ways(make: Callable[[], Store]) -> None:
    s = make()
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
def test_only_redis_shaped_values(make: Callable[[], Store], bad: dict[object, object]) -> None:
    with pytest.raises(TypeError):
        make().put("ns", "k", bad, ttl=None, now=0)  # type: ignore[arg-type]


def test_ttl_must_be_positive(make: Callable[[], Store]) -> None:
    with pytest.raises(ValueError):
        make().put("ns", "k", {}, ttl=0, now=0)


def test_expired_records_vanish_and_are_handed_out_once(make: Callable[[], Store]) -> None:
    s = make()
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
    assert len(local(s)) == 1
    assert s.get("ns", "c", 10**9) == {"n": 3}


def test_refresh_postpones_expiry(make: Callable[[], Store]) -> None:
    s = make()
    s.put("ns", "k", {"v": "old"}, ttl=10, now=0)
    s.put("ns", "k", {"v": "new"}, ttl=10, now=8)
    assert s.expire_due(12) == []
    assert s.get("ns", "k", 12) == {"v": "new"}
    assert s.expire_due(18) == [Record("ns", "k", {"v": "new"})]


def test_deleted_or_persisted_records_do_not_expire(make: Callable[[], Store]) -> None:
    s = make()
    s.put("ns", "gone", {}, ttl=5, now=0)
    s.put("ns", "kept", {}, ttl=5, now=0)
    s.delete("ns", "gone")
    s.put("ns", "kept", {}, ttl=None, now=1)
    assert s.expire_due(100) == []
    assert s.get("ns", "kept", 100) == {}


def test_scan_is_a_snapshot(make: Callable[[], Store]) -> None:
    s = make()
    for i in range(10):
        s.put("ns", str(i), {"i": i}, ttl=None, now=0)
    for key, _ in s.scan("ns", 0):
        s.delete("ns", key)  # mutating while scanning is allowed
    assert s.count("ns", 0) == 0
    assert list(s.scan("missing", 0)) == []


def test_repeated_refreshes_keep_memory_bounded(make: Callable[[], Store]) -> None:
    s = make()
    for i in range(100):
        s.put("reg", f"k{i}", {"i": i}, ttl=3600, now=0)
    for t in range(1, 2000):
        for i in range(100):
            s.put("reg", f"k{i}", {"i": i}, ttl=3600, now=t)
    m = local(s)
    assert len(m) == 100
    assert len(m._heap) <= 2 * len(m) + 1024 + 1
    if isinstance(s, RedisStore):
        assert s.queued <= 100  # one pending write per record, however often written
    assert s.expire_due(1999 + 3600) and len(m) == 0


def test_stores_share_nothing(make: Callable[[], Store]) -> None:
    a, b = make(), make()  # RedisStores: the same prefix, so they do share, see below
    a.put("ns", "k", {"v": 1}, ttl=None, now=0)
    if isinstance(b, RedisStore):
        return
    assert b.get("ns", "k", 0) is None
    assert len(local(b)) == 0


def test_empty_namespaces_are_dropped(make: Callable[[], Store]) -> None:
    s = make()
    for i in range(1000):
        s.put(f"ns{i}", "k", {}, ttl=1, now=0)
    s.expire_due(1)
    assert local(s)._data == {}


def test_prefixes_do_not_share(prefix: str) -> None:
    h = Harness(prefix)
    try:
        a, b = h.make(), h.make(prefix + "other:")
        a.put("ns", "k", {"v": 1}, ttl=None, now=0)
        h.settle()
        assert b.get("ns", "k", 0) is None
        assert h.make(prefix + "other:").get("ns", "k", 0) is None
        assert h.make().get("ns", "k", 0) == {"v": 1}
    finally:
        h.close()


def test_awkward_names_and_values_round_trip(prefix: str) -> None:
    """Namespaces and keys with ':', '*', control characters and undecodable bytes."""
    h = Harness(prefix)
    try:
        a = h.make()
        odd: dict[tuple[str, str], dict[str, str | int]] = {
            ("registrar.bindings:kiosk-1", "sip\x1fk\x1f127.0.0.1\x1f5060"): {"q": 1000},
            ("ns*[x]?", "key:with:colons"): {"s": "\udcff bytes \udc80", "#x": "=y"},
            ("", ""): {"": "", "@o": "not meta", "=": 0},
            ("é", "ü"): {"big": 2**62, "neg": -(2**62)},
        }
        for (ns, key), value in odd.items():
            a.put(ns, key, value, ttl=None, now=0)
        h.settle()
        b = h.make()
        for (ns, key), value in odd.items():
            assert b.get(ns, key, 0) == value
    finally:
        h.close()


def test_a_stale_read_does_not_undo_a_local_write(prefix: str,
                                                  sync_redis: redis.Redis) -> None:
    """A refresh that read Redis before a local write landed must not overwrite it."""
    h = Harness(prefix)
    try:
        a = h.make()
        a.put("ns", "k", {"v": 1}, None, 0)
        h.settle()
        old: dict[bytes, bytes] = sync_redis.hgetall(a._rkey("ns", "k"))  # type: ignore[assignment]
        a.put("ns", "k", {"v": 2}, None, 0)  # queued, not yet in Redis
        a._apply(("ns", "k"), old)  # a notification's read of the old version lands now
        assert a.get("ns", "k", 0) == {"v": 2}
        h.settle()
        a._apply(("ns", "k"), {})  # once written, Redis's word counts: here, deleted
        assert a.get("ns", "k", 0) is None
        assert h.make().get("ns", "k", 0) == {"v": 2}
    finally:
        h.close()


# Several nodes -------------------------------------------------------------------------


def test_changes_on_one_node_reach_the_other(prefix: str) -> None:
    async def main() -> None:
        a, b = fast(REDIS_URL, prefix, "a"), fast(REDIS_URL, prefix, "b")
        assert await a.start() and await b.start()
        try:
            now = time.time()
            a.put("reg", "k1", {"contact": "sip:k@10.0.0.1", "port": 5060}, 30, now)
            await until(lambda: b.get("reg", "k1", time.time()) is not None, "put on B")
            assert b.get("reg", "k1", time.time()) == {"contact": "sip:k@10.0.0.1", "port": 5060}
            a.put("reg", "k1", {"contact": "sip:k@10.0.0.2"}, 30, time.time())
            await until(lambda: b.get("reg", "k1", time.time()) == {"contact": "sip:k@10.0.0.2"},
                        "update on B")
            b.put("reg", "k2", {"n": 2}, None, time.time())
            await until(lambda: a.count("reg", time.time()) == 2, "B's put on A")
            assert sorted(k for k, _ in a.scan("reg", time.time())) == ["k1", "k2"]
            assert a.delete("reg", "k1")
            await until(lambda: b.get("reg", "k1", time.time()) is None, "delete on B")
            assert b.count("reg", time.time()) == 1
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_ttl_is_respected_on_every_node_and_in_redis(prefix: str,
                                                    sync_redis: redis.Redis) -> None:
    async def main() -> None:
        a, b = fast(REDIS_URL, prefix, "a"), fast(REDIS_URL, prefix, "b")
        assert await a.start() and await b.start()
        try:
            now = time.time()
            a.put("calls", "c1", {"leg": "x"}, 0.3, now)
            await until(lambda: b.get("calls", "c1", time.time()) is not None, "put on B")
            # The same absolute expiry on both nodes (the writer's clock).
            (_, ea), (_, eb) = entries(a)[("calls", "c1")], entries(b)[("calls", "c1")]
            assert ea == eb == round((now + 0.3) * 1000) / 1000
            assert b.get("calls", "c1", ea - 0.001) == {"leg": "x"}
            assert a.get("calls", "c1", ea) is None
            assert b.get("calls", "c1", ea) is None
            assert 0 < sync_redis.pttl(a._rkey("calls", "c1")) <= 300
            await until(lambda: not sync_redis.exists(a._rkey("calls", "c1")), "Redis expiry")
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_a_node_started_later_loads_what_is_there(prefix: str) -> None:
    async def main() -> None:
        a = fast(REDIS_URL, prefix, "a")
        assert await a.start()
        c: RedisStore | None = None
        try:
            now = time.time()
            for i in range(1200):  # more than one load batch
                a.put(f"registrar.bindings:kiosk-{i % 7}", f"b{i}", {"i": i, "s": str(i)},
                      60 if i % 2 else None, now)
            a.put("gone", "x", {}, None, now)
            a.delete("gone", "x")
            a.put("brief", "x", {}, 0.05, now)
            await until(lambda: a.queued == 0, "flush")
            await until(lambda: time.time() > now + 0.06, "expiry of brief/x")
            c = fast(REDIS_URL, prefix, "c")
            assert await c.start()
            want = {ref: v for ref, (v, _) in entries(a).items() if ref != ("brief", "x")}
            assert {ref: v for ref, (v, _) in entries(c).items()} == want
            for ref, (_, e) in entries(c).items():
                ea = entries(a)[ref][1]
                assert (e is None) == (ea is None)
                assert e == ea
        finally:
            await a.close()
            if c is not None:
                await c.close()

    asyncio.run(main())


def test_expiry_is_handed_out_once_across_nodes(prefix: str) -> None:
    async def main() -> None:
        a, b = fast(REDIS_URL, prefix, "a"), fast(REDIS_URL, prefix, "b")
        assert await a.start() and await b.start()
        try:
            await until(lambda: a.live_nodes == b.live_nodes == {"a", "b"}, "heartbeats")
            now = time.time()
            a.put("reg", "by-a", {"n": 1}, 0.2, now)
            b.put("reg", "by-b", {"n": 2}, 0.2, now)
            await until(lambda: a.count("reg", now) == b.count("reg", now) == 2, "replication")
            got: dict[str, list[Record]] = {"a": [], "b": []}

            def sweep() -> bool:
                t = time.time()
                got["a"] += a.expire_due(t)
                got["b"] += b.expire_due(t)
                return len(a) == len(b) == 0

            await until(sweep, "expiry on both nodes")
            for _ in range(3):
                sweep()
            assert got == {"a": [Record("reg", "by-a", {"n": 1})],
                           "b": [Record("reg", "by-b", {"n": 2})]}
            # A record rewritten by the other node changes hands.
            a.put("reg", "moved", {"n": 3}, 0.2, time.time())
            await until(lambda: b.get("reg", "moved", time.time()) is not None, "put on B")
            b.put("reg", "moved", {"n": 4}, 0.2, time.time())
            await until(lambda: a.get("reg", "moved", time.time()) == {"n": 4}, "rewrite on A")
            got = {"a": [], "b": []}
            await until(sweep, "expiry of the moved record")
            assert got == {"a": [], "b": [Record("reg", "moved", {"n": 4})]}
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_a_live_node_takes_over_expiry_from_one_that_left(prefix: str) -> None:
    async def main() -> None:
        a, b = fast(REDIS_URL, prefix, "a"), fast(REDIS_URL, prefix, "b")
        assert await a.start() and await b.start()
        try:
            await until(lambda: b.live_nodes == {"a", "b"}, "A's heartbeat on B")
            a.put("reg", "k", {"n": 1}, 0.3, time.time())
            await until(lambda: b.get("reg", "k", time.time()) is not None, "put on B")
            await a.close()
            await until(lambda: b.live_nodes == {"b"}, "A leaving")
            got: list[Record] = []

            def sweep() -> bool:
                got.extend(b.expire_due(time.time()))
                return bool(got)

            await until(sweep, "expiry on B")
            assert got == [Record("reg", "k", {"n": 1})]
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_exactly_one_live_node_takes_over_for_a_gone_node(prefix: str) -> None:
    """What the billing service asks before settling a gone node's call."""
    async def main() -> None:
        a, b, c = (fast(REDIS_URL, prefix, n) for n in "abc")
        assert await a.start() and await b.start() and await c.start()
        try:
            await until(lambda: b.live_nodes == c.live_nodes == {"a", "b", "c"}, "all live")
            keys = [f"call-{i}" for i in range(40)]
            # A is alive: nobody acts for it, and nobody for itself.
            assert not any(s.takes_over("a", "billing", k) for s in (a, b, c) for k in keys)
            await a.close()
            await until(lambda: b.live_nodes == c.live_nodes == {"b", "c"}, "A leaving")
            chosen = {k: [s.node_id for s in (b, c) if s.takes_over("a", "billing", k)]
                      for k in keys}
            assert all(len(nodes) == 1 for nodes in chosen.values()), chosen
            assert {n for nodes in chosen.values() for n in nodes} == {"b", "c"}  # shared
            assert not b.takes_over("b", "billing", "call-0")
        finally:
            for s in (a, b, c):
                await s.close()

    asyncio.run(main())


def test_without_redis_no_node_takes_over(prefix: str) -> None:
    """A node cut off from Redis has a stale view of who is alive: it acts for no one."""
    async def main() -> None:
        lonely = fast("redis://127.0.0.1:1/0", prefix, "b", connect_timeout=0.2)
        assert not await lonely.start()
        try:
            assert lonely.live_nodes == {"b"}
            assert not lonely.takes_over("a", "billing", "call-1")
        finally:
            await lonely.close()

    asyncio.run(main())


def test_notifications_name_the_writer(prefix: str) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(REDIS_URL)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(CHANNEL_PREFIX + prefix)
        a = fast(REDIS_URL, prefix, "node-a")
        assert await a.start()
        try:
            a.put("ns", "k", {"v": 1}, None, time.time())
            a.delete("ns", "gone")
            msg = None
            deadline = time.monotonic() + 5
            while msg is None and time.monotonic() < deadline:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            assert msg is not None
            body = json.loads(msg["data"])
            assert body["n"] == "node-a" and body["o"].startswith("node-a/")
            assert body["c"] == [["p", "ns", "k"], ["d", "ns", "gone"]]
        finally:
            await a.close()
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    asyncio.run(main())


def test_commands_redis_refuses_do_not_block_the_queue(
        prefix: str, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    sync_redis.set(prefix + "i:bad", "not a sorted set")  # another program in our keys

    async def main() -> None:
        a = fast(REDIS_URL, prefix, "a")
        with caplog.at_level(logging.WARNING, logger="gateway.store.redis"):
            assert await a.start()  # loading skips the unreadable index
            a.put("bad", "k", {"v": 1}, None, time.time())
            a.put("good", "k", {"v": 2}, None, time.time())
            await until(lambda: a.queued == 0, "flush")
            a.put("good", "later", {"v": 3}, None, time.time())
            await until(lambda: a.queued == 0, "second flush")
            b = fast(REDIS_URL, prefix, "b")
            assert await b.start()
        try:
            assert b.get("good", "k", time.time()) == {"v": 2}
            assert b.get("good", "later", time.time()) == {"v": 3}
            assert a.get("bad", "k", time.time()) == {"v": 1}  # the local copy keeps it
            assert a.connected and b.connected
            messages = [r.getMessage() for r in caplog.records]
            assert any("WRONGTYPE" in m for m in messages), messages
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


# Redis unreachable -----------------------------------------------------------------------


def test_unreachable_redis_serves_the_local_copy(prefix: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    port = free_port((socket.SOCK_STREAM,))  # nothing listens there

    async def main() -> None:
        s = fast(f"redis://127.0.0.1:{port}/0", prefix, "alone")
        with caplog.at_level(logging.INFO, logger="gateway.store.redis"):
            assert await s.start() is False
            assert not s.connected
            now = time.time()
            s.put("reg", "k", {"v": 1}, 0.1, now)
            s.put("reg", "p", {"v": 2}, None, now)
            assert s.get("reg", "k", now) == {"v": 1}
            assert s.count("reg", now) == 2
            assert s.delete("reg", "p")
            assert s.expire_due(now + 1) == [Record("reg", "k", {"v": 1})]
            failures = s._delay
            await until(lambda: s._delay >= 0.16, "several retries")  # 0.02, 0.04, ...
            assert failures < s._delay
            await s.close()
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert f"127.0.0.1:{port}" in errors[0].getMessage()
        assert "serving from the local copy" in errors[0].getMessage()

    asyncio.run(main())


class Proxy:
    """A TCP proxy to Redis that can be cut and restored, to simulate an outage."""

    def __init__(self) -> None:
        self.port = free_port((socket.SOCK_STREAM,))
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.writers):
            w.transport.abort()
        self.writers.clear()
        self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", REDIS_PORT)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, uwriter}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, uwriter), pipe(ureader, writer))


def test_outage_keeps_serving_then_resyncs(prefix: str,
                                          caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        proxy = Proxy()
        await proxy.up()
        a = fast(proxy.url, prefix, "a")
        b = fast(REDIS_URL, prefix, "b")
        assert await a.start() and await b.start()
        try:
            now = time.time()
            a.put("reg", "before", {"v": 0}, None, now)
            a.put("reg", "doomed", {"v": 0}, None, now)
            await until(lambda: b.count("reg", now) == 2, "replication")
            with caplog.at_level(logging.INFO, logger="gateway.store.redis"):
                await proxy.down()
                await until(lambda: not a.connected, "A noticing the outage")
                # A goes on serving and accepting writes; B changes things meanwhile.
                a.put("reg", "during", {"v": 1}, None, time.time())
                a.put("reg", "before", {"v": 2}, None, time.time())
                b.put("reg", "from-b", {"v": 3}, None, time.time())
                b.delete("reg", "doomed")
                await until(lambda: b.queued == 0, "B's flush")
                assert a.get("reg", "doomed", time.time()) == {"v": 0}  # A cannot know yet
                assert a.get("reg", "from-b", time.time()) is None
                assert a.get("reg", "during", time.time()) == {"v": 1}
                await until(lambda: a._delay >= 0.08, "a few failed retries")
                await proxy.up()
                await until(lambda: a.connected, "A reconnecting", timeout=10)
            want = {"before": {"v": 2}, "during": {"v": 1}, "from-b": {"v": 3}}
            assert dict(a.scan("reg", time.time())) == want
            await until(lambda: dict(b.scan("reg", time.time())) == want, "A's writes on B")
            levels = [(r.levelno, r.getMessage()) for r in caplog.records]
            assert sum(1 for lv, _ in levels if lv == logging.ERROR) == 1, levels
            assert any("reachable again" in m for _, m in levels), levels
        finally:
            await a.close()
            await b.close()
            if proxy.server is not None:
                await proxy.down()

    asyncio.run(main())


def test_redis_restarted_empty_gets_the_nodes_copies_back(prefix: str,
                                                          sync_redis: redis.Redis) -> None:
    async def main() -> None:
        proxy = Proxy()
        await proxy.up()
        a, b = fast(proxy.url, prefix, "a"), fast(proxy.url, prefix, "b")
        assert await a.start() and await b.start()
        c: RedisStore | None = None
        try:
            now = time.time()
            a.put("reg", "x", {"v": 1}, 60, now)
            b.put("reg", "y", {"v": 2}, None, now)
            await until(lambda: a.count("reg", now) == b.count("reg", now) == 2, "replication")
            await proxy.down()
            await until(lambda: not a.connected and not b.connected, "the outage")
            keys = list(sync_redis.scan_iter(match=prefix + "*"))  # as a restart would
            sync_redis.delete(*keys)
            await proxy.up()
            await until(lambda: a.connected and b.connected, "reconnection", timeout=10)
            await until(lambda: a.queued == b.queued == 0, "the copies written back")
            c = fast(REDIS_URL, prefix, "c")
            assert await c.start()
            assert dict(c.scan("reg", time.time())) == {"x": {"v": 1}, "y": {"v": 2}}
            # Ownership survives: A still hands out the expiry of what A wrote.
            assert c._owners[("reg", "x")] == "a" and c._owners[("reg", "y")] == "b"
        finally:
            await a.close()
            await b.close()
            if c is not None:
                await c.close()
            if proxy.server is not None:
                await proxy.down()

    asyncio.run(main())


# Two gateway processes sharing one Redis prefix ------------------------------------------


def node_config(node: str, port: int, prefix: str) -> str:
    return f"""
[gateway]
node_id = "{node}"
data_dir = "data"
[sip]
listen = ["udp:127.0.0.1:{port}"]
realm = "cluster.test"
[[sip.accounts]]
username = "kiosk-1"
password = "secret-1"
[[sip.trunks]]
name = "pbx"
sources = ["127.0.0.1/32"]
uri = "sip:127.0.0.1:9"
[[routes]]
match = "kiosk-[0-9]+"
to = "registered"
[store]
redis_url = "{REDIS_URL}"
key_prefix = "{prefix}"
"""


def register(s: socket.socket, gw_port: int, user: str, password: str) -> None:
    """REGISTER with digest auth from a UDP socket (as tests/sip/test_service.py)."""
    me = s.getsockname()[1]

    def req(cseq: int, auth: str = "") -> bytes:
        return (
            f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-reg-{cseq};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:{user}@127.0.0.1>;tag=r1\r\n"
            f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: reg-{me}@127.0.0.1\r\n"
            f"CSeq: {cseq} REGISTER\r\nContact: <sip:{user}@127.0.0.1:{me}>\r\n"
            f"Expires: 60\r\n{auth}Content-Length: 0\r\n\r\n"
        ).encode()

    s.sendto(req(1), ("127.0.0.1", gw_port))
    challenge = parse_datagram(s.recv(65535))
    assert isinstance(challenge, Response) and challenge.status == 401
    value = challenge.headers.get_all("WWW-Authenticate")[0]
    auth = authorization_for(value, "REGISTER", "sip:127.0.0.1", user, password, "c0ffee", 1)
    s.sendto(req(2, f"Authorization: {auth}\r\n"), ("127.0.0.1", gw_port))
    ok = parse_datagram(s.recv(65535))
    assert isinstance(ok, Response) and ok.status == 200, ok


def invite(me: int, n: int) -> bytes:
    sdp = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           b"m=audio 7000 RTP/AVP 0\r\n")
    return (
        f"INVITE sip:kiosk-1@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-cluster-{n};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:2001@127.0.0.1>;tag=c{n}\r\n"
        f"To: <sip:kiosk-1@127.0.0.1>\r\nCall-ID: cluster-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:2001@127.0.0.1:{me}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    ).encode() + sdp


def test_kiosk_registered_on_one_node_is_called_through_another(prefix: str,
                                                                tmp_path: Path) -> None:
    pa, pb = free_port(), free_port()
    nodes: list[GatewayProcess] = []
    try:
        for name, port in (("node-a", pa), ("node-b", pb)):
            workdir = tmp_path / name
            workdir.mkdir()
            nodes.append(GatewayProcess(node_config(name, port, prefix), workdir))
        for gw in nodes:
            gw.wait_for("SIP listening")
            gw.wait_for("ready at redis://")
        node_b = nodes[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as kiosk, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk:
            for s in (kiosk, trunk):
                s.bind(("127.0.0.1", 0))
                s.settimeout(3)
            register(kiosk, pa, "kiosk-1", "secret-1")
            me = trunk.getsockname()[1]
            deadline = time.monotonic() + 10
            got: Request | None = None
            n = 0
            while got is None:
                assert time.monotonic() < deadline, node_b.output()
                n += 1
                trunk.sendto(invite(me, n), ("127.0.0.1", pb))
                # Until node B has the binding it answers 480; then the kiosk is called.
                answered = False
                while not answered and got is None:
                    ready, _, _ = select.select([kiosk, trunk], [], [], 3)
                    assert ready, "neither the kiosk nor the caller heard from node B"
                    if kiosk in ready:
                        data, src = kiosk.recvfrom(65535)
                        msg = parse_datagram(data)
                        if isinstance(msg, Request) and msg.method == "INVITE":
                            assert src == ("127.0.0.1", pb)  # from node B, not A
                            got = msg
                    if trunk in ready:
                        resp = parse_datagram(trunk.recv(65535))
                        assert isinstance(resp, Response)
                        if resp.status >= 300:
                            assert resp.status == 480, resp
                            answered = True
            assert got.uri == f"sip:kiosk-1@127.0.0.1:{kiosk.getsockname()[1]}"
        node_b.wait_for("routing 'kiosk-1' to kiosk kiosk-1")
    finally:
        for gw in nodes:
            gw.stop()
    for gw in nodes:
        assert "Traceback" not in gw.output(), gw.output()
