"""Redis-backed store for several gateway nodes: a write-through local cache.

Why this design rather than a blocking Redis client
---------------------------------------------------
The :class:`~gateway.store.base.Store` interface is synchronous: the sans-IO SIP cores
call it inline, on the reactor thread, in the middle of handling a message.  A
blocking round trip to Redis there would stall every call and registration of the
node for the duration of each query (and for the whole outage if Redis hangs), and an
asynchronous interface would force every core to be rewritten around awaits.  So each
node keeps a full in-process copy of the shared state and:

- serves every read (``get``, ``scan``, ``count``) from that copy, in memory;
- applies every write (``put``, ``delete``) to the copy at once, and queues it;
- one asyncio task (on the reactor's loop) writes the queue to Redis in batches, one
  ``MULTI``/``EXEC`` per batch, then publishes which records changed;
- every node subscribes to those notifications and re-reads the changed records from
  Redis into its copy;
- on start, and again after any outage, it loads everything under its key prefix.

So callers never wait for the network and never see a Redis error; the price is that
other nodes see a change after the flush and the notification (about a millisecond
on a LAN), i.e. the shared state is eventually consistent, last writer wins.

Layout in Redis (``P`` is the key prefix, e.g. ``gateway:<facility>:``)
----------------------------------------------------------------------
- ``P r:<len(ns)>:<ns>:<key>``: one hash per record.  User fields are stored as
  ``=name`` (str values) and ``#name`` (int values, decimal) so values round-trip with
  their types; meta fields ``@o`` (owning node, see expiry below) and ``@e`` (absolute
  expiry in Unix milliseconds, ``-`` for none) keep the hash non-empty even for an
  empty value.  A TTL is set with ``PEXPIREAT`` so Redis drops the record by itself.
- ``P i:<ns>``: the namespace index, a sorted set of keys scored by expiry
  milliseconds (``+inf`` for none), so a node can load a namespace; expired members
  are trimmed on every write to the namespace and on every load.
- ``P nodes``: a sorted set of node ids scored by their last heartbeat.
- ``P epoch``: a random token, to tell "Redis restarted empty" from "we were cut off".
- channel ``gateway:store:P``: JSON ``{"o": writer instance, "n": node id,
  "c": [["p"|"d", ns, key], ...]}`` once per flushed batch.

Clocks
------
Times are the ``now`` the callers pass in, which the service takes from the wall clock
(``time.time()``; the refresh and load paths use the ``clock`` given here, which must
be the same clock).  Expiry instants are absolute and shared, so the nodes' clocks
must be synchronized (NTP), as for any TTL shared between machines; a skew of ``s``
seconds makes a record live ``s`` seconds more or less on one node than on another.

Expiry: who hands a record out
------------------------------
Every node's copy drops an expired record from ``get``/``scan`` at its expiry time,
but ``expire_due`` hands it out on *one* node only: the record's owner, i.e. the node
that last wrote it (recorded in ``@o``).  A lock per record (``SET NX``) would need a
Redis round trip inside ``expire_due``, which is synchronous; taking it in the
background instead would delay every expiry event by a sweep and still leave a node
to decide what to do while Redis is away.  Ownership is decided locally, at once and
without I/O, and the owner is also the node that can act on the event: the node the
kiosk registered through (its NAT flow ends there), later the node holding a call's
legs.  If the owner has stopped (it leaves ``P nodes`` on ``close``) or missed its
heartbeats for ``node_timeout`` seconds, the live node chosen by a hash of the record
among the live nodes takes over.  Hand-out is exactly once while the nodes agree on
who is alive; around a membership change (a crash, a node starting) an expiry can be
handed out twice or, within ``node_timeout`` of an owner's crash, not at all.
Consumers must treat expiry events as idempotent hints, which the registrar's are.

Failures
--------
If Redis is unreachable the store logs one error, keeps serving and accepting writes
locally (queued, one pending write per record: the last), retries with exponential
back-off, and when Redis is back flushes the queue and reloads everything (records
deleted elsewhere meanwhile are dropped from the copy).  If Redis came back empty
(restarted without persistence: ``P epoch`` is gone), every node writes its copy back
instead of dropping it.  Writes made on two nodes to the same record during an outage:
the last flushed wins.  Nothing in the synchronous interface ever raises a Redis error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import socket
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from gateway.store.base import FieldValue, Record, Store, Value, checked_value
from gateway.store.memory import MemoryStore

log = logging.getLogger("gateway.store.redis")

Ref = tuple[str, str]
"""(namespace, key)"""

CHANNEL_PREFIX = "gateway:store:"
_NO_EXPIRY = b"-"
_GLOB = re.compile(rb"([*?\[\]\\])")


def _enc(s: str) -> bytes:
    # Text from the wire is decoded with surrogateescape, so that is the round trip;
    # other lone surrogates cannot be stored as UTF-8 and are escaped (lossy).
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace")


def _dec(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _ms(t: float) -> int:
    return int(round(t * 1000))


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class _LocalCopy(MemoryStore):
    """The node's copy: a MemoryStore that also takes absolute expiry times."""

    def put_at(self, namespace: str, key: str, value: Value, expires_at: float | None) -> None:
        if expires_at is None:
            self.put(namespace, key, value, None, 0.0)
        else:  # MemoryStore refuses ttl <= 0; this keeps an already past expiry exact
            self.put(namespace, key, value, 1.0, expires_at - 1.0)

    def holds(self, namespace: str, key: str) -> bool:
        records = self._data.get(namespace)
        return records is not None and key in records

    def entries(self) -> list[tuple[str, str, Value, float | None]]:
        """Every record held, expired or not: (namespace, key, value, expires_at)."""
        return [
            (ns, k, e.value, e.expires_at)
            for ns, records in self._data.items()
            for k, e in records.items()
        ]


