"""The INVITE gate (registrar_glue.make_authorizer) challenges like the registrar does:
only with the algorithms the caller's account can be checked with."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from gateway.config import loads_config
from gateway.sip.b2bua import CallLayer, IncomingCall
from gateway.sip.core import CoreConfig, SipCore
from gateway.sip.digest import authorization_for, parse_auth_header
from gateway.sip.message import Request, Response, parse_datagram
from gateway.sip.registrar_glue import make_authorizer, make_registrar
from gateway.store.memory import MemoryStore

KIOSK = ("udp", "10.0.0.7", 5070)
MD5_HA1 = hashlib.md5(b"kiosk-md5:test:pw-md5").hexdigest()
CONFIG = f"""
[sip]
realm = "test"
[[sip.accounts]]
username = "kiosk-md5"
ha1_md5 = "{MD5_HA1}"
[[sip.accounts]]
username = "kiosk-pw"
password = "pw"
"""


def gate() -> tuple[SipCore, list[Any]]:
    sip = loads_config(CONFIG).sip
    registrar, auth, limiter = make_registrar(sip, MemoryStore(), b"k" * 32)
    core = SipCore(CoreConfig(local={"udp": ("127.0.0.1", 5060)}))
    core.handlers.append(CallLayer(core, make_authorizer(sip, auth, limiter, registrar)))
    return core, []


def invite(user: str, cseq: int, authorization: str | None = None) -> Request:
    text = (
        "INVITE sip:kiosk-2@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.7:5070;branch=z9hG4bK-auth-{cseq};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{user}@127.0.0.1>;tag=f1\r\nTo: <sip:kiosk-2@127.0.0.1>\r\n"
        f"Call-ID: auth-{user}@10.0.0.7\r\nCSeq: {cseq} INVITE\r\n"
        "Contact: <sip:kiosk@10.0.0.7:5070>\r\n"
        + (f"Authorization: {authorization}\r\n" if authorization else "")
        + "Content-Length: 0\r\n\r\n")
    req = parse_datagram(text.encode())
    assert isinstance(req, Request)
    return req


def exchange(core: SipCore, req: Request) -> list[Response]:
    core.receive_datagram(req.to_bytes(), KIOSK, 1.0)
    out = [parse_datagram(d) for _, d in core.messages_to_send()]
    return [r for r in out if isinstance(r, Response)]


def algorithms(resp: Response) -> list[str]:
    return [parse_auth_header(v)[1]["algorithm"] for v in resp.headers.get_all("WWW-Authenticate")]


@pytest.mark.parametrize("user,offered", [
    ("kiosk-md5", ["MD5"]),               # only an MD5 HA1 is stored
    ("kiosk-pw", ["SHA-256", "MD5"]),     # a password can answer either
    ("nobody", ["SHA-256", "MD5"]),       # unknown: looks like a password account
])
def test_invite_challenge_offers_what_the_account_can_check(user: str,
                                                            offered: list[str]) -> None:
    core, _ = gate()
    [resp] = [r for r in exchange(core, invite(user, 1)) if r.status >= 200]
    assert resp.status == 401
    assert algorithms(resp) == offered


def test_md5_only_account_can_call_after_the_md5_challenge() -> None:
    core, _ = gate()
    [challenge] = [r for r in exchange(core, invite("kiosk-md5", 1)) if r.status == 401]
    value = challenge.headers.get_all("WWW-Authenticate")[0]
    creds = authorization_for(value, "INVITE", "sip:kiosk-2@127.0.0.1", "kiosk-md5",
                              "pw-md5", "c0ffee", 1)
    responses = exchange(core, invite("kiosk-md5", 2, creds))
    assert [r.status for r in responses] == [100]
    events = []
    while (ev := core.next_event()) is not None:
        events.append(ev)
    assert [type(e) for e in events] == [IncomingCall]
    assert events[0].caller == "kiosk-md5"
