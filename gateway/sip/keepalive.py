"""OPTIONS keepalives to registered kiosks (sans-IO, on the core's timers).

A kiosk behind a facility firewall or NAT loses its pinhole when nothing flows;
a periodic OPTIONS over the registration's own flow keeps it open and tells the
operator, in the log, which kiosks stopped answering.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from .core import SipCore
from .message import Request, Response
from .transaction import ClientTransaction, Peer

log = logging.getLogger("gateway.sip.keepalive")

BATCH = 200  # OPTIONS sent in one go (about 20 ms of work)
BATCH_GAP = 0.05  # seconds between batches: 10,000 kiosks take 2.5 s per round


class KeepAlive:
    def __init__(self, core: SipCore, registrar: Any, interval: float) -> None:
        self.core = core
        self.registrar = registrar
        self.interval = interval
        self.unreachable: set[str] = set()
        self.sent = 0

    def start(self) -> None:
        self.core.call_later(self.interval, self._tick)

    def _tick(self, now: float) -> None:
        self._send_batch(list(self.registrar.all_contacts(now)), 0, now)
        self.core.call_later(self.interval, self._tick)

    def _send_batch(self, contacts: list[tuple[str, str, Peer]], start: int,
                    now: float) -> None:
        """A round's OPTIONS go out BATCH at a time, BATCH_GAP apart: 10,000 kiosks at
        once stopped the gateway for over a second, and their answers, arriving
        meanwhile, waited long enough for the OPTIONS to be retransmitted."""
        end = start + BATCH
        for username, contact_uri, peer in contacts[start:end]:
            self.ping(username, contact_uri, peer)
        if end < len(contacts):
            self.core.call_later(BATCH_GAP, lambda n: self._send_batch(contacts, end, n))

    def ping(self, username: str, contact_uri: str, peer: Peer) -> None:
        core = self.core
        host, port = core.local_address(peer[0])
        req = Request("OPTIONS", contact_uri)
        items = req.headers.items
        items.append(("Max-Forwards", "70"))
        items.append(("From", f"<sip:keepalive@{host}:{port}>;tag={secrets.token_hex(4)}"))
        items.append(("To", f"<{contact_uri}>"))
        items.append(("Call-ID", f"{secrets.token_hex(10)}@{host}"))
        items.append(("CSeq", "1 OPTIONS"))
        items.append(("User-Agent", core.config.user_agent))
        self.sent += 1

        def on_response(resp: Response, txn: ClientTransaction) -> None:
            if resp.status >= 200 and username in self.unreachable:
                self.unreachable.discard(username)
                log.info("kiosk %s answers keepalives again", username)

        def on_timeout(txn: ClientTransaction) -> None:
            if username not in self.unreachable:
                self.unreachable.add(username)
                log.warning("kiosk %s (%s:%s:%s) does not answer keepalive OPTIONS",
                            username, *peer)

        core.send_request(req, peer, on_response, on_timeout)
