"""DTLS-SRTP between two in-memory endpoints: keys agree, fingerprints are enforced."""

from __future__ import annotations

import time

import pylibsrtp
import pytest

from gateway.webrtc.dtls import Certificate, DtlsSrtp, split_records


def handshake(client: DtlsSrtp, server: DtlsSrtp) -> int:
    """Shuttle datagrams until neither side has anything to say; returns round trips."""
    to_server = client.start()
    rounds = 0
    while to_server and rounds < 20:
        to_client: list[bytes] = []
        for d in to_server:
            to_client += server.receive(d)
        to_server = []
        for d in to_client:
            to_server += client.receive(d)
        rounds += 1
    return rounds


def test_handshake_derives_matching_srtp_keys() -> None:
    a, b = Certificate.generate(), Certificate.generate()
    client = DtlsSrtp(a, client=True, remote_fingerprints=[("sha-256", b.fingerprint())])
    server = DtlsSrtp(b, client=False, remote_fingerprints=[
        ("sha-256", a.fingerprint()), ("sha-512", a.fingerprint("sha-512"))])
    handshake(client, server)
    assert client.state == server.state == "connected", (client.failure, server.failure)
    assert client.profile == server.profile and client.profile is not None
    assert client.tx and client.rx and server.tx and server.rx
    rtp = bytes([0x80, 96, 0, 1]) + bytes(8) + b"media"
    assert server.rx.unprotect(client.tx.protect(rtp)) == rtp
    assert client.rx.unprotect(server.tx.protect(rtp)) == rtp
    rtcp = bytes([0x80, 201, 0, 1]) + bytes(4)
    assert server.rx.unprotect_rtcp(client.tx.protect_rtcp(rtcp)) == rtcp
    # close_notify reaches the other side
    for d in client.close():
        server.receive(d)
    assert server.state == "closed"


def test_wrong_fingerprint_fails_and_sets_no_keys() -> None:
    a, b, mallory = Certificate.generate(), Certificate.generate(), Certificate.generate()
    client = DtlsSrtp(a, client=True, remote_fingerprints=[("sha-256", mallory.fingerprint())])
    server = DtlsSrtp(b, client=False, remote_fingerprints=[("sha-256", a.fingerprint())])
    handshake(client, server)
    assert client.state == "failed" and "fingerprint" in (client.failure or "")
    assert client.tx is None and client.rx is None


def test_retransmission_timer_resends_the_flight() -> None:
    a, b = Certificate.generate(), Certificate.generate()
    client = DtlsSrtp(a, client=True, remote_fingerprints=[("sha-256", b.fingerprint())])
    first = client.start()
    timeout = client.timeout()
    assert first and timeout is not None and 0 < timeout <= 3
    assert client.handle_timeout() == []  # not due yet: nothing resent
    deadline = time.monotonic() + 3
    again: list[bytes] = []
    while not again and time.monotonic() < deadline:  # polls until OpenSSL's 1 s timer fires
        time.sleep(0.02)
        again = client.handle_timeout()
    assert again and again[0][0] == 22  # the ClientHello, as if it had been lost


def test_split_records_keeps_record_boundaries() -> None:
    r1 = bytes([22, 0xFE, 0xFD]) + bytes(8) + (5).to_bytes(2, "big") + b"hello"
    r2 = bytes([21, 0xFE, 0xFD]) + bytes(8) + (2).to_bytes(2, "big") + b"xy"
    unified = bytes([0x2C, 7]) + (3).to_bytes(2, "big") + b"abc"  # 001 0 1 1 00: 16-bit seq, L
    assert split_records(r1 + r2 + unified) == [r1, r2, unified]
    assert split_records(b"\x99junk") == [b"\x99junk"]


def test_srtp_rejects_tampering() -> None:
    a, b = Certificate.generate(), Certificate.generate()
    client = DtlsSrtp(a, client=True, remote_fingerprints=[("sha-256", b.fingerprint())])
    server = DtlsSrtp(b, client=False, remote_fingerprints=[("sha-256", a.fingerprint())])
    handshake(client, server)
    assert client.tx and server.rx
    protected = bytearray(client.tx.protect(bytes([0x80, 96, 0, 2]) + bytes(8) + b"media"))
    protected[-1] ^= 1
    with pytest.raises(pylibsrtp.Error):
        server.rx.unprotect(bytes(protected))
