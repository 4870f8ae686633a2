"""``WebService``: the web side as a Twisted service in the gateway's tree.

A thin adapter: :class:`~gateway.web.server.WebServer` does the work on the asyncio
loop that Twisted's asyncio reactor runs; this service binds at ``startService``
(so a taken port fails start-up like SIP does) and turns ``stopService`` into a
Deferred that fires once every socket is closed.

The media hook: pass the WebRTC :class:`~gateway.webrtc.api.MediaEndpoint` as
``media_endpoint``.  Until ``gateway.webrtc`` provides one, offers are answered with
``media_unavailable`` (see :mod:`gateway.web.media`).  The bridge and billing reach the
browsers through :attr:`WebService.hub` (``broadcast``, ``end_call``, ``on_change``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from gateway.config import Config
from gateway.webrtc.api import MediaEndpoint

from .media import UnwiredMediaEndpoint
from .server import WebServer
from .signalling import SignallingHub

log = logging.getLogger("gateway.web")


class WebService(Service):
    """Serves the call page, the API and ``/ws`` on the reactor's asyncio loop."""

    def __init__(self, config: Config, media_endpoint: MediaEndpoint | None = None,
                 reactor: Any = None) -> None:
        self.config = config
        self.media_endpoint = media_endpoint
        self._reactor = reactor
        self.hub = SignallingHub()  # exists before start, so others can hook in early
        self.server: WebServer | None = None

    @property
    def reactor(self) -> Any:
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = getattr(self.reactor, "_asyncioEventloop", None)
        if not isinstance(loop, asyncio.AbstractEventLoop):
            raise RuntimeError("the web service needs Twisted's asyncio reactor "
                               "(gateway.reactor.install_reactor)")
        return loop

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        media = self.media_endpoint
        if media is None:
            log.warning("web: no WebRTC media endpoint is wired in yet; offers will be "
                        "answered with media_unavailable")
            media = UnwiredMediaEndpoint()
        server = WebServer(self.config, media, hub=self.hub)
        server.bind()  # OSError (port taken, bad certificate) stops start-up here
        self.server = server
        super().startService()  # type: ignore[no-untyped-call]
        server.start(self._loop())
        log.info("web: listening on %s (media mode %s)", ", ".join(server.urls),
                 self.config.web.media_mode)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()  # type: ignore[no-untyped-call]
        server, self.server = self.server, None
        if server is None:
            return succeed(None)
        future = asyncio.ensure_future(server.stop(), loop=self._loop())
        return Deferred.fromFuture(future)
