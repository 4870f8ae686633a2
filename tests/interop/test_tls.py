"""SIP over TLS: a Python ``ssl`` client, and baresip kiosks registered and calling over TLS.

The certificate is generated here, self-signed for 127.0.0.1 (subjectAltName
IP:127.0.0.1).  The Python client verifies it (CA file + host name check).  baresip
1.0 loads it with ``sip_cafile``, but its SIP stack (libre 1.x) does not verify the
server certificate of SIP TLS connections, so that side proves TLS works, not that
verification does.

A kiosk behind NAT can only be reached over the connection its REGISTER came in on:
the call test checks that the gateway's INVITE to bob arrives on bob's own
registration connection (source = the gateway's TLS listening port), not on a new
connection the gateway opened.
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GatewayProcess, free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from interop.baresip.config import BaresipConfig, write_wav
from interop.baresip.kiosk import (
    KioskAccount,
    TracedMessage,
    free_port_pair,
    gateway_config,
    media_sections,
    rtp_range,
    rtp_stats,
    sip_trace,
)
from interop.baresip.process import Baresip

from gateway.sip.message import Response, StreamFramer

ALICE = KioskAccount("kiosk-1", "alice-secret")
BOB = KioskAccount("kiosk-2", "bob-secret")

GatewayFactory = Callable[[str], GatewayProcess]
BaresipFactory = Callable[[BaresipConfig], Baresip]


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1 and its key (PEM), made now."""
    d = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = d / "gateway.crt", d / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def tls_gateway(gateway_factory: GatewayFactory,
                tls_files: tuple[Path, Path]) -> tuple[GatewayProcess, int, int]:
    """A gateway listening on UDP and TLS; returns it, the UDP and the TLS port."""
    udp, tls = free_port(), free_port()
    gw = gateway_factory(gateway_config(
        [f"udp:127.0.0.1:{udp}", f"tls:127.0.0.1:{tls}"], [ALICE, BOB], tls=tls_files))
    gw.wait_for(f"SIP listening on tls:127.0.0.1:{tls}")
    return gw, udp, tls


