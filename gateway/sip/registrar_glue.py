"""Wiring between configuration, the registrar, digest auth and the SIP core.

Who may call: a kiosk that proves its account's password (digest), or a trusted trunk
recognised by source address (plus digest if it has credentials).  Everything else is
challenged or refused, and repeated failures from one source are rate-limited.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import SipConfig
from ..store.base import Store
from .b2bua import Identity
from .core import SipCore
from .digest import Credential, DigestAuthenticator
from .message import Request
from .ratelimit import AuthFailureLimiter
from .registrar import Account, AccountDirectory, Registrar
from .transaction import Peer, ServerTransaction

log = logging.getLogger("gateway.sip.auth")


def make_registrar(
    sip: SipConfig, store: Store, secret: bytes
) -> tuple[Registrar, DigestAuthenticator, AuthFailureLimiter]:
    reg = sip.registrar
    auth = DigestAuthenticator(sip.realm, secret, tuple(reg.algorithms), reg.nonce_ttl)
    limiter = AuthFailureLimiter(reg.auth_failure_limit, reg.auth_failure_window,
                                 reg.auth_block_seconds)
    accounts = []
    for a in sip.accounts:
        ha1: dict[str, str] = {}
        if a.ha1_md5:
            ha1["MD5"] = a.ha1_md5
        if a.ha1_sha256:
            ha1["SHA-256"] = a.ha1_sha256
        accounts.append(Account(a.username, "kiosk", a.password, ha1 or None,
                                a.display_name or ""))
    registrar = Registrar(
        AccountDirectory(accounts), store, auth,
        min_expires=reg.min_expires, max_expires=reg.max_expires,
        default_expires=reg.default_expires, max_contacts=reg.max_contacts, limiter=limiter,
    )
    return registrar, auth, limiter


class RegistrarHandler:
    """Hands REGISTER to the registrar; expires bindings on the core's clock."""

    def __init__(self, registrar: Registrar, core: SipCore | None = None,
                 sweep: float = 5.0) -> None:
        self.registrar = registrar
        self.sweep = sweep
        if core is not None:
            core.call_later(sweep, lambda now: self._expire(core, now))

    def handle_request(self, core: SipCore, req: Request, peer: Peer,
                       txn: ServerTransaction | None, now: float) -> bool:
        if req.method != "REGISTER" or txn is None:
            return False
        resp, event = self.registrar.handle(req, peer, now)
        txn.respond(resp)
        if event is not None:
            core.emit(event)
            log.info("%s %s from %s:%s:%s (%d binding(s))", type(event).__name__.lower(),
                     event.aor, *peer, len(event.bindings))
        return True

    def _expire(self, core: SipCore, now: float) -> None:
        for ev in self.registrar.handle_expired(self.registrar.store.expire_due(now), now):
            core.emit(ev)
            log.info("registration of %s expired", ev.aor)
        core.call_later(self.sweep, lambda n: self._expire(core, n))


class BindingContacts:
    """The router's and keepalive's view of the registrar."""

    def __init__(self, registrar: Registrar) -> None:
        self.registrar = registrar

    def contacts(self, username: str, now: float) -> list[tuple[str, Peer]]:
        return [(b.contact, b.source) for b in self.registrar.lookup(username, now)]

    def all_contacts(self, now: float) -> list[tuple[str, str, Peer]]:
        return [(b.aor, b.contact, b.source) for b in self.registrar.all_bindings(now)]


def make_authorizer(sip: SipConfig, auth: DigestAuthenticator,
                    limiter: AuthFailureLimiter, registrar: Registrar) -> Any:
    """The INVITE gate used by the call layer (see b2bua.Authorizer)."""
    trunk_creds = {t.username: Credential(t.username, t.password)
                   for t in sip.trunks if t.username and t.password}

    def authorize(core: SipCore, req: Request, peer: Peer, txn: ServerTransaction,
                  now: float) -> Identity | None:
        ip = peer[1]
        trunk = sip.trunk_for_source(ip)
        if trunk is not None and not trunk.username:
            return Identity(trunk.name, "trunk")
        if limiter.is_blocked(ip, now):
            limiter.note_rejected(ip, now)
            core.respond(txn, req, 403, "Forbidden")
            return None

        def lookup(username: str) -> Credential | None:
            if trunk is not None:
                return trunk_creds.get(username) if username == trunk.username else None
            account = registrar.accounts.get(username)
            return account.credential if account is not None else None

        def algorithms_for(username: str) -> list[str] | None:
            # As the registrar does for REGISTER: offer only the algorithms the
            # account's stored HA1s can check (an ha1_md5-only kiosk is otherwise
            # challenged with SHA-256 first, and re-challenged forever).
            credential = None if trunk is not None else lookup(username)
            if credential is None:
                return None
            return [a for a in auth.algorithms if credential.supports(a)]

        result = auth.verify(req, lookup, now)
        if result.ok:
            if trunk is not None:
                return Identity(trunk.name, "trunk")
            return Identity(result.username or "", "kiosk")
        if result.needs_challenge or result.stale:
            try:
                caller = result.username or req.from_addr.uri.user or ""
            except ValueError:
                caller = ""
            challenges = auth.challenge(now, stale=result.stale,
                                        algorithms=algorithms_for(caller))
            core.respond(txn, req, 401, extra=[("WWW-Authenticate", v) for v in challenges])
            return None
        if result.bad_credentials:
            limiter.record_failure(ip, now)
            log.warning("INVITE from %s:%s refused: bad credentials for %r", ip, peer[2],
                        result.username)
            core.respond(txn, req, 403, "Forbidden")
            return None
        log.warning("INVITE from %s:%s refused: %s", ip, peer[2], result.reason)
        core.respond(txn, req, 400, f"Bad Request ({result.reason})")
        return None

    return authorize
