"""Assemble the gateway's Twisted services and set up logging.

Shared by ``gateway run`` and the twistd plugin so that both run exactly the same
service tree.  Importing this module must not import the reactor: entry points
call :func:`gateway.reactor.install_reactor` first.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any, TextIO

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from gateway.config import Config, ListenAddress, package_version
from gateway.sip.service import SipService

log = Logger(namespace="gateway")

_TWISTED_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
}
_STDLIB_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _StdlibToTwisted(logging.Handler):
    """Forwards stdlib ``logging`` records into twisted.logger.

    Libraries we use (asyncio, aiortc, database drivers) log through stdlib
    logging; sending them to twisted.logger gives one stream, in one format, to
    whatever observer is active (ours on stdout, or twistd's log file).
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # never let a bad log call break the caller
            self.handleError(record)
            return
        if record.levelno >= logging.CRITICAL:
            level = LogLevel.critical
        elif record.levelno >= logging.ERROR:
            level = LogLevel.error
        elif record.levelno >= logging.WARNING:
            level = LogLevel.warn
        elif record.levelno >= logging.INFO:
            level = LogLevel.info
        else:
            level = LogLevel.debug
        Logger(namespace=record.name).emit(level, "{text}", text=text)


def bridge_stdlib_logging(level: str) -> None:
    """Route stdlib logging into twisted.logger at ``level`` (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibToTwisted):
            root.removeHandler(handler)
    handler = _StdlibToTwisted()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    root.setLevel(_STDLIB_LEVELS[level])


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Log everything at ``level`` and above to ``stream`` (stdout), one line per event.

    Stdout, not a file: under systemd, Docker or a terminal the supervisor
    already collects stdout, and ops staff look there first.
    """
    # twisted.logger's zope interfaces are invisible to mypy, hence the casts.
    text: Any = textFileLogObserver(stream or sys.stdout)
    predicate: Any = LogLevelFilterPredicate(defaultLogLevel=_TWISTED_LEVELS[level])
    observer: Any = FilteringLogObserver(text, [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    bridge_stdlib_logging(level)


class GatewayService(MultiService):
    """The service tree's root; says "stopped" only once every child has stopped."""

    def __init__(self, config: Config) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.config = config
        self.setName("gateway")  # type: ignore[no-untyped-call]

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        gw = self.config.gateway
        source = self.config.source or "embedded defaults"
        log.info(
            "gateway {node} {version} starting (config: {source}, data: {data})",
            node=gw.node_id, version=package_version(), source=str(source),
            data=str(gw.data_dir),
        )
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Any:  # noqa: N802
        node = self.config.gateway.node_id

        def stopped(result: object) -> object:
            log.info("gateway {node} stopped", node=node)
            return result

        d: Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]
        return d.addBoth(stopped)


class _Lifecycle(Service):
    """First child: prepares data_dir and the secret before anything else starts."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def startService(self) -> None:  # noqa: N802
        gw = self.config.gateway
        gw.data_dir.mkdir(parents=True, exist_ok=True)
        gw.secret_key()  # created now, so a read-only data_dir fails at start, not mid-call
        super().startService()  # type: ignore[no-untyped-call]


class _Ready(Service):
    """Last child: announces readiness once every other service has started."""

    def __init__(self, config: Config, sip: Any) -> None:
        self.config = config
        self.sip = sip

    def listeners(self) -> str:
        """What is really bound (port 0 resolved) where the SIP service says so."""
        bound = getattr(self.sip, "bound", None)
        if isinstance(bound, dict) and bound:
            return ", ".join(
                f"{transport}:{ListenAddress('udp', host, port).hostport}"
                for transport, (host, port) in bound.items()
            )
        return ", ".join(str(a) for a in self.config.sip.listen) or "nothing"

    def startService(self) -> None:  # noqa: N802
        super().startService()  # type: ignore[no-untyped-call]
        from twisted.internet import reactor

        # twistd starts services before the reactor runs and installs its signal
        # handlers; "ready" must mean that SIGTERM will now stop us cleanly.
        reactor.callWhenRunning(self.announce)

    def announce(self) -> None:
        if not self.running:
            return
        tune_gc()
        log.info(
            "gateway {node} ready: SIP listening on {listeners} (public host {host})",
            node=self.config.gateway.node_id, listeners=self.listeners(),
            host=self.config.sip.public_host,
        )

    def stopService(self) -> Any:  # noqa: N802
        log.info("gateway {node} stopping", node=self.config.gateway.node_id)
        return super().stopService()  # type: ignore[no-untyped-call]


# Full garbage collections happen after this many collections of the middle generation
# (Python's default is 10).
GC_FULL_EVERY = 100


def tune_gc() -> None:
    """Collector settings for a long-running server, applied once start-up is done.

    A full collection looks at every object in memory and stops everything meanwhile:
    with a few hundred calls/s that is hundreds of thousands of objects (calls and
    transactions are kept for 64*T1 = 32 s after they end) and pauses of 0.3-0.6 s,
    long enough for peers to retransmit.  The SIP objects are freed by reference
    counting (the call layer breaks its cycles), so full collections find next to
    nothing and need not run every few seconds: they run ten times less often.
    Objects made during start-up (modules, configuration, accounts) live as long as the
    process and are frozen out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, GC_FULL_EVERY)


def make_service(config: Config) -> GatewayService:
    """The whole gateway as one Twisted service (later: the media bridge)."""
    top = GatewayService(config)
    sip = SipService(config)
    children: list[tuple[str, Any]] = [
        ("lifecycle", _Lifecycle(config)),
        ("sip", sip),
    ]
    if config.billing.enabled:  # imported only then: billing brings the database code
        from gateway.billing.service import BillingService

        children.insert(1, ("billing", BillingService(config, sip)))
    if config.web.enabled:
        from gateway.web.media import PerBrowserSessions
        from gateway.web.service import WebService
        from gateway.webrtc import WebRtcEndpoint

        # Browser media: [webrtc] addresses and servers; [web] media_mode picks echo or
        # test-pattern until the SIP bridge exists.  The bridge and billing reach the
        # browsers via top.getServiceNamed("web").hub.
        media = PerBrowserSessions(WebRtcEndpoint(config.webrtc))
        children.append(("web", WebService(config, media_endpoint=media)))
    children.append(("ready", _Ready(config, sip)))
    for name, child in children:
        child.setName(name)
        child.setServiceParent(top)
    return top