def test_options_over_tls(tls_gateway: tuple[GatewayProcess, int, int],
                          tls_files: tuple[Path, Path]) -> None:
    gw, _, tls_port = tls_gateway
    ctx = ssl.create_default_context(cafile=str(tls_files[0]))  # verifies, host name too
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        local_port = s.getsockname()[1]
        n = secrets.token_hex(4)
        s.sendall((
            "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{local_port};branch=z9hG4bK-tls-{n};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=t{n}\r\nTo: <sip:gw@127.0.0.1>\r\n"
            f"Call-ID: tls-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode())
        framer = StreamFramer()
        deadline = time.monotonic() + 5
        responses: list[Response] = []
        while time.monotonic() < deadline and not any(r.status >= 200 for r in responses):
            data = s.recv(65535)
            if not data:
                break
            responses += [m for m in framer.feed(data) if isinstance(m, Response)]
        assert s.version() in ("TLSv1.2", "TLSv1.3")
    finals = [r for r in responses if r.status >= 200]
    assert finals and finals[0].status == 200, responses
    assert finals[0].headers.get("Call-ID") == f"tls-{n}@127.0.0.1"
    assert "INVITE" in (finals[0].headers.get("Allow") or "")
    assert gw.alive()


def tls_kiosk(factory: BaresipFactory, tmp_path: Path, name: str, account: KioskAccount,
              tls_port: int, cafile: Path, video: str = "VP8") -> Baresip:
    cfg = BaresipConfig(
        name=name, sip_port=free_port_pair(), ctrl_port=free_port(), rtp_ports=rtp_range(),
        wav=write_wav(tmp_path / "tone8k.wav"),
        aor=f"<sip:{account.username}@127.0.0.1:{tls_port};transport=tls>",
        password=account.password, regint=600, video_codec=video, cafile=cafile,
    )
    return factory(cfg)


def from_gateway(b: Baresip, tls_port: int) -> list[TracedMessage]:
    return [m for m in sip_trace(b.log()) if m.src == f"127.0.0.1:{tls_port}"]


def test_baresip_registers_over_tls(tls_gateway: tuple[GatewayProcess, int, int],
                                    baresip_factory: BaresipFactory, tmp_path: Path,
                                    tls_files: tuple[Path, Path]) -> None:
    gw, _, tls_port = tls_gateway
    alice = tls_kiosk(baresip_factory, tmp_path, "alice", ALICE, tls_port, tls_files[0])
    ev = alice.ctrl.wait_event("REGISTER_OK", 10, fail_on=("REGISTER_FAIL",))
    assert ev["param"] == "200 OK"
    gw.wait_for("registered kiosk-1 from tls:127.0.0.1:", timeout=5)
    replies = [m for m in from_gateway(alice, tls_port) if m.cseq_method() == "REGISTER"]
    assert replies and all(m.transport == "TLS" for m in replies)
    assert replies[-1].first_line == "SIP/2.0 200 OK"


def test_call_between_tls_kiosks(tls_gateway: tuple[GatewayProcess, int, int],
                                 baresip_factory: BaresipFactory, tmp_path: Path,
                                 tls_files: tuple[Path, Path]) -> None:
    gw, _, tls_port = tls_gateway
    alice = tls_kiosk(baresip_factory, tmp_path, "alice", ALICE, tls_port, tls_files[0])
    bob = tls_kiosk(baresip_factory, tmp_path, "bob", BOB, tls_port, tls_files[0])
    for b in (alice, bob):
        b.ctrl.wait_event("REGISTER_OK", 10, fail_on=("REGISTER_FAIL",))
    line = gw.wait_for("registered kiosk-2 from tls:127.0.0.1:", timeout=5)
    bob_flow = line.split(" from ", 1)[1].split()[0]  # tls:127.0.0.1:PORT

    # baresip adds the account's ";transport=tls" to the dialled URI itself.
    assert alice.ctrl.command("dial", f"sip:kiosk-2@127.0.0.1:{tls_port}")["ok"]
    for b in (alice, bob):
        b.ctrl.wait_event("CALL_ESTABLISHED", 10, fail_on=("CALL_CLOSED",))
    gw.wait_for("INVITE from kiosk-1 (kiosk) for sip:kiosk-2@", timeout=5)
    gw.wait_for(": connected", timeout=5)

    # bob's INVITE came over TLS from the gateway's listening port: the connection
    # bob opened to register, the only way to reach a kiosk behind NAT.
    invites = [m for m in sip_trace(bob.log()) if m.first_line.startswith("INVITE ")]
    assert len(invites) == 1
    assert (invites[0].transport, invites[0].src) == ("TLS", f"127.0.0.1:{tls_port}")
    assert bob_flow == f"tls:{invites[0].dst}"
    assert "VP8/90000" in media_sections(invites[0].body)["video"][1]
    assert "could not connect" not in gw.output()

    sent = [m for m in sip_trace(alice.log()) if m.first_line.startswith("INVITE ")]
    assert sent and all((m.transport, m.dst) == ("TLS", f"127.0.0.1:{tls_port}") for m in sent)

    for b in (alice, bob):
        for media in ("audio", "video"):
            b.ctrl.wait_event("CALL_RTPESTAB", 10, where=lambda e, m=media: e["param"] == m,
                              fail_on=("CALL_CLOSED",))
    mark = len(alice.ctrl.events)
    # This time the callee hangs up: the gateway's BYE to alice also rides her flow.
    assert bob.ctrl.command("hangup")["ok"]
    bob.ctrl.wait_event("CALL_CLOSED", 10)
    alice.ctrl.wait_event("CALL_CLOSED", 10, since=mark)
    gw.wait_for("ended (BYE from the callee, by callee)", timeout=5)
    byes = [m for m in sip_trace(alice.log()) if m.first_line.startswith("BYE ")]
    assert byes and (byes[-1].transport, byes[-1].src) == ("TLS", f"127.0.0.1:{tls_port}")
    for b in (alice, bob):
        b.wait_log("video           Transmit:", timeout=5)
        stats = rtp_stats(b.log())
        assert stats["video"][1] > 0 and stats["audio"][1] > 0, (b.name, stats)
    assert "Traceback" not in gw.output()
