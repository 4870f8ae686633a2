"""Install Twisted's asyncio reactor, once per process, before anything uses it.

One asyncio event loop drives both the Twisted SIP stack and asyncio libraries
(aiortc for WebRTC, Redis and database clients), so the reactor must be the
asyncio one.  Twisted picks its reactor the first time anything imports
``twisted.internet.reactor``; importing it earlier silently gives the default
(epoll) reactor and asyncio code then never runs.  Hence this module is imported
and called first by every entry point, and ``gateway/__init__.py`` imports no
reactor.
"""

from __future__ import annotations

import sys
from typing import Any


class ReactorError(RuntimeError):
    """Another reactor was installed first, so asyncio code could not run."""


def install_reactor() -> Any:
    """Install the asyncio reactor (idempotent) and return it.

    Raises ReactorError if a different reactor has already been installed.
    """
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        if isinstance(reactor, AsyncioSelectorReactor):
            return reactor
        kind = f"{type(reactor).__module__}.{type(reactor).__name__}"
        raise ReactorError(
            f"another Twisted reactor ({kind}) is already installed; the gateway needs the "
            "asyncio reactor: call gateway.reactor.install_reactor() before anything imports "
            "twisted.internet.reactor (with twistd, use --reactor=asyncio or none)"
        )
    from twisted.internet import asyncioreactor

    asyncioreactor.install()  # type: ignore[no-untyped-call]
    from twisted.internet import reactor as installed

    return installed