@dataclass(frozen=True, slots=True)
class _Write:
    value: Value | None  # None: delete
    expires_ms: int | None
    owner: str


class RedisStore(Store):
    """The shared store of a multi-node gateway (see the module docstring).

    ``url``: a redis://, rediss:// or unix:// URL.  ``prefix``: every key this store
    uses starts with it (``gateway:<facility>:``); stores with the same URL and prefix
    share their records.  ``node_id``: this node's name, unique in the cluster.
    ``clock``: the wall clock the callers' ``now`` comes from.

    Use on the asyncio loop that runs the callers: ``await start()`` connects, loads and
    subscribes (and returns False, without raising, if Redis is unreachable: the store
    keeps retrying in the background); ``await close()`` flushes and stops.  Until
    ``start`` the store works as a local store and queues its writes.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "gateway:",
        *,
        node_id: str | None = None,
        clock: Callable[[], float] = time.time,
        batch_size: int = 500,
        heartbeat: float = 2.0,
        node_timeout: float = 10.0,
        retry_min: float = 0.1,
        retry_max: float = 10.0,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
    ) -> None:
        if not prefix:
            raise ValueError("the key prefix must not be empty")
        if batch_size < 1 or heartbeat <= 0 or node_timeout <= heartbeat:
            raise ValueError("need batch_size >= 1 and 0 < heartbeat < node_timeout")
        self.url = url
        self.shown_url = redacted(url)
        self.prefix = prefix
        self.node_id = node_id or socket.gethostname()
        self.channel = CHANNEL_PREFIX + prefix
        self._clock = clock
        self._batch_size = batch_size
        self._heartbeat_every = heartbeat
        self._node_timeout = node_timeout
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        # Tells this instance's notifications from those of another store with the
        # same node id (a restarted node, two stores in one test process).
        self._origin = f"{self.node_id}/{secrets.token_hex(6)}"
        self._p = _enc(prefix)
        self._nodes_key = self._p + b"nodes"
        self._epoch_key = self._p + b"epoch"

        self._local = _LocalCopy()
        self._owners: dict[Ref, str] = {}
        self._pending: dict[Ref, _Write] = {}
        self._trims: dict[str, int] = {}
        self._refresh: dict[Ref, None] = {}
        self._live: frozenset[str] = frozenset({self.node_id})
        self._epoch: bytes | None = None

        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._attempted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._up = False
        self._down_logged = False
        self._delay = retry_min
        self._next_heartbeat = 0.0

    # The synchronous interface ---------------------------------------------------

    def put(
        self,
        namespace: str,
        key: str,
        value: Mapping[str, FieldValue],
        ttl: float | None,
        now: float,
    ) -> None:
        if ttl is not None and ttl <= 0:
            raise ValueError("ttl must be positive (delete the record instead)")
        stored = checked_value(value)
        # Whole milliseconds, as in Redis, so every node holds the very same expiry.
        expires_ms = None if ttl is None else _ms(now + ttl)
        self._local.put_at(namespace, key, stored, None if expires_ms is None
                           else expires_ms / 1000)
        ref = (namespace, key)
        self._owners[ref] = self.node_id
        self._queue(ref, _Write(stored, expires_ms, self.node_id))

    def get(self, namespace: str, key: str, now: float) -> Value | None:
        return self._local.get(namespace, key, now)

    def delete(self, namespace: str, key: str) -> bool:
        existed = self._local.delete(namespace, key)
        ref = (namespace, key)
        self._owners.pop(ref, None)
        # Deleted in Redis even if this copy had not seen it yet.
        self._queue(ref, _Write(None, None, self.node_id))
        return existed

    def scan(self, namespace: str, now: float) -> Iterator[tuple[str, Value]]:
        return self._local.scan(namespace, now)

    def count(self, namespace: str, now: float) -> int:
        return self._local.count(namespace, now)

    def expire_due(self, now: float) -> list[Record]:
        """Expired records this node owns (or takes over), oldest expiry first.

        Every node drops the expired records from its copy; only one hands each out.
        """
        out: list[Record] = []
        for rec in self._local.expire_due(now):
            ref = (rec.namespace, rec.key)
            owner = self._owners.pop(ref, self.node_id)
            if self._hands_out(owner, ref):
                out.append(rec)
                # Keep the namespace index from collecting dead members.
                self._trims[rec.namespace] = max(self._trims.get(rec.namespace, 0), _ms(now))
        if self._trims:
            self._wake.set()
        return out

    def __len__(self) -> int:
        """Records in this node's copy, including expired ones not yet handed out."""
        return len(self._local)

    # State ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while Redis is reachable and the copy has been loaded from it."""
        return self._up

    @property
    def queued(self) -> int:
        """Writes not yet in Redis."""
        return len(self._pending)

    @property
    def live_nodes(self) -> frozenset[str]:
        """Nodes with a recent heartbeat, as last seen (always includes this one)."""
        return self._live

    @property
    def node_timeout(self) -> float:
        """Seconds without a heartbeat after which a node is taken for dead."""
        return self._node_timeout

    def takes_over(self, owner: str, namespace: str, key: str) -> bool:
        """Should this node act for ``owner``, a node that is gone, on this record?

        The choice expiry hand-out makes (one live node, by a hash of the record), so
        that the nodes left agree without talking.  False while the owner is alive,
        and while Redis is unreachable: the live set is stale then.
        """
        if owner == self.node_id or not self._up or owner in self._live:
            return False
        return self._hands_out(owner, (namespace, key))

    def _hands_out(self, owner: str, ref: Ref) -> bool:
        if owner == self.node_id:
            return True
        live = self._live
        if owner in live:
            return False  # its owner will
        nodes = sorted(live)
        h = zlib.crc32(_enc(ref[0]) + b"\x00" + _enc(ref[1]))
        return nodes[h % len(nodes)] == self.node_id

    def _queue(self, ref: Ref, write: _Write) -> None:
        self._pending.pop(ref, None)  # keep the queue in order of last write
        self._pending[ref] = write
        self._wake.set()

    # Keys and values -----------------------------------------------------------------

    def _rkey(self, namespace: str, key: str) -> bytes:
        ns = _enc(namespace)
        return self._p + b"r:" + str(len(ns)).encode() + b":" + ns + b":" + _enc(key)

    def _ikey(self, namespace: str) -> bytes:
        return self._p + b"i:" + _enc(namespace)

    @staticmethod
    def _encode(write: _Write) -> dict[bytes, bytes]:
        assert write.value is not None
        out = {
            b"@o": _enc(write.owner),
            b"@e": _NO_EXPIRY if write.expires_ms is None else str(write.expires_ms).encode(),
        }
        for name, v in write.value.items():
            if isinstance(v, int):
                out[b"#" + _enc(name)] = str(v).encode()
            else:
                out[b"=" + _enc(name)] = _enc(v)
        return out

    @staticmethod
    def _decode(fields: Mapping[bytes, bytes]) -> tuple[Value, float | None, str]:
        """(value, expires_at seconds or None, owner); ValueError if malformed."""
        value: Value = {}
        owner = fields.get(b"@o")
        expiry = fields.get(b"@e")
        if owner is None or expiry is None:
            raise ValueError("no @o/@e meta fields")
        for name, raw in fields.items():
            tag, rest = name[:1], name[1:]
            if tag == b"=":
                value[_dec(rest)] = _dec(raw)
            elif tag == b"#":
                value[_dec(rest)] = int(raw)
        expires_at = None if expiry == _NO_EXPIRY else int(expiry) / 1000
        return value, expires_at, _dec(owner)

    # Life cycle ----------------------------------------------------------------------

    async def start(self) -> bool:
        """Connect, load the shared records and subscribe to changes.

        Returns True once loaded, False if the first attempt failed (logged; the store
        keeps retrying in the background and serves its local copy meanwhile).
        """
        if self._task is None:
            if self._closing:
                raise RuntimeError("RedisStore was closed")
            self._task = asyncio.get_running_loop().create_task(self._run())
        await self._attempted.wait()
        return self._up

    async def close(self, timeout: float = 5.0) -> None:
        """Write the queued changes (if Redis is reachable), leave the cluster, stop."""
        self._closing = True
        self._stop.set()
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pending:
            log.warning("Redis store %s closed with %d change(s) not written to Redis",
                        self.prefix, len(self._pending))
        self._up = False

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:  # OSError covers TimeoutError
                self._went_down(f"{type(exc).__name__}: {exc}")
            except Exception:  # a bug must not end replication for good
                log.exception("Redis store %s: unexpected error; reconnecting", self.prefix)
                self._went_down("unexpected error")
            else:
                return  # closed
            self._attempted.set()
            if self._closing:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._delay)
            self._delay = min(self._delay * 2, self._retry_max)

    def _went_down(self, why: str) -> None:
        if self._up or not self._down_logged:
            log.error(
                "Redis store unreachable at %s (%s): serving from the local copy "
                "(%d record(s)), %d change(s) queued; retrying with back-off",
                self.shown_url, why, len(self._local), len(self._pending),
            )
            self._down_logged = True
        else:
            log.debug("Redis store still unreachable at %s (%s)", self.shown_url, why)
        self._up = False

    async def _session(self) -> None:
        client = aioredis.Redis.from_url(
            self.url,
            socket_connect_timeout=self._connect_timeout,
            socket_timeout=self._command_timeout,
            retry=Retry(NoBackoff(), 0),  # we resync after an outage; no silent retries
        )
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        listener: asyncio.Task[None] | None = None
        try:
            await client.ping()
            await pubsub.subscribe(self.channel)
            listener = asyncio.get_running_loop().create_task(self._listen(pubsub))
            await self._heartbeat(client)
            if await self._lost_data(client):
                log.warning("Redis store %s: Redis lost the shared state (restarted "
                            "without persistence?); writing this node's copy back",
                            self.prefix)
                self._reseed()
            was_down = self._down_logged
            flushed = len(self._pending)
            await self._flush_all(client)
            loaded = await self._load(client)
            self._up = True
            self._down_logged = False
            self._delay = self._retry_min
            if was_down:
                log.info("Redis store reachable again at %s: %d change(s) written, "
                         "%d record(s) reloaded", self.shown_url, flushed, loaded)
            else:
                log.info("Redis store %s ready at %s: %d record(s) loaded, node %s",
                         self.prefix, self.shown_url, loaded, self.node_id)
            self._attempted.set()
            await self._work(client, listener)
        finally:
            self._up = False
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(BaseException):
                    await listener
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _work(self, client: aioredis.Redis, listener: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if listener.done():
                listener.result()  # raises what ended it
                raise RedisError("the subscription ended")
            if self._closing:
                await self._flush_all(client)
                await client.zrem(self._nodes_key, _enc(self.node_id))
                return
            if self._pending or self._trims:
                await self._flush_batch(client)
                continue
            if self._refresh:
                await self._refresh_batch(client)
                continue
            wait = self._next_heartbeat - loop.time()
            if wait <= 0:
                await self._heartbeat(client)
                continue
            waiter = loop.create_task(self._wake.wait())
            try:
                await asyncio.wait({waiter, listener}, timeout=wait,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    # Redis operations ----------------------------------------------------------------

    async def _heartbeat(self, client: aioredis.Redis) -> None:
        now_ms = _ms(self._clock())
        timeout_ms = _ms(self._node_timeout)
        pipe = client.pipeline(transaction=False)
        pipe.zadd(self._nodes_key, {_enc(self.node_id): now_ms})
        pipe.zremrangebyscore(self._nodes_key, "-inf", now_ms - 10 * timeout_ms)
        pipe.zrangebyscore(self._nodes_key, now_ms - timeout_ms, "+inf")
        live = (await pipe.execute())[2]
        self._live = frozenset({_dec(n) for n in live} | {self.node_id})
        self._next_heartbeat = asyncio.get_running_loop().time() + self._heartbeat_every

    async def _lost_data(self, client: aioredis.Redis) -> bool:
        """True if Redis no longer holds the epoch this store loaded from."""
        await client.set(self._epoch_key, secrets.token_hex(8), nx=True)
        current = await client.get(self._epoch_key)
        assert current is None or isinstance(current, bytes)
        lost = self._epoch is not None and current != self._epoch
        self._epoch = current
        return lost

    def _reseed(self) -> None:
        now = self._clock()
        for ns, key, value, expires_at in self._local.entries():
            ref = (ns, key)
            if ref in self._pending or (expires_at is not None and expires_at <= now):
                continue
            owner = self._owners.get(ref, self.node_id)
            expires_ms = None if expires_at is None else _ms(expires_at)
            self._queue(ref, _Write(value, expires_ms, owner))

    async def _flush_all(self, client: aioredis.Redis) -> None:
        while self._pending or self._trims:
            await self._flush_batch(client)

    async def _flush_batch(self, client: aioredis.Redis) -> None:
        batch: list[tuple[Ref, _Write]] = []
        for ref in list(self._pending)[: self._batch_size]:
            batch.append((ref, self._pending.pop(ref)))
        trims, self._trims = self._trims, {}
        now_ms = _ms(self._clock())
        pipe = client.pipeline(transaction=True)
        changes: list[list[str]] = []
        for (ns, key), write in batch:
            rkey, ikey, member = self._rkey(ns, key), self._ikey(ns), _enc(key)
            pipe.delete(rkey)
            if write.value is None:
                pipe.zrem(ikey, member)
                changes.append(["d", ns, key])
                continue
            pipe.hset(rkey, mapping=self._encode(write))  # type: ignore[arg-type]
            if write.expires_ms is not None:
                pipe.pexpireat(rkey, write.expires_ms)
            score: int | str = "+inf" if write.expires_ms is None else write.expires_ms
            pipe.zadd(ikey, {member: score})
            changes.append(["p", ns, key])
            trims.setdefault(ns, now_ms)
        for ns, upto in trims.items():
            pipe.zremrangebyscore(self._ikey(ns), "-inf", f"({upto}")
        if changes:
            pipe.publish(self.channel, json.dumps(
                {"o": self._origin, "n": self.node_id, "c": changes}))
        try:
            results = await pipe.execute(raise_on_error=False)
        except ResponseError as exc:  # refused as a whole (a bug): retrying cannot help
            log.error("Redis store %s: Redis refused a batch of %d change(s), dropped: %s",
                      self.prefix, len(batch), exc)
            return
        except BaseException:
            # Not known to be written: queue again, behind nothing newer for the same
            # record (a write is a whole record, so writing it twice is harmless).
            redo = {ref: w for ref, w in batch if ref not in self._pending}
            self._pending = {**redo, **self._pending}
            for ns, upto in trims.items():
                self._trims[ns] = max(self._trims.get(ns, 0), upto)
            raise
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:  # e.g. WRONGTYPE: another program uses our keys
            log.error("Redis store %s: %d command(s) of a batch failed, first: %s",
                      self.prefix, len(errors), errors[0])

    async def _listen(self, pubsub: Any) -> None:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None and msg.get("type") == "message":
                self._notified(msg["data"])

    def _notified(self, data: bytes) -> None:
        try:
            msg = json.loads(data)
            origin = msg["o"]
            changes = [(str(ns), str(key)) for _, ns, key in msg["c"]]
        except (ValueError, KeyError, TypeError):
            log.warning("Redis store %s: ignoring a malformed notification %r",
                        self.prefix, data[:200])
            return
        if origin == self._origin:
            return
        for ref in changes:
            self._refresh[ref] = None
        if changes:
            self._wake.set()

    async def _refresh_batch(self, client: aioredis.Redis) -> None:
        refs = list(self._refresh)[: self._batch_size]
        pipe = client.pipeline(transaction=False)
        for ns, key in refs:
            pipe.hgetall(self._rkey(ns, key))
        results = await pipe.execute(raise_on_error=False)
        for ref in refs:
            self._refresh.pop(ref, None)
        for ref, fields in zip(refs, results, strict=True):
            self._apply(ref, fields)

    def _apply(self, ref: Ref, fields: Mapping[bytes, bytes] | Exception | None) -> None:
        """Take Redis's version of one record into the copy."""
        if ref in self._pending:
            return  # written here since: that write goes to Redis next and wins
        ns, key = ref
        if isinstance(fields, Exception):
            log.warning("Redis store %s: cannot read record %r/%r: %s",
                        self.prefix, ns, key, fields)
            return
        if not fields:
            self._local.delete(ns, key)
            self._owners.pop(ref, None)
            return
        try:
            value, expires_at, owner = self._decode(fields)
        except ValueError as exc:
            log.warning("Redis store %s: ignoring malformed record %r/%r: %s",
                        self.prefix, ns, key, exc)
            return
        self._local.put_at(ns, key, value, expires_at)
        self._owners[ref] = owner

    async def _load(self, client: aioredis.Redis) -> int:
        """Make the copy equal to Redis (except records written here since)."""
        now = self._clock()
        now_ms = _ms(now)
        ipfx = self._p + b"i:"
        namespaces: list[str] = []
        async for ikey in client.scan_iter(match=_GLOB.sub(rb"\\\1", ipfx) + b"*", count=1000):
            namespaces.append(_dec(ikey[len(ipfx):]))
        refs: list[Ref] = []
        for i in range(0, len(namespaces), self._batch_size):
            chunk = namespaces[i : i + self._batch_size]
            pipe = client.pipeline(transaction=False)
            for ns in chunk:
                pipe.zremrangebyscore(self._ikey(ns), "-inf", f"({now_ms}")
                pipe.zrange(self._ikey(ns), 0, -1)
            results = await pipe.execute(raise_on_error=False)
            for ns, members in zip(chunk, results[1::2], strict=True):
                if isinstance(members, Exception):
                    log.warning("Redis store %s: cannot read the index of %r: %s",
                                self.prefix, ns, members)
                    continue
                refs.extend((ns, _dec(m)) for m in members)
        seen: set[Ref] = set()
        for i in range(0, len(refs), self._batch_size):
            chunk_refs = refs[i : i + self._batch_size]
            pipe = client.pipeline(transaction=False)
            for ns, key in chunk_refs:
                pipe.hgetall(self._rkey(ns, key))
            results = await pipe.execute(raise_on_error=False)
            for ref, fields in zip(chunk_refs, results, strict=True):
                if isinstance(fields, Exception):
                    seen.add(ref)  # unreadable is not deleted: keep what this copy has
                    self._apply(ref, fields)
                elif fields:
                    seen.add(ref)
                    self._apply(ref, fields)
        # Records live here but gone from Redis were deleted elsewhere meanwhile.
        now = self._clock()
        for ns, key, _, expires_at in self._local.entries():
            ref = (ns, key)
            if ref in seen or ref in self._pending:
                continue
            if expires_at is None or expires_at > now:
                self._local.delete(ns, key)
                self._owners.pop(ref, None)
        return len(seen)


def start_in_reactor(store: RedisStore, reactor: Any) -> None:
    """Start ``store`` on the Twisted asyncio reactor's loop; close it at shutdown.

    Returns at once: the SIP service may start before the records are loaded (that
    takes milliseconds); the store logs when it is ready, or once that Redis is
    unreachable (it then serves its local copy and keeps retrying).
    """
    from twisted.internet import defer

    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:
        raise RuntimeError("RedisStore needs Twisted's asyncio reactor")

    d = defer.Deferred.fromFuture(asyncio.ensure_future(store.start(), loop=loop))
    d.addErrback(lambda f: log.error("Redis store failed to start: %s", f.getTraceback()))

    def stop() -> defer.Deferred[None]:
        return defer.Deferred.fromFuture(asyncio.ensure_future(store.close(), loop=loop))

    reactor.addSystemEventTrigger("before", "shutdown", stop)


__all__ = ["CHANNEL_PREFIX", "RedisStore", "start_in_reactor"]
