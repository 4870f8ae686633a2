"""``BillingService``: charging sessions for SIP calls, on the reactor, ledger in threads.

The Twisted adapter of :mod:`gateway.billing.session`.  It

* answers the SIP service's admission gate: a call a ``[[billing.plans]]`` entry
  matches is reserved in the ledger first, and refused (402 Insufficient funds,
  480 when billing is unavailable) if its payer cannot cover the first increment;
* listens to ``CallAnswered``/``CallEnded``, feeds the meter, and on a
  ``LoopingCall`` (``heartbeat_seconds``) ticks every answered session: debits
  completed increments, extends holds, persists the session's heartbeat in the
  shared store, warns at low balance and, when the funds are used up, asks the
  SIP layer to hang up (``CallLayer.hangup``) after the warning;
* settles each call when it ends, with its CDR, and recovers calls a crash left
  open when it starts (see :mod:`gateway.billing.calls` for why that is safe);
* releases expired holds on a timer.

Every database call runs in the reactor's thread pool (``deferToThread``), one
at a time per call (a ``DeferredLock``), so the reactor never blocks on the
ledger and a call's increments and settlement never overtake each other.

Events for other components (the web side will show the warning to the family):
append a callable to :attr:`BillingService.listeners`; it receives
:class:`LowBalance`, :class:`OutOfFunds`, :class:`CallRefused` and
:class:`CallSettled`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from twisted.application import service
from twisted.internet import defer, task, threads

from gateway.billing.accounts import Accounts
from gateway.billing.calls import CallLedger, Reserved, describe
from gateway.billing.cdr import FUNDS_EXHAUSTED, Cdr
from gateway.billing.db import Database, open_database, upgrade
from gateway.billing.meter import Meter, SignallingMeter
from gateway.billing.money import Money
from gateway.billing.session import (
    CallRequest,
    ChargingSession,
    EndInfo,
    LowBalance,
    OutOfFunds,
    Refusal,
    SessionEvent,
    SettleRequest,
    TickResult,
)
from gateway.config import Config
from gateway.sip.b2bua import Call, CallAnswered, CallEnded, IncomingCall
from gateway.sip.routing import Rejection
from gateway.store.base import Store
from gateway.store.memory import MemoryStore

log = logging.getLogger("gateway.billing")

STORE_NAMESPACE = "billing:sessions"
STORE_TTL = 7 * 86400.0  # a heartbeat record outlives any outage we would recover from
SETTLE_RETRY_SECONDS = 15.0
STOP_SETTLE_TIMEOUT = 10.0
START_RETRY_MIN, START_RETRY_MAX = 2.0, 60.0  # seconds between attempts to start
MIN_DEADLINE_DELAY = 0.05  # a stalled meter must not spin the deadline timer
ORPHAN_LEDGER_SCAN_SECONDS = 600.0  # calls of dead nodes with no heartbeat record
SETTLED_ELSEWHERE = "billing settled by another node"


@dataclass(frozen=True)
class CallRefused:
    call_id: str
    status: int
    reason: str
    detail: str


@dataclass(frozen=True)
class CallSettled:
    call_id: str
    cdr: Cdr


BillingEvent = LowBalance | OutOfFunds | CallRefused | CallSettled


@dataclass(eq=False)
class _Live:
    """A billed call on this node."""

    call: Call
    request: CallRequest
    session: ChargingSession | None = None  # None while the reservation runs
    lock: defer.DeferredLock = field(default_factory=defer.DeferredLock)
    end: EndInfo | None = None
    deliberate: bool = False
    timer: Any = None  # IDelayedCall for a deadline before the next heartbeat
    settling: bool = False


class BillingService(service.Service):
    """Charging sessions for the SIP calls of this node (see the module docstring)."""

    def __init__(self, config: Config, sip: Any = None, *, reactor: Any = None,
                 meter: Meter | None = None) -> None:
        self.config = config
        self.billing = config.billing
        self.policy = self.billing.policy()
        self.node_id = config.gateway.node_id
        self.sip = sip
        self._reactor = reactor
        self.meter: Meter = meter or SignallingMeter(lambda: self.reactor.seconds())
        self.listeners: list[Callable[[BillingEvent], None]] = []
        self.sessions: dict[str, _Live] = {}
        self.db: Database | None = None
        self.ledger: CallLedger | None = None
        self.store: Store = MemoryStore()
        self._redis: Any = None
        self._ready = False
        self._failed: str | None = None
        self._waiters: list[defer.Deferred[None]] = []
        self._loops: list[task.LoopingCall] = []
        self._backoff = START_RETRY_MIN
        self._retry: Any = None
        self._sweeping = False
        self._taking_over: set[str] = set()
        if sip is not None:
            sip.call_gate = self.admit
            sip.call_listeners.append(self.on_call_event)

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    # ------------------------------------------------------------ life cycle

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        super().startService()  # type: ignore[no-untyped-call]
        self._begin()

    def _begin(self) -> None:
        self._retry = None
        d = self._start()
        d.addErrback(self._start_failed)

    @defer.inlineCallbacks
    def _start(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Database (migrated), store, recovery, timers; each step once, retried on failure."""
        if self.db is None:
            self.db = yield threads.deferToThread(self._open_database, self.config.database.url)
        assert self.db is not None
        facilities = {f.id: f for f in self.billing.facilities}
        if self.ledger is None:
            self.ledger = CallLedger(Accounts(self.db, actor=f"gateway:{self.node_id}"),
                                     facilities)
        if self.config.store.redis_url and self._redis is None:
            yield self._start_redis()
        yield self._recover()
        if not self.running:
            return
        self._ready = True
        self._failed = None
        self._wake()
        self._loop(self._tick_all, self.billing.heartbeat_seconds)
        self._loop(self._sweep, self.billing.expired_hold_sweep_seconds)
        if self._redis is not None:
            self._loop(self._take_over, self.billing.heartbeat_seconds)
            self._loop(self._take_over_from_ledger, ORPHAN_LEDGER_SCAN_SECONDS)
        log.info("billing ready: %d facility(ies), %d plan(s), database %s, %s store",
                 len(facilities), len(self.billing.plans), self.db.url,
                 "Redis" if self._redis is not None else "in-process")

    @staticmethod
    def _open_database(url: str) -> Database:
        logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per start is enough
        db = open_database(url)
        try:
            upgrade(db)  # idempotent: brings a new or older schema to this version
        except BaseException:
            db.dispose()
            raise
        return db

    def _start_redis(self) -> defer.Deferred[Any]:
        from gateway.store.redis import RedisStore

        store = RedisStore(self.config.store.redis_url, self.config.store.key_prefix,
                           node_id=self.node_id,
                           node_timeout=self.config.store.node_timeout_seconds)
        self._redis = store
        self.store = store
        loop = getattr(self.reactor, "_asyncioEventloop", None)
        if loop is None:
            raise RuntimeError("the Redis store needs Twisted's asyncio reactor")
        d: defer.Deferred[bool] = defer.Deferred.fromFuture(
            asyncio.ensure_future(store.start(), loop=loop))

        def loaded(up: bool) -> None:
            if not up:
                log.warning("billing: Redis unreachable at start; recovering from the ledger")

        return d.addCallback(loaded)

    def _start_failed(self, failure: Any) -> None:
        """Refuse billed calls (480) until a retry succeeds: e.g. the database is still starting."""
        self._failed = failure.getErrorMessage()
        self._wake()
        if not self.running:
            return
        delay = self._backoff
        self._backoff = min(self._backoff * 2, START_RETRY_MAX)
        log.error("billing could not start (billed calls are refused; retrying in %.0f s): %s",
                  delay, self._failed)
        self._retry = self.reactor.callLater(delay, self._begin)

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _loop(self, fn: Callable[[], object], every: float) -> None:
        loop = task.LoopingCall(fn)
        loop.clock = self.reactor
        loop.start(every, now=False).addErrback(
            lambda f: log.error("billing timer failed: %s", f.getTraceback()))
        self._loops.append(loop)

    def stopService(self) -> Any:  # noqa: N802
        super().stopService()  # type: ignore[no-untyped-call]
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        return self._stop()

    @defer.inlineCallbacks
    def _stop(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Settle the calls still up (the gateway is going away: they drop), then close."""
        pending = []
        now = self.reactor.seconds()
        for live in list(self.sessions.values()):
            if live.session is not None and not live.settling:
                self._settle(live, EndInfo(now, "gateway shut down", "gateway"))
            pending.append(live.lock.acquire().addCallback(lambda lock: lock.release()))
        if pending:
            done = defer.DeferredList(pending, consumeErrors=True)
            timeout = self.reactor.callLater(STOP_SETTLE_TIMEOUT, done.cancel)
            try:
                yield done
            except defer.CancelledError:
                log.warning("billing: calls left open at shutdown; they are recovered at the "
                            "next start")
            if timeout.active():
                timeout.cancel()
        if self._redis is not None:
            loop = self.reactor._asyncioEventloop
            yield defer.Deferred.fromFuture(asyncio.ensure_future(self._redis.close(), loop=loop))
        if self.db is not None:
            yield threads.deferToThread(self.db.dispose)

    # ------------------------------------------------------------ admission

    def admit(self, ev: IncomingCall) -> defer.Deferred[Any] | None:
        """The SIP gate: None (not billed, connect now) or a Deferred decision."""
        plan = self.billing.plan_for(ev.caller, ev.user)
        if plan is None:
            if self.billing.unmatched_calls == "refuse":
                log.info("billing: call %s from %s to %s matches no billing plan: refused",
                         ev.call.id, ev.caller, ev.user)
                return defer.succeed(Rejection(403, "No billing plan"))
            log.info("billing: call %s from %s to %s matches no billing plan: not billed",
                     ev.call.id, ev.caller, ev.user)
            return None
        request = CallRequest(
            call_id=ev.call.id, node_id=self.node_id, plan=plan.name,
            facility_id=plan.facility, service=plan.service, caller=ev.caller, callee=ev.user,
            setup_at=datetime.fromtimestamp(self.reactor.seconds(), UTC),
            payers=plan.payer_refs(), free_minutes_per_day=plan.free_minutes_per_day,
        )
        live = _Live(ev.call, request)
        self.sessions[request.call_id] = live
        d: defer.Deferred[Any] = self._when_ready()
        return d.addCallback(lambda _: self._reserve(live))

    def _when_ready(self) -> defer.Deferred[None]:
        if self._ready or self._failed is not None:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        return d

    def _reserve(self, live: _Live) -> defer.Deferred[Any] | Rejection:
        if self._failed is not None or self.ledger is None:
            self.sessions.pop(live.request.call_id, None)
            return Rejection(480, "Billing unavailable")
        ledger = self.ledger
        d: defer.Deferred[Any] = live.lock.run(threads.deferToThread, ledger.reserve,
                                               live.request, self.policy)
        d.addCallbacks(lambda result: self._reserved(live, result),
                       lambda f: self._reserve_failed(live, f))
        return d

    def _reserved(self, live: _Live, result: Reserved | Refusal) -> Rejection | None:
        call_id = live.request.call_id
        if isinstance(result, Refusal):
            self.sessions.pop(call_id, None)
            log.info("billing: call %s refused (%s %s): %s", call_id, result.status,
                     result.reason, result.detail)
            self._emit(CallRefused(call_id, result.status, result.reason, result.detail))
            return Rejection(result.status, result.reason)
        facility = self.billing.facility(live.request.facility_id)
        assert facility is not None
        session = ChargingSession(result.reservation, facility, self.policy, result.funds)
        live.session = session
        self._persist(live)
        held = ", ".join(f"{a} {Money(f.held)}" for a, f in result.funds.items() if f.held)
        log.info("billing: call %s reserved (plan %s, facility %s, %s)%s", call_id,
                 live.request.plan, live.request.facility_id, live.request.service,
                 f"; held {held}" if held else "")
        if live.end is not None:  # cancelled while we reserved
            self._settle(live, live.end)
            return None
        if live.call.answered is not None:
            self._answered(live, live.call.answered)
        return None

    def _reserve_failed(self, live: _Live, failure: Any) -> Rejection:
        self.sessions.pop(live.request.call_id, None)
        log.error("billing: call %s: reservation failed: %s", live.request.call_id,
                  failure.getErrorMessage())
        return Rejection(480, "Billing unavailable")

    # ------------------------------------------------------------ SIP events

    def on_call_event(self, ev: CallAnswered | CallEnded) -> None:
        live = self.sessions.get(ev.call.id)
        if live is None:
            return
        now = self.reactor.seconds()
        if isinstance(ev, CallAnswered):
            self._answered(live, ev.call.answered if ev.call.answered is not None else now)
            return
        if isinstance(self.meter, SignallingMeter):
            self.meter.ended(ev.call.id, now)
        info = EndInfo(now, ev.reason, ev.ended_by, ev.status, live.deliberate)
        if live.session is None:
            live.end = info  # settled when the reservation completes
        else:
            self._settle(live, info)

    def _answered(self, live: _Live, at: float) -> None:
        if isinstance(self.meter, SignallingMeter):
            self.meter.answered(live.request.call_id, at)
        if live.session is not None and live.session.state == "reserved":
            live.session.answered(at)
            # The first tick (an early warning) from a fresh turn, not inside SIP's flush.
            self.reactor.callLater(0, self._tick, live)

    def end_deliberately(self, call_id: str) -> None:
        """The next end of this call is on purpose (visit over, staff): no dropped-call credit."""
        live = self.sessions.get(call_id)
        if live is not None:
            live.deliberate = True

    # ------------------------------------------------------------ ticks

    def _tick_all(self) -> None:
        for live in list(self.sessions.values()):
            if live.session is not None and live.session.state == "answered":
                self._tick(live)

    def _tick(self, live: _Live) -> None:
        session = live.session
        if session is None or session.state != "answered" or self.ledger is None:
            return
        now = self.reactor.seconds()
        tick = session.tick(now, self.meter.media_seconds(session.call_id))
        self._persist(live)
        if tick.has_io:
            ledger = self.ledger
            d = live.lock.run(threads.deferToThread, ledger.apply_tick, session.facts, tick)
            d.addCallbacks(lambda result: self._applied(live, result),
                           lambda f: self._applied(live, TickResult(0, {}, f.getErrorMessage())))
        for event in tick.events:
            self._session_event(live, event)
        self._arm(live, tick.next_deadline)

    def _arm(self, live: _Live, deadline: float | None) -> None:
        """A timer for a warning or cut-off due before the next heartbeat."""
        if live.timer is not None and live.timer.active():
            live.timer.cancel()
        live.timer = None
        if deadline is None or live.session is None or live.session.state != "answered":
            return
        delay = max(MIN_DEADLINE_DELAY, deadline - self.reactor.seconds())
        if delay < self.billing.heartbeat_seconds:
            live.timer = self.reactor.callLater(delay, self._tick, live)

    def _applied(self, live: _Live, result: TickResult) -> None:
        session = live.session
        assert session is not None
        session.applied(result)
        if result.error:
            log.warning("billing: call %s: %s", session.call_id, result.error)
        if result.settled and not live.settling:
            # Another node took this one for dead (we lost the cluster for longer than
            # [store] node_timeout_seconds) and settled the call: it cannot be billed
            # further, so it ends; our settlement finds that CDR and writes nothing.
            log.warning("billing: call %s was settled by another node; ending it",
                        session.call_id)
            live.deliberate = True
            call = live.call
            if self.sip is not None:
                self.sip.run(lambda calls: calls.hangup(call, SETTLED_ELSEWHERE))
            else:
                self._settle(live, EndInfo(self.reactor.seconds(), SETTLED_ELSEWHERE,
                                           "gateway"))
            return
        if session.state == "answered":
            self._persist(live)
            # The funds may have changed, and with them the cut-off.
            now = self.reactor.seconds()
            self._arm(live, session.deadline(now, self.meter.media_seconds(session.call_id)))

    def _session_event(self, live: _Live, event: SessionEvent) -> None:
        call_id = live.request.call_id
        if isinstance(event, LowBalance):
            log.info("billing: call %s: low balance, about %d s of call time left (%s): "
                     "warning sent", call_id, event.seconds_left, ", ".join(event.accounts))
            self._emit(event)
        else:
            log.info("billing: call %s: prepaid funds used up after %d s; ending the call",
                     call_id, event.media_seconds)
            self._emit(event)
            live.deliberate = True
            call = live.call
            if self.sip is not None:
                self.sip.run(lambda calls: calls.hangup(call, FUNDS_EXHAUSTED))

    # ------------------------------------------------------------ settlement

    def _settle(self, live: _Live, info: EndInfo) -> None:
        session = live.session
        if session is None or live.settling or self.ledger is None:
            return
        live.settling = True
        if live.timer is not None and live.timer.active():
            live.timer.cancel()
        request = session.end(info, self.meter.media_seconds(session.call_id))
        self._persist(live)
        self._settle_request(live, request)

    def _settle_request(self, live: _Live, request: SettleRequest) -> None:
        assert self.ledger is not None
        d = live.lock.run(threads.deferToThread, self.ledger.settle, request)
        d.addCallbacks(lambda result: self._settled(live, *result),
                       lambda f: self._settle_failed(live, request, f))

    def _settled(self, live: _Live, cdr: Cdr, wrote: bool) -> None:
        call_id = cdr.call_id
        self.sessions.pop(call_id, None)
        self.store.delete(STORE_NAMESPACE, call_id)
        if isinstance(self.meter, SignallingMeter):
            self.meter.forget(call_id)
        log.info("billing: call %s settled (%s, ended by %s): %s", call_id,
                 cdr.disconnect_cause, cdr.ended_by, describe(cdr))
        if wrote:
            self._emit(CallSettled(call_id, cdr))

    def _settle_failed(self, live: _Live, request: SettleRequest, failure: Any) -> None:
        log.error("billing: call %s: settlement failed (retrying in %.0f s): %s",
                  request.facts.call_id, SETTLE_RETRY_SECONDS, failure.getErrorMessage())
        if self.running:
            self.reactor.callLater(SETTLE_RETRY_SECONDS, self._settle_request, live, request)

    # ------------------------------------------------------------ recovery

    @defer.inlineCallbacks
    def _recover(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Settle what a crash left open, from the last heartbeat or the ledger."""
        assert self.ledger is not None
        ledger = self.ledger
        open_calls = yield threads.deferToThread(ledger.open_calls, self.node_id)
        now = self.reactor.seconds()
        for call in open_calls:
            call_id = call.facts.call_id
            beat = self.store.get(STORE_NAMESPACE, call_id, now)
            try:
                cdr, wrote = yield threads.deferToThread(ledger.recover, call, self.policy, beat)
            except Exception as exc:  # noqa: BLE001 - one bad call must not stop the others
                log.error("billing: call %s could not be recovered: %s", call_id, exc)
                continue
            self.store.delete(STORE_NAMESPACE, call_id)
            source = "its last heartbeat" if beat is not None else "the ledger"
            log.info("billing: recovered call %s from %s: %s", call_id, source, describe(cdr))
            if wrote:
                self._emit(CallSettled(call_id, cdr))
        recovered = {c.facts.call_id for c in open_calls}
        for key, value in list(self.store.scan(STORE_NAMESPACE, now)):
            if value.get("node") == self.node_id and key not in recovered:
                self.store.delete(STORE_NAMESPACE, key)  # settled before the crash
        log.info("billing: recovered %d open call(s)", len(open_calls))
        if self._redis is not None:
            yield self._take_over_from_ledger()

    # ------------------------------------------------------------ other nodes' calls
    #
    # With a shared store, a node that dies does not leave its calls open until it
    # comes back: once it has been silent for [store] node_timeout_seconds, and its
    # call's own heartbeat is as old, one live node (the store's choice, the same on
    # every node) settles the call from that heartbeat, as the dead node would have
    # at restart.  Settlement is idempotent under the ledger lock, so a node that
    # restarts meanwhile, or two nodes that disagree for a moment on who is alive,
    # write one CDR between them; and a node that was only cut off finds its call
    # settled at its next increment and ends it (``TickResult.settled``).

    def _stale_after(self) -> float:
        assert self._redis is not None
        return float(self._redis.node_timeout) + 2 * self.billing.heartbeat_seconds

    def _orphaned(self, call_id: str, node: str, last_seen: float, now: float) -> bool:
        redis = self._redis
        return (redis is not None and call_id not in self._taking_over
                and call_id not in self.sessions
                and now - last_seen >= self._stale_after()
                and redis.takes_over(node, STORE_NAMESPACE, call_id))

    def _take_over(self) -> None:
        """Heartbeat records of calls whose node is gone: settle them (cheap, in memory)."""
        if self.ledger is None or self._redis is None or not self._redis.connected:
            return
        now = self.reactor.seconds()
        for call_id, value in list(self.store.scan(STORE_NAMESPACE, now)):
            node = str(value.get("node", ""))
            beat = value.get("heartbeat_ms", 0)
            last = beat / 1000 if isinstance(beat, int) else 0.0
            if node and self._orphaned(call_id, node, last, now):
                self._settle_orphan(call_id, node)

    @defer.inlineCallbacks
    def _take_over_from_ledger(self) -> Generator[defer.Deferred[Any], Any, None]:
        """Open calls of gone nodes that have no heartbeat record (rare: a scan of the ledger)."""
        if self.ledger is None or self._redis is None or not self._redis.connected:
            return
        try:
            calls = yield threads.deferToThread(self.ledger.open_calls, self.node_id,
                                                others=True)
        except Exception as exc:  # noqa: BLE001 - logged; the next scan tries again
            log.error("billing: could not look for calls of gone nodes: %s", exc)
            return
        now = self.reactor.seconds()
        for call in calls:
            call_id = call.facts.call_id
            if self.store.get(STORE_NAMESPACE, call_id, now) is not None:
                continue  # _take_over sees it, with its heartbeat
            if self._orphaned(call_id, call.facts.node_id, call.last_activity.timestamp(), now):
                self._settle_orphan(call_id, call.facts.node_id)

    @defer.inlineCallbacks
    def _settle_orphan(self, call_id: str, node: str) -> Generator[defer.Deferred[Any], Any, None]:
        assert self.ledger is not None
        ledger = self.ledger
        self._taking_over.add(call_id)
        try:
            call = yield threads.deferToThread(ledger.open_call, call_id)
            now = self.reactor.seconds()
            beat = self.store.get(STORE_NAMESPACE, call_id, now)
            if call is None:  # settled already (by its node, or another taker)
                self.store.delete(STORE_NAMESPACE, call_id)
                return
            cdr, wrote = yield threads.deferToThread(ledger.recover, call, self.policy, beat)
        except Exception as exc:  # noqa: BLE001 - logged; the next sweep tries again
            log.error("billing: call %s of node %s could not be taken over: %s",
                      call_id, node, exc)
            return
        finally:
            self._taking_over.discard(call_id)
        self.store.delete(STORE_NAMESPACE, call_id)
        source = "its last heartbeat" if beat is not None else "the ledger"
        log.info("billing: took over call %s of node %s (gone), settled from %s: %s",
                 call_id, node, source, describe(cdr))
        if wrote:
            self._emit(CallSettled(call_id, cdr))

    # ------------------------------------------------------------ housekeeping

    def _persist(self, live: _Live) -> None:
        if live.session is None:
            return
        now = self.reactor.seconds()
        self.store.put(STORE_NAMESPACE, live.request.call_id, live.session.snapshot(now),
                       STORE_TTL, now)

    def _sweep(self) -> None:
        if self._sweeping or self.ledger is None:
            return
        self._sweeping = True

        def done(n: int) -> None:
            if n:
                log.info("billing: released %d expired hold(s)", n)

        d = threads.deferToThread(self.ledger.release_expired_holds)
        d.addCallbacks(done, lambda f: log.error("billing: hold sweep failed: %s",
                                                 f.getErrorMessage()))
        d.addBoth(lambda _: setattr(self, "_sweeping", False))

    def _emit(self, event: BillingEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a listener must not break billing
                log.exception("billing event listener failed")


__all__ = ["BillingEvent", "BillingService", "CallRefused", "CallSettled"]
