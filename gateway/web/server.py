"""Run the web application with uvicorn on the already-running asyncio loop.

The gateway has one process and one loop, driven by Twisted's asyncio reactor, so
uvicorn must behave as a guest:

* ``Server.serve()`` runs as an ordinary task on that loop (never ``uvicorn.run``,
  which would start a loop of its own);
* its signal handling is switched off (:class:`_GuestServer`): Twisted owns SIGINT
  and SIGTERM and stops us through :meth:`WebServer.stop`;
* sockets are bound here, synchronously, before the task starts, so a port already in
  use fails start-up with an OSError like the SIP listeners do, instead of
  ``sys.exit`` inside a task (which is what uvicorn does when it binds itself);
* no lifespan, no logging configuration (stdlib logging is already bridged into
  twisted.logger), no access log, no proxy headers (the peer address is the one
  the failed-join limiter counts).

One uvicorn server per scheme: all ``http:`` sockets share one, all ``https:`` sockets
another, since uvicorn has one TLS context per server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Generator

import uvicorn

from gateway.config import Config, WebListenAddress
from gateway.sip.ratelimit import AuthFailureLimiter
from gateway.webrtc.api import MediaEndpoint

from .billing_api import install_billing_api
from .media import browser_ice_servers
from .protocol import CLOSE_GOING_AWAY
from .routes import create_app
from .signalling import SignallingContext, SignallingHub
from .tokens import JoinTokens

log = logging.getLogger("gateway.web")

SHUTDOWN_CLOSE_SECONDS = 2.0  # for browsers to answer our close frames
SHUTDOWN_SECONDS = 5.0  # for uvicorn to finish open requests


class _GuestServer(uvicorn.Server):
    """uvicorn's server without its SIGINT/SIGTERM handlers (Twisted's are in charge)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _listen_socket(addr: WebListenAddress) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr.host, addr.port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"web: cannot listen on {addr}: {exc.strerror}") from None
    return sock


def tls_context(certificate: str, private_key: str) -> ssl.SSLContext:
    """Server TLS: 1.2 or newer, Python's default (modern) ciphers, HTTP/1.1 by ALPN."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(certificate, private_key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class WebServer:
    """The web side as asyncio objects: bind, then start on a loop, then stop."""

    def __init__(self, config: Config, media: MediaEndpoint, *,
                 hub: SignallingHub | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        web = config.web
        self.config = config
        self.hub = hub or SignallingHub()
        limiter = None
        if web.join_failure_limit > 0:
            limiter = AuthFailureLimiter(web.join_failure_limit, web.join_failure_window,
                                         web.join_block_seconds)
        self.context = SignallingContext(
            web=web, tokens=JoinTokens(config.gateway.secret_key()), hub=self.hub,
            media=media, limiter=limiter, clock=clock,
            ice_servers=browser_ice_servers(config.webrtc),
        )
        self.app = create_app(self.context)
        self.billing = install_billing_api(self.app, config)  # None unless [billing] on
        self.bound: list[WebListenAddress] = []  # port 0 resolved
        self._sockets: dict[str, list[socket.socket]] = {}
        self._servers: list[tuple[_GuestServer, list[socket.socket]]] = []
        self._task: asyncio.Future[None] | None = None

    @property
    def urls(self) -> list[str]:
        return [f"{a.scheme}://{a.hostport}" for a in self.bound]

    def bind(self) -> None:
        """Bind every listener now; on failure close them all and raise OSError."""
        web = self.config.web
        contexts: dict[str, ssl.SSLContext | None] = {"http": None}
        try:
            if any(a.scheme == "https" for a in web.listen):
                if web.certificate is None or web.private_key is None:
                    raise OSError("web: an https: listener needs certificate and private_key")
                contexts["https"] = tls_context(str(web.certificate), str(web.private_key))
            for addr in web.listen:
                sock = _listen_socket(addr)
                self._sockets.setdefault(addr.scheme, []).append(sock)
                host, port = sock.getsockname()[:2]
                self.bound.append(WebListenAddress(addr.scheme, host, port))
        except BaseException:
            self._close_sockets()
            raise
        for scheme, socks in self._sockets.items():
            self._servers.append((self._uvicorn(contexts[scheme]), socks))

    def _uvicorn(self, tls: ssl.SSLContext | None) -> _GuestServer:
        web = self.config.web
        factory = None if tls is None else (lambda _config, _default: tls)
        config = uvicorn.Config(
            self.app, http="h11", ws="websockets-sansio", lifespan="off", log_config=None,
            access_log=False, proxy_headers=False, server_header=False,
            ws_max_size=web.max_message_bytes, ws_per_message_deflate=False,
            timeout_graceful_shutdown=int(SHUTDOWN_SECONDS), ssl_context_factory=factory,
        )
        config.load()  # here, so that a problem shows at start-up, not inside a task
        quiet = logging.getLogger("uvicorn.error")
        if quiet.level == logging.NOTSET:  # "Started server process" x N is noise for us
            quiet.setLevel(logging.WARNING)
        return _GuestServer(config)

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """Serve on ``loop`` (running or about to run) until :meth:`stop`."""
        if not self._servers:
            self.bind()
        self._task = asyncio.ensure_future(self._serve(), loop=loop)
        return self._task

    async def _serve(self) -> None:
        try:
            await asyncio.gather(*(srv.serve(sockets=socks) for srv, socks in self._servers))
        except asyncio.CancelledError:
            raise
        except BaseException:  # SystemExit included: it must never reach the reactor
            log.exception("web: the web server failed")

    async def stop(self) -> None:
        """Close every signalling socket (1001), then stop serving and release the ports."""
        await self.hub.close_all(CLOSE_GOING_AWAY, "gateway shutting down",
                                 SHUTDOWN_CLOSE_SECONDS)
        for srv, _ in self._servers:
            srv.should_exit = True
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), SHUTDOWN_SECONDS + 2)
            except TimeoutError:
                for srv, _ in self._servers:
                    srv.force_exit = True
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._close_sockets()

    def _close_sockets(self) -> None:
        for socks in self._sockets.values():
            for sock in socks:
                sock.close()
        self._sockets.clear()
