"""The kiosk registrar (RFC 3261 10.3), driven the way kiosks drive it."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence

import pytest

from gateway.sip.digest import (
    AuthResult,
    DigestAuthenticator,
    authorization_for,
    compute_ha1,
    parse_auth_header,
    select_challenge,
)
from gateway.sip.message import Request, Response, parse_datagram
from gateway.sip.ratelimit import AuthFailureLimiter
from gateway.sip.registrar import (
    AOR_NAMESPACE,
    Account,
    AccountDirectory,
    Binding,
    Expired,
    Refreshed,
    Registered,
    Registrar,
    RegistrarEvent,
    Source,
    Unregistered,
    bindings_namespace,
    contact_key,
    parse_contact,
)
from gateway.store import MemoryStore

REALM = "gw.example.org"
SECRET = b"registrar test secret, 32 bytes!"
T0 = 1_700_000_000.0
SRC: Source = ("udp", "203.0.113.10", 40000)
RURI = "sip:gw.example.org"


def make_registrar(
    accounts: Iterable[Account] | None = None, **kw: object
) -> tuple[Registrar, MemoryStore]:
    store = MemoryStore()
    if accounts is None:
        accounts = [Account(f"kiosk-{i}", "kiosk", password=f"pw-{i}") for i in range(1, 4)]
    auth = DigestAuthenticator(REALM, SECRET)
    reg = Registrar(AccountDirectory(accounts), store, auth, **kw)  # type: ignore[arg-type]
    return reg, store


class Kiosk:
    """A UA that registers the way baresip does: 401, then credentials, nc counting up."""

    _ids = itertools.count()

    def __init__(
        self,
        reg: Registrar,
        user: str = "kiosk-1",
        password: str | None = None,
        source: Source = SRC,
        contact: str | None = None,
    ) -> None:
        self.reg = reg
        self.user = user
        self.password = password if password is not None else f"pw-{user.rsplit('-', 1)[-1]}"
        self.source = source
        self.contact = contact or f"<sip:{user}@192.168.1.50:5060;transport=udp>"
        self.call_id = f"call-{next(self._ids)}@192.168.1.50"
        self.cseq = 0
        self.challenge: str | None = None
        self.nc = 0
        self.to = f"<sip:{user}@{REALM}>"

    def request(
        self,
        contacts: Sequence[str] | None = None,
        expires: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        cseq: int | None = None,
        authorize: bool = True,
    ) -> Request:
        self.cseq = cseq if cseq is not None else self.cseq + 1
        headers = [
            ("Via", f"SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK{self.cseq}x;rport"),
            ("Max-Forwards", "70"),
            ("To", self.to),
            ("From", f"{self.to};tag=f00d"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("User-Agent", "baresip v3.10.1 (x86_64/linux)"),
        ]
        for c in [self.contact] if contacts is None else contacts:
            headers.append(("Contact", c))
        if expires is not None:
            headers.append(("Expires", expires))
        headers += list(extra)
        if authorize and self.challenge is not None:
            self.nc += 1
            headers.append(("Authorization", authorization_for(
                self.challenge, "REGISTER", RURI, self.user, self.password, "c0ffee", self.nc)))
        return Request("REGISTER", RURI, headers)

    def send(self, now: float, **kw: object) -> tuple[Response, RegistrarEvent | None]:
        """One REGISTER, answering a 401 once as a UA would."""
        resp, event = self.reg.handle(self.request(**kw), self.source, now)  # type: ignore[arg-type]
        if resp.status == 401 and kw.get("authorize", True):
            self.challenge = select_challenge(resp.headers.get_all("WWW-Authenticate"))
            self.nc = 0
            retry = {k: v for k, v in kw.items() if k != "cseq"}  # a new CSeq, as RFC 3261 22.3
            resp, event = self.reg.handle(self.request(**retry), self.source, now)  # type: ignore[arg-type]
        return resp, event


def contacts_of(resp: Response) -> list[str]:
    return resp.headers.get_list("Contact")


# Authentication -------------------------------------------------------------------------


def test_first_register_is_challenged() -> None:
    reg, store = make_registrar()
    resp, event = reg.handle(Kiosk(reg).request(), SRC, T0)
    assert resp.status == 401 and event is None
    challenges = resp.headers.get_all("WWW-Authenticate")
    assert [parse_auth_header(c)[1]["algorithm"] for c in challenges] == ["SHA-256", "MD5"]
    assert resp.to_tag  # RFC 3261 8.2.6.2
    assert len(store) == 0


def test_register_then_lookup() -> None:
    reg, _ = make_registrar()
    resp, event = Kiosk(reg).send(T0)
    assert resp.status == 200
    assert contacts_of(resp) == ["<sip:kiosk-1@192.168.1.50:5060;transport=udp>;expires=3600"]
    assert resp.headers.get("Date") == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert isinstance(event, Registered)
    assert event.aor == "kiosk-1" and event.source == SRC
    assert len(event.added) == 1 and event.bindings == event.added
    [b] = reg.lookup("kiosk-1", T0 + 1)
    assert b.contact == "sip:kiosk-1@192.168.1.50:5060;transport=udp"
    assert b.source == SRC and b.transport == "udp"
    assert b.user_agent == "baresip v3.10.1 (x86_64/linux)"
    assert b.expires_at == T0 + 3600 and b.expires_in(T0 + 600) == 3000
    assert b.q == 1.0
    assert reg.bindings_count(T0) == 1
    assert reg.lookup("kiosk-2", T0) == []


def test_refresh_keeps_one_binding_and_follows_the_nat_flow() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0)
    kiosk.source = ("udp", "203.0.113.10", 40123)  # NAT rebinding
    resp, event = kiosk.send(T0 + 1800)
    assert resp.status == 200
    assert isinstance(event, Refreshed)
    assert len(event.refreshed) == 1 and not event.added and not event.removed
    [b] = reg.lookup("kiosk-1", T0 + 1800)
    assert b.source == ("udp", "203.0.113.10", 40123)
    assert b.expires_at == T0 + 1800 + 3600
    assert b.registered_at == T0 and b.updated_at == T0 + 1800
    assert reg.bindings_count(T0 + 1800) == 1


def test_stale_nonce_gets_stale_challenge() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0)
    resp, _ = reg.handle(kiosk.request(), SRC, T0 + 301)  # nonce_ttl is 300
    assert resp.status == 401
    assert all("stale=true" in c for c in resp.headers.get_all("WWW-Authenticate"))
    resp, event = kiosk.send(T0 + 302)
    assert resp.status == 200 and isinstance(event, Refreshed)


def test_unknown_user_is_indistinguishable_from_a_wrong_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reg, _ = make_registrar()
    known = Kiosk(reg, "kiosk-1", password="wrong")
    unknown = Kiosk(reg, "kiosk-99", password="wrong")
    r_known, _ = reg.handle(known.request(), SRC, T0)
    r_unknown, _ = reg.handle(unknown.request(), SRC, T0)
    assert r_known.status == r_unknown.status == 401
    assert [k for k, _ in r_known.headers] == [k for k, _ in r_unknown.headers]
    strip = [parse_auth_header(c)[1] for c in r_known.headers.get_all("WWW-Authenticate")]
    strip2 = [parse_auth_header(c)[1] for c in r_unknown.headers.get_all("WWW-Authenticate")]
    assert [sorted(p) for p in strip] == [sorted(p) for p in strip2]
    assert [p["algorithm"] for p in strip] == [p["algorithm"] for p in strip2]

    caplog.set_level(logging.WARNING, logger="gateway.sip.registrar")
    r_known, e1 = known.send(T0 + 1)
    r_unknown, e2 = unknown.send(T0 + 1)
    assert (r_known.status, r_known.reason) == (r_unknown.status, r_unknown.reason)
    assert r_known.status == 403 and e1 is None and e2 is None
    assert [k for k, _ in r_known.headers] == [k for k, _ in r_unknown.headers]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("udp:203.0.113.10:40000" in m and "'kiosk-1'" in m for m in warnings)
    assert any("udp:203.0.113.10:40000" in m and "'kiosk-99'" in m for m in warnings)


def test_username_must_match_the_to_user() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg, "kiosk-1")
    kiosk.to = f"<sip:kiosk-2@{REALM}>"  # credentials of kiosk-1, bindings of kiosk-2
    resp, event = kiosk.send(T0)
    assert resp.status == 403 and event is None
    assert reg.lookup("kiosk-2", T0) == []


def test_trunk_accounts_do_not_register_here() -> None:
    accounts = [Account("provider", "trunk", password="pw-provider")]
    reg, _ = make_registrar(accounts)
    resp, _ = Kiosk(reg, "provider").send(T0)
    assert resp.status == 403
    reg2, _ = make_registrar(accounts, register_kinds=("kiosk", "trunk"))
    resp, _ = Kiosk(reg2, "provider").send(T0)
    assert resp.status == 200


def test_accounts_with_stored_hashes() -> None:
    both = Account("kiosk-1", "kiosk", ha1={
        "MD5": compute_ha1("MD5", "kiosk-1", REALM, "pw-1"),
        "SHA-256": compute_ha1("SHA-256", "kiosk-1", REALM, "pw-1"),
    })
    md5 = compute_ha1("MD5", "kiosk-2", REALM, "pw-2")
    md5_only = Account("kiosk-2", "kiosk", ha1={"MD5": md5})
    reg, _ = make_registrar([both, md5_only])
    assert Kiosk(reg, "kiosk-1").send(T0)[0].status == 200
    # An account holding only an MD5 hash is challenged with MD5 only, or it would fail.
    kiosk = Kiosk(reg, "kiosk-2")
    resp, _ = reg.handle(kiosk.request(), SRC, T0)
    assert [parse_auth_header(c)[1]["algorithm"]
            for c in resp.headers.get_all("WWW-Authenticate")] == ["MD5"]
    assert kiosk.send(T0)[0].status == 200
    # A client that answers SHA-256 anyway is challenged again, not refused.
    kiosk.challenge = DigestAuthenticator(REALM, SECRET).challenge(T0)[0]
    kiosk.nc = 0
    resp, _ = reg.handle(kiosk.request(), SRC, T0)
    assert resp.status == 401


def test_unknown_authorization_scheme_is_challenged_rfc4475_regaut01() -> None:
    reg, _ = make_registrar([Account("j.user", "kiosk", password="x")])
    msg = parse_datagram(
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"To: sip:j.user@example.com\r\n"
        b"From: sip:j.user@example.com;tag=87321hj23128\r\n"
        b"Max-Forwards: 8\r\n"
        b"Call-ID: regaut01.0ha0isndaksdj\r\n"
        b"CSeq: 9338 REGISTER\r\n"
        b"Via: SIP/2.0/TCP 192.0.2.253;branch=z9hG4bKkdjuw\r\n"
        b"Authorization: NoOneKnowsThisScheme opaque-data=here\r\n"
        b"Content-Length:0\r\n\r\n"
    )
    assert isinstance(msg, Request)
    resp, event = reg.handle(msg, ("tcp", "192.0.2.253", 5060), T0)
    assert resp.status == 401 and event is None
    assert all(c.startswith("Digest ") for c in resp.headers.get_all("WWW-Authenticate"))


def test_malformed_credentials_are_a_bad_request() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    resp, _ = reg.handle(
        kiosk.request(extra=[("Authorization", f'Digest realm="{REALM}", username="kiosk-1"')]),
        SRC, T0,
    )
    assert resp.status == 400


# Rate limiting ----------------------------------------------------------------------------


def test_blocked_source_is_refused_without_checking(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = AuthFailureLimiter(limit=3, window=60, block=300)
    reg, _ = make_registrar(limiter=limiter)
    caplog.set_level(logging.DEBUG, logger="gateway.sip.registrar")
    attacker = Kiosk(reg, "kiosk-1", password="guess", source=("udp", "198.51.100.7", 5060))
    for i in range(3):
        assert attacker.send(T0 + i)[0].status == 403
    assert limiter.is_blocked("198.51.100.7", T0 + 3)
    assert any("blocking 198.51.100.7" in r.getMessage() for r in caplog.records)

    calls: list[AuthResult] = []
    real_verify = reg.auth.verify

    def spy(*a: object, **kw: object) -> AuthResult:
        result = real_verify(*a, **kw)  # type: ignore[arg-type]
        calls.append(result)
        return result

    monkeypatch.setattr(reg.auth, "verify", spy)
    caplog.clear()
    honest = Kiosk(reg, "kiosk-1", source=("udp", "198.51.100.7", 5061))
    resp, event = honest.send(T0 + 4)
    assert resp.status == 403 and event is None and calls == []
    refused = [r for r in caplog.records if "blocked source" in r.getMessage()]
    assert refused[0].levelno == logging.WARNING
    assert "udp:198.51.100.7:5061" in refused[0].getMessage()
    assert "kiosk-1" in refused[0].getMessage()
    # Other sources are unaffected; the block lifts after its time.
    assert Kiosk(reg, "kiosk-1").send(T0 + 5)[0].status == 200
    assert honest.send(T0 + 304)[0].status == 200


def test_challenges_and_successes_do_not_count_as_failures() -> None:
    limiter = AuthFailureLimiter(limit=2, window=60, block=300)
    reg, _ = make_registrar(limiter=limiter)
    kiosk = Kiosk(reg)
    for t in range(5):
        reg.handle(kiosk.request(authorize=False), SRC, T0 + t)  # 401s
        assert kiosk.send(T0 + t)[0].status == 200
    assert not limiter.is_blocked(SRC[1], T0 + 10)


# Address-of-record checks -----------------------------------------------------------------


UNKSM2 = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"To: isbn:2983792873\r\n"
    b"From: <http://www.example.com>;tag=3234233\r\n"
    b"Call-ID: unksm2.daksdj@hyphenated-host.example.com\r\n"
    b"CSeq: 234902 REGISTER\r\n"
    b"Max-Forwards: 70\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.21:5060;branch=z9hG4bKkdjuw\r\n"
    b"Contact: <name:John_Smith>\r\n"
    b"l: 0\r\n\r\n"
)


def test_to_must_be_a_sip_aor_rfc4475_unksm2() -> None:
    reg, _ = make_registrar()
    msg = parse_datagram(UNKSM2)
    assert isinstance(msg, Request)
    resp, event = reg.handle(msg, SRC, T0)
    assert resp.status == 400 and event is None
    kiosk = Kiosk(reg)
    kiosk.to = "<tel:+15551234567>"
    assert reg.handle(kiosk.request(), SRC, T0)[0].status == 400


def test_domain_is_checked_when_configured() -> None:
    reg, _ = make_registrar(domain="GW.example.org")
    assert Kiosk(reg).send(T0)[0].status == 200
    kiosk = Kiosk(reg, "kiosk-2")
    kiosk.to = "<sip:kiosk-2@elsewhere.example>"
    assert kiosk.send(T0)[0].status == 404


def test_required_extensions_are_refused() -> None:
    reg, _ = make_registrar()
    resp, _ = reg.handle(Kiosk(reg).request(extra=[("Require", "gruu, path")]), SRC, T0)
    assert resp.status == 420 and resp.headers.get("Unsupported") == "gruu, path"


def test_other_methods_are_not_allowed() -> None:
    reg, _ = make_registrar()
    req = Kiosk(reg).request()
    req.method = "OPTIONS"
    resp, _ = reg.handle(req, SRC, T0)
    assert resp.status == 405 and resp.headers.get("Allow") == "REGISTER"


# Contacts -----------------------------------------------------------------------------------


def _watson() -> tuple[Registrar, MemoryStore]:
    return make_registrar([Account("watson", "kiosk", password="pw-watson")])


def _torture(data: bytes, reg: Registrar, now: float) -> tuple[Response, RegistrarEvent | None]:
    """Send an RFC 4475 REGISTER with credentials added, as a kiosk would after a 401."""
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    first, _ = reg.handle(msg, SRC, now)
    assert first.status == 401
    challenge = select_challenge(first.headers.get_all("WWW-Authenticate")) or ""
    user = msg.to_addr.uri.user or ""
    msg.headers.add("Authorization", authorization_for(
        challenge, "REGISTER", msg.uri, user, f"pw-{user}", "abc", 1))
    return reg.handle(msg, SRC, now)


CPARAM01 = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe\r\n"
    b"To: sip:watson@example.com\r\n"
    b"Call-ID: cparam01.70710@saturn.example.com\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Contact: sip:+19725552222@gw1.example.net;unknownparam\r\n"
    b"l: 0\r\n\r\n"
)
CPARAM02 = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP saturn.example.com:5060;branch=z9hG4bKkdjuw\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: sip:watson@example.com;tag=838293\r\n"
    b"To: sip:watson@example.com\r\n"
    b"Call-ID: cparam02.70710@saturn.example.com\r\n"
    b"CSeq: 3 REGISTER\r\n"
    b"Contact: <sip:+19725552222@gw1.example.net;unknownparam>\r\n"
    b"l: 0\r\n\r\n"
)


def test_contact_parameter_is_not_a_uri_parameter_rfc4475_cparam01() -> None:
    reg, _ = _watson()
    resp, event = _torture(CPARAM01, reg, T0)
    assert resp.status == 200 and isinstance(event, Registered)
    [b] = reg.lookup("watson", T0)
    assert b.contact == "sip:+19725552222@gw1.example.net"
    assert b.params == ";unknownparam"
    assert contacts_of(resp) == ["<sip:+19725552222@gw1.example.net>;unknownparam;expires=3600"]


def test_uri_parameter_stays_in_the_uri_rfc4475_cparam02() -> None:
    reg, _ = _watson()
    resp, _ = _torture(CPARAM02, reg, T0)
    assert resp.status == 200
    [b] = reg.lookup("watson", T0)
    assert b.contact == "sip:+19725552222@gw1.example.net;unknownparam"
    assert b.params == ""
    assert contacts_of(resp) == ["<sip:+19725552222@gw1.example.net;unknownparam>;expires=3600"]


def test_cparam01_then_cparam02_is_the_same_binding() -> None:
    # RFC 3261 19.1.4: a parameter on one side only is ignored in the comparison.
    reg, _ = _watson()
    _torture(CPARAM01, reg, T0)
    resp, event = _torture(CPARAM02, reg, T0 + 10)
    assert isinstance(event, Refreshed)
    [b] = reg.lookup("watson", T0 + 10)
    assert b.contact == "sip:+19725552222@gw1.example.net;unknownparam" and b.params == ""


def test_escaped_headers_in_contact_are_kept_rfc4475_regescrt() -> None:
    reg, _ = make_registrar([Account("user", "kiosk", password="pw-user")])
    resp, _ = _torture(
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"To: sip:user@example.com\r\n"
        b"From: sip:user@example.com;tag=8\r\n"
        b"Max-Forwards: 70\r\n"
        b"Call-ID: regescrt.k345asrl3fdbv@192.0.2.1\r\n"
        b"CSeq: 14398234 REGISTER\r\n"
        b"Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bKkdjuw\r\n"
        b"M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>\r\n"
        b"L:0\r\n\r\n",
        reg, T0,
    )
    assert resp.status == 200
    [b] = reg.lookup("user", T0)
    assert b.contact == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert contacts_of(resp) == [
        "<sip:user@example.com?Route=%3Csip:sip.example.com%3E>;expires=3600"
    ]


def test_unbracketed_contact_with_headers_is_refused_rfc4475_regbadct() -> None:
    reg, _ = make_registrar([Account("user", "kiosk", password="pw-user")])
    resp, _ = _torture(
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"To: sip:user@example.com\r\n"
        b"From: sip:user@example.com;tag=998332\r\n"
        b"Max-Forwards: 70\r\n"
        b"Call-ID: regbadct.k345asrl3fdbv@10.0.0.1\r\n"
        b"CSeq: 1 REGISTER\r\n"
        b"Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw\r\n"
        b"Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E\r\n"
        b"l: 0\r\n\r\n",
        reg, T0,
    )
    assert resp.status == 400
    assert reg.lookup("user", T0) == []


def test_parse_contact() -> None:
    c = parse_contact('"Kiosk 17" <sip:k@10.0.0.5:5060;ob> ; q=0.5 ;+sip.instance="<urn:uuid:1;x>"')
    assert c.uri == "sip:k@10.0.0.5:5060;ob"
    assert c.params == (("q", "0.5"), ("+sip.instance", '"<urn:uuid:1;x>"'))
    assert c.params_without_expires() == ';q=0.5;+sip.instance="<urn:uuid:1;x>"'
    for bad in ("<sip:a@b", "<sip:a@b>;;", "sip:a b@c", "<nocolon>", 'Bell, A <sip:a@b>', ""):
        with pytest.raises(ValueError):
            parse_contact(bad)


def test_contact_key_follows_uri_equivalence() -> None:
    assert contact_key("sip:a@EXAMPLE.com;Transport=UDP") == contact_key(
        "sip:a@example.com;transport=udp")
    assert contact_key("sip:a@example.com") == contact_key("sip:a@example.com;ob")
    assert contact_key("sip:a@example.com") != contact_key("sip:a@example.com:5060")
    assert contact_key("sip:a@example.com") != contact_key("sip:a@example.com;transport=tcp")
    assert contact_key("sip:a@example.com") != contact_key("sips:a@example.com")
    assert contact_key("sip:%61@example.com") == contact_key("sip:a@example.com")


def test_several_contacts_and_q_ordering() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    resp, event = kiosk.send(T0, contacts=[
        "<sip:kiosk-1@10.0.0.1>;q=0.2, <sip:kiosk-1@10.0.0.2>;q=0.9",
        "<sip:kiosk-1@10.0.0.3>;expires=120",
    ])
    assert resp.status == 200 and isinstance(event, Registered) and len(event.added) == 3
    assert contacts_of(resp) == [
        "<sip:kiosk-1@10.0.0.3>;expires=120",
        "<sip:kiosk-1@10.0.0.2>;q=0.9;expires=3600",
        "<sip:kiosk-1@10.0.0.1>;q=0.2;expires=3600",
    ]
    kiosk.send(T0 + 5, contacts=["<sip:kiosk-1@10.0.0.1>;q=0.2"])  # most recent among q=0.2?
    kiosk.send(T0 + 6, contacts=["<sip:kiosk-1@10.0.0.4>;q=0.2"])
    order = [b.contact for b in reg.lookup("kiosk-1", T0 + 7)]
    assert order == ["sip:kiosk-1@10.0.0.3", "sip:kiosk-1@10.0.0.2",
                     "sip:kiosk-1@10.0.0.4", "sip:kiosk-1@10.0.0.1"]


def test_query_without_contact_lists_bindings() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0)
    resp, event = kiosk.send(T0 + 100, contacts=[])
    assert resp.status == 200 and event is None
    assert contacts_of(resp) == ["<sip:kiosk-1@192.168.1.50:5060;transport=udp>;expires=3500"]


# Expiration intervals -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contact", "header", "expected"),
    [
        ("<sip:kiosk-1@10.0.0.1>", None, 3600),  # default
        ("<sip:kiosk-1@10.0.0.1>", "300", 300),  # Expires header
        ("<sip:kiosk-1@10.0.0.1>;expires=600", "300", 600),  # parameter wins
        ("<sip:kiosk-1@10.0.0.1>", "86400", 3600),  # shortened to max_expires
        ("<sip:kiosk-1@10.0.0.1>", "soon", 3600),  # malformed counts as 3600 (RFC 3261 20.19)
        ("<sip:kiosk-1@10.0.0.1>;expires=99999999999999999999", None, 3600),  # overlarge
        ("<sip:kiosk-1@10.0.0.1>;expires=60", None, 60),  # exactly min_expires
    ],
)
def test_expires(contact: str, header: str | None, expected: int) -> None:
    reg, _ = make_registrar()
    resp, _ = Kiosk(reg).send(T0, contacts=[contact], expires=header)
    assert resp.status == 200
    assert contacts_of(resp)[0].endswith(f";expires={expected}")
    assert reg.lookup("kiosk-1", T0)[0].expires_at == T0 + expected


def test_interval_too_brief_is_423_with_min_expires_and_changes_nothing() -> None:
    reg, store = make_registrar(min_expires=120)
    resp, event = Kiosk(reg).send(T0, contacts=[
        "<sip:kiosk-1@10.0.0.1>;expires=3600", "<sip:kiosk-1@10.0.0.2>;expires=30"])
    assert resp.status == 423 and event is None
    assert resp.headers.get("Min-Expires") == "120"
    assert len(store) == 0
    resp, _ = Kiosk(reg, "kiosk-2").send(T0, expires="119")
    assert resp.status == 423


def test_expires_zero_removes_one_binding() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0, contacts=["<sip:kiosk-1@10.0.0.1>", "<sip:kiosk-1@10.0.0.2>"])
    resp, event = kiosk.send(T0 + 1, contacts=["<sip:kiosk-1@10.0.0.1>;expires=0"])
    assert resp.status == 200 and isinstance(event, Refreshed)
    assert [b.contact for b in event.removed] == ["sip:kiosk-1@10.0.0.1"]
    assert contacts_of(resp) == ["<sip:kiosk-1@10.0.0.2>;expires=3599"]
    resp, event = kiosk.send(T0 + 2, contacts=["<sip:kiosk-1@10.0.0.2>"], expires="0")
    assert isinstance(event, Unregistered) and event.bindings == ()
    assert contacts_of(resp) == []
    assert reg.bindings_count(T0 + 2) == 0
    resp, event = kiosk.send(T0 + 3, contacts=["<sip:kiosk-1@10.0.0.9>"], expires="0")
    assert resp.status == 200 and event is None  # nothing to remove


def test_wildcard_removes_everything() -> None:
    reg, store = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0, contacts=["<sip:kiosk-1@10.0.0.1>", "<sip:kiosk-1@10.0.0.2>"])
    resp, event = kiosk.send(T0 + 1, contacts=["*"], expires="0")
    assert resp.status == 200 and contacts_of(resp) == []
    assert isinstance(event, Unregistered) and len(event.removed) == 2
    assert reg.lookup("kiosk-1", T0 + 1) == [] and len(store) == 0


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(["*"], None), (["*"], "10"), (["*, <sip:kiosk-1@10.0.0.1>"], "0"),
     (["*", "<sip:kiosk-1@10.0.0.1>"], "0")],
)
def test_invalid_wildcard(contacts: list[str], expires: str | None) -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0)
    resp, event = kiosk.send(T0 + 1, contacts=contacts, expires=expires)
    assert resp.status == 400 and event is None
    assert len(reg.lookup("kiosk-1", T0 + 1)) == 1


@pytest.mark.parametrize(
    "contact",
    ["<sip:kiosk-1@10.0.0.1>;q=2", "<sip:kiosk-1@10.0.0.1>;;", "<tel:+1555>", "<sip:kiosk-1@x"],
)
def test_bad_contacts(contact: str) -> None:
    reg, store = make_registrar()
    resp, _ = Kiosk(reg).send(T0, contacts=[contact])
    assert resp.status == 400 and len(store) == 0


def test_too_many_contacts_changes_nothing() -> None:
    reg, _ = make_registrar(max_contacts=2)
    kiosk = Kiosk(reg)
    kiosk.send(T0, contacts=["<sip:kiosk-1@10.0.0.1>"])
    resp, event = kiosk.send(T0 + 1, contacts=["<sip:kiosk-1@10.0.0.2>", "<sip:kiosk-1@10.0.0.3>"])
    assert resp.status == 403 and event is None
    assert [b.contact for b in reg.lookup("kiosk-1", T0 + 1)] == ["sip:kiosk-1@10.0.0.1"]
    # Replacing one within the limit is fine.
    resp, _ = kiosk.send(T0 + 2, contacts=[
        "<sip:kiosk-1@10.0.0.1>;expires=0", "<sip:kiosk-1@10.0.0.2>", "<sip:kiosk-1@10.0.0.3>"])
    assert resp.status == 200 and reg.bindings_count(T0 + 2) == 2


# Ordering (RFC 3261 10.3 step 7) -----------------------------------------------------------


def test_same_call_id_needs_a_higher_cseq() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0, cseq=10)  # 401 at CSeq 10, 200 at CSeq 11
    for cseq in (11, 5):
        resp, event = kiosk.send(T0 + 1, contacts=[f"{kiosk.contact};expires=0"], cseq=cseq)
        assert resp.status == 500 and event is None
        assert len(reg.lookup("kiosk-1", T0 + 1)) == 1
    resp, _ = kiosk.send(T0 + 1, contacts=["*"], expires="0", cseq=11)
    assert resp.status == 500
    resp, event = kiosk.send(T0 + 1, contacts=["*"], expires="0", cseq=12)
    assert resp.status == 200 and isinstance(event, Unregistered)


def test_new_call_id_may_use_any_cseq() -> None:
    reg, _ = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0, cseq=100)
    rebooted = Kiosk(reg)  # same contact, new Call-ID, CSeq from 1
    resp, event = rebooted.send(T0 + 50)
    assert resp.status == 200 and isinstance(event, Refreshed)
    [b] = reg.lookup("kiosk-1", T0 + 50)
    assert b.call_id == rebooted.call_id and b.cseq == 2


# Expiry ----------------------------------------------------------------------------------


def test_bindings_expire_through_the_store() -> None:
    reg, store = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0, contacts=["<sip:kiosk-1@10.0.0.1>;expires=600", "<sip:kiosk-1@10.0.0.2>"])
    Kiosk(reg, "kiosk-2").send(T0, expires="900")
    assert reg.bindings_count(T0) == 3

    assert reg.handle_expired(store.expire_due(T0 + 599), T0 + 599) == []
    assert len(reg.lookup("kiosk-1", T0 + 600)) == 1  # gone from lookups at once
    [event] = reg.handle_expired(store.expire_due(T0 + 600), T0 + 600)
    assert isinstance(event, Expired) and event.aor == "kiosk-1"
    assert [b.contact for b in event.removed] == ["sip:kiosk-1@10.0.0.1"]
    assert [b.contact for b in event.bindings] == ["sip:kiosk-1@10.0.0.2"]

    [event] = reg.handle_expired(store.expire_due(T0 + 900), T0 + 900)
    assert event.aor == "kiosk-2" and event.bindings == ()
    assert reg.bindings_count(T0 + 900) == 1
    events = reg.handle_expired(store.expire_due(T0 + 3600), T0 + 3600)
    assert [e.aor for e in events] == ["kiosk-1"]
    assert reg.bindings_count(T0 + 3600) == 0
    assert len(store) == 0


def test_handle_expired_ignores_other_owners_records() -> None:
    reg, store = make_registrar()
    store.put("calls", "c1", {"state": "up"}, ttl=5, now=T0)
    assert reg.handle_expired(store.expire_due(T0 + 10), T0 + 10) == []


def test_binding_record_round_trip() -> None:
    reg, store = make_registrar()
    Kiosk(reg, contact='<sip:kiosk-1@[2001:db8::5]:5062;transport=tls>;q=0.7;+sip.instance='
          '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
          source=("tls", "2001:db8::5", 5062)).send(T0 + 0.123)
    [(key, value)] = list(store.scan(bindings_namespace("kiosk-1"), T0))
    b = Binding.from_record("kiosk-1", key, value)
    assert b == reg.lookup("kiosk-1", T0)[0]
    assert b.source == ("tls", "2001:db8::5", 5062)
    assert b.q == 0.7
    assert b.contact_header(T0 + 0.123) == (
        '<sip:kiosk-1@[2001:db8::5]:5062;transport=tls>;q=0.7;'
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";expires=3600'
    )


# Scale ----------------------------------------------------------------------------------


def test_ten_thousand_kiosks_register_and_refresh() -> None:
    n = 10_000
    accounts = [Account(f"kiosk-{i}", "kiosk", password=f"pw-{i}") for i in range(n)]
    reg, store = make_registrar(accounts)
    kiosks = [
        Kiosk(reg, f"kiosk-{i}", source=("udp", f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 5060),
              contact=f"<sip:kiosk-{i}@192.168.{(i >> 8) & 255}.{i & 255}:5060>")
        for i in range(n)
    ]
    for i, k in enumerate(kiosks):
        resp, event = k.send(T0 + i * 0.01)
        assert resp.status == 200 and isinstance(event, Registered)
    assert reg.bindings_count(T0 + 100) == n
    for i, k in enumerate(kiosks):
        resp, event = k.send(T0 + 120 + i * 0.01)  # reuses its nonce, nc=2
        assert resp.status == 200 and isinstance(event, Refreshed), resp
    assert reg.bindings_count(T0 + 300) == n
    assert len(reg.all_bindings(T0 + 300)) == n
    assert len(store) == 2 * n  # one binding and one AOR index entry per kiosk
    for i in (0, 1234, n - 1):
        [b] = reg.lookup(f"kiosk-{i}", T0 + 300)
        assert b.contact == f"sip:kiosk-{i}@192.168.{(i >> 8) & 255}.{i & 255}:5060"
        assert b.expires_at == pytest.approx(T0 + 120 + i * 0.01 + 3600, abs=0.002)
    events = reg.handle_expired(store.expire_due(T0 + 120 + n * 0.01 + 3600), T0 + 4000)
    assert len(events) == n and all(isinstance(e, Expired) for e in events)
    assert reg.bindings_count(T0 + 5000) == 0 and len(store) == 0


# Accounts -----------------------------------------------------------------------------------


def test_account_directory_from_config() -> None:
    d = AccountDirectory.from_config([
        {"username": "kiosk-1", "password": "x", "display_name": "Unit A kiosk"},
        {"username": "kiosk-2", "ha1_md5": "0" * 32, "ha1_sha256": "1" * 64},
        {"username": "provider", "kind": "trunk", "password": "y"},
    ])
    assert len(d) == 3
    k1 = d.get("kiosk-1")
    assert k1 is not None and k1.kind == "kiosk" and k1.display_name == "Unit A kiosk"
    k2 = d.get("kiosk-2")
    assert k2 is not None and k2.credential.ha1 == {"MD5": "0" * 32, "SHA-256": "1" * 64}
    assert d.get("nobody") is None
    assert "x" not in repr(k1)
    for bad in (
        [{"username": "a"}],
        [{"username": "a", "password": "x", "colour": "red"}],
        [{"username": "a", "password": "x", "kind": "robot"}],
        [{"username": "a", "ha1_md5": "nothex"}],
        [{"username": "a", "password": "x"}, {"username": "a", "password": "y"}],
    ):
        with pytest.raises(ValueError):
            AccountDirectory.from_config(bad)


def test_aor_index_tracks_the_longest_binding() -> None:
    reg, store = make_registrar()
    kiosk = Kiosk(reg)
    kiosk.send(T0, contacts=["<sip:kiosk-1@10.0.0.1>;expires=3600"])
    kiosk.send(T0 + 1, contacts=["<sip:kiosk-1@10.0.0.2>;expires=600"])
    marker = store.get(AOR_NAMESPACE, "kiosk-1", T0 + 1)
    assert marker == {"until": int((T0 + 3600) * 1000)}
    store.expire_due(T0 + 601)
    assert reg.bindings_count(T0 + 601) == 1
