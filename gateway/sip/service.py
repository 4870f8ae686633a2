"""Twisted service that runs the SIP side of the gateway.

It binds the configured listeners, builds the sans-IO core (transactions, registrar,
call layer) and connects the routing seam to the configuration's rules.  Logic lives
in the sans-IO modules; this file only wires them to the reactor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer, ssl

from ..config import Config, ListenAddress
from ..store.base import Store
from ..store.memory import MemoryStore
from ..store.redis import RedisStore, start_in_reactor
from .b2bua import CallAnswered, CallEnded, CallLayer, IncomingCall, SessionTimerConfig
from .core import CoreConfig, SipCore
from .keepalive import KeepAlive
from .registrar_glue import BindingContacts, RegistrarHandler, make_authorizer, make_registrar
from .routing import ConfigRouter, Rejection, Target
from .transaction import Peer, TimerConfig
from .transport import (
    SipClientFactory,
    SipDriver,
    SipStreamFactory,
    SipUdpProtocol,
)

log = logging.getLogger("gateway.sip")

STATUS_INTERVAL = 30.0  # seconds between "SIP status" log lines (only when they change)


class SipService(service.Service):
    """Binds the configured SIP transports and drives the sans-IO SIP core."""

    def __init__(self, config: Config, reactor: Any = None) -> None:
        self.config = config
        self._reactor = reactor
        self.ports: list[Any] = []
        self.bound: dict[str, tuple[str, int]] = {}
        self.core: SipCore | None = None
        self.driver: SipDriver | None = None
        self.calls: CallLayer | None = None
        # Hooks for billing: ``call_gate`` may refuse a routed call (it may answer
        # later, with a Deferred); ``call_listeners`` see CallAnswered and CallEnded.
        self.call_gate: Callable[[IncomingCall], Any] | None = None
        self.call_listeners: list[Callable[[CallAnswered | CallEnded], None]] = []

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        super().startService()  # type: ignore[no-untyped-call]
        cfg = self.config
        sip = cfg.sip
        reactor = self.reactor
        driver = SipDriver(None, reactor, connect=self._connect,  # type: ignore[arg-type]
                           on_event=self._on_event)
        driver.max_connections_per_source = sip.max_tcp_connections_per_source
        self.driver = driver
        for addr in sip.listen:
            self._listen(addr, driver)
        local = {}
        for transport, (host, port) in self.bound.items():
            local[transport] = (sip.public_host or host, port)
        timers = TimerConfig(t1=sip.t1_ms / 1000, t2=sip.t2_ms / 1000, t4=sip.t4_ms / 1000)
        core = SipCore(CoreConfig(
            local=local, user_agent=sip.user_agent, force_rport=sip.force_rport,
            max_message_bytes=sip.max_message_bytes, max_headers=sip.max_headers,
            udp_size_threshold=sip.udp_size_threshold, timers=timers))
        core.now = reactor.seconds()
        driver.core = core
        self.core = core
        store: Store
        if cfg.store.redis_url:  # shared with the other nodes; loads in the background
            store = RedisStore(cfg.store.redis_url, cfg.store.key_prefix,
                               node_id=cfg.gateway.node_id,
                               node_timeout=cfg.store.node_timeout_seconds)
            start_in_reactor(store, reactor)
        else:
            store = MemoryStore()
        secret = cfg.gateway.secret_key()
        registrar, auth, limiter = make_registrar(sip, store, secret)
        self.registrar = registrar
        self.calls = CallLayer(core, make_authorizer(sip, auth, limiter, registrar),
                               SessionTimerConfig(sip.session_expires, sip.min_se))
        core.handlers.append(RegistrarHandler(registrar, core))
        core.handlers.append(self.calls)
        contacts = BindingContacts(registrar)
        self.router = ConfigRouter(cfg.routes, sip, contacts)
        if sip.options_keepalive_seconds > 0:
            self.keepalive = KeepAlive(core, contacts, sip.options_keepalive_seconds)
            self.keepalive.start()
        self._last_status: tuple[int, int, int] | None = None
        core.call_later(STATUS_INTERVAL, self._log_status)
        driver.flush()
        for transport, (host, port) in sorted(self.bound.items()):
            log.info("SIP listening on %s:%s:%s", transport, host, port)

    def _log_status(self, now: float) -> None:
        """One info line every STATUS_INTERVAL seconds when the counts changed."""
        core = self.core
        if core is None or not self.running:
            return
        core.call_later(STATUS_INTERVAL, self._log_status)
        try:
            bindings = self.registrar.bindings_count(now)
        except Exception:  # noqa: BLE001 - a status line must never break the service
            log.exception("could not count registrations")
            bindings = -1
        status = (bindings, len(self.calls.calls) if self.calls else 0, len(core.transactions))
        if status != self._last_status:
            self._last_status = status
            log.info("SIP status: %d registered binding(s), %d call(s), %d transaction(s); "
                     "%d message(s) received, %d sent", *status, core.stats["rx"],
                     core.stats["tx"])

    def _listen(self, addr: ListenAddress, driver: SipDriver) -> None:
        sip = self.config.sip
        reactor = self.reactor
        host = addr.host
        if addr.transport == "udp":
            family = "6" if ":" in host else "4"
            port = reactor.listenUDP(addr.port, SipUdpProtocol(driver, family), interface=host,
                                     maxPacketSize=65535)
        elif addr.transport == "tcp":
            port = reactor.listenTCP(addr.port, SipStreamFactory(
                driver, "tcp", sip.max_message_bytes, sip.tcp_idle_timeout), interface=host)
        else:
            assert sip.tls is not None
            ctx = ssl.DefaultOpenSSLContextFactory(  # type: ignore[no-untyped-call]
                str(sip.tls.private_key), str(sip.tls.certificate))
            port = reactor.listenSSL(addr.port, SipStreamFactory(
                driver, "tls", sip.max_message_bytes, sip.tcp_idle_timeout), ctx,
                interface=host)
        self.ports.append(port)
        self.bound.setdefault(addr.transport, (host, port.getHost().port))

    def _connect(self, peer: Peer) -> None:
        sip = self.config.sip
        assert self.driver is not None
        factory = SipClientFactory(self.driver, peer, sip.max_message_bytes,
                                   sip.tcp_idle_timeout)
        if peer[0] == "tls":
            self.reactor.connectSSL(peer[1], peer[2], factory, ssl.ClientContextFactory())
        else:
            self.reactor.connectTCP(peer[1], peer[2], factory, timeout=10)

    def _on_event(self, ev: Any) -> None:
        calls = self.calls
        assert calls is not None and self.core is not None
        if isinstance(ev, IncomingCall):
            decision = self.router.route(ev.user, self.core.now)
            if isinstance(decision, Rejection):
                log.info("call %s: no route for %r: %s %s", ev.call.id, ev.user,
                         decision.status, decision.reason)
                calls.reject(ev.call, decision.status, decision.reason)
            else:
                log.info("call %s: routing %r to %s", ev.call.id, ev.user, decision.description)
                if self.call_gate is None:
                    calls.connect(ev.call, decision.uri, decision.peer,
                                  from_user=ev.presented_user)
                else:
                    self._admit(ev, decision)
        elif isinstance(ev, CallAnswered | CallEnded):
            for listener in self.call_listeners:
                listener(ev)

    def _admit(self, ev: IncomingCall, target: Target) -> None:
        """Connect once the gate agrees (billing: payer, funds); refuse with its status."""
        assert self.call_gate is not None

        def failed(f: Any) -> Rejection:
            log.error("call %s: admission check failed: %s", ev.call.id, f.getErrorMessage())
            return Rejection(480, "Temporarily Unavailable")

        def decided(refusal: Rejection | None) -> None:
            if not ev.call.active:
                return  # cancelled meanwhile
            if refusal is None:
                self.run(lambda calls: calls.connect(ev.call, target.uri, target.peer,
                                                     from_user=ev.presented_user))
            else:
                log.info("call %s: refused: %s %s", ev.call.id, refusal.status, refusal.reason)
                self.run(lambda calls: calls.reject(ev.call, refusal.status, refusal.reason))

        d = defer.maybeDeferred(self.call_gate, ev)
        d.addErrback(failed)
        # Always from a fresh reactor turn, never inside the driver's flush.
        d.addCallback(lambda refusal: self.reactor.callLater(0, decided, refusal))

    def run(self, action: Callable[[CallLayer], object]) -> None:
        """Act on calls outside SIP input (a timer, a database answer), then send."""
        if self.calls is None or self.core is None or self.driver is None:
            return
        self.core.now = max(self.core.now, self.reactor.seconds())
        action(self.calls)
        self.driver.flush()

    def stopService(self) -> Any:  # noqa: N802
        from twisted.internet import defer

        ds = [defer.maybeDeferred(p.stopListening) for p in self.ports]
        self.ports = []
        if self.driver is not None:
            for conn in list(self.driver.streams.values()):
                transport: Any = conn.transport
                if transport is not None:
                    transport.loseConnection()
        super().stopService()  # type: ignore[no-untyped-call]
        return defer.gatherResults(ds)


__all__ = ["SipService"]
