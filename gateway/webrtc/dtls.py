"""DTLS-SRTP (RFC 5763/5764) over pyOpenSSL memory BIOs, keyed into pylibsrtp (sans-IO).

The handshake object takes datagrams and returns datagrams, and says when its retransmission
timer fires; the caller moves them over ICE and arms the timer.  That keeps the DTLS
association independent of the ICE connection under it, which is what lets an ICE restart
swap the path without a new handshake.  The remote certificate is accepted during the
handshake and then checked against the fingerprint from the SDP, as WebRTC requires
(self-signed certificates, identity by fingerprint).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pylibsrtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

__all__ = [
    "FINGERPRINT_ALGORITHMS",
    "Certificate",
    "DtlsSrtp",
    "DtlsState",
    "SrtpProfile",
    "split_records",
]

DtlsState = Literal["new", "connecting", "connected", "failed", "closed"]

# RFC 8122 5: hash functions usable in a=fingerprint.
FINGERPRINT_ALGORITHMS: dict[str, hashes.HashAlgorithm] = {
    "sha-1": hashes.SHA1(),
    "sha-224": hashes.SHA224(),
    "sha-256": hashes.SHA256(),
    "sha-384": hashes.SHA384(),
    "sha-512": hashes.SHA512(),
}

MTU = 1200  # conservative path MTU for handshake datagrams


@dataclass(frozen=True)
class SrtpProfile:
    openssl_name: bytes
    libsrtp_profile: int
    key_length: int
    salt_length: int


_PROFILES = [
    SrtpProfile(b"SRTP_AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
    SrtpProfile(b"SRTP_AES128_CM_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
]


def _usable_profiles() -> list[SrtpProfile]:
    out = []
    for profile in _PROFILES:
        try:
            pylibsrtp.Policy(srtp_profile=profile.libsrtp_profile)
        except pylibsrtp.Error:  # libsrtp built without GCM
            continue
        out.append(profile)
    return out


PROFILES = _usable_profiles()


class Certificate:
    """A self-signed ECDSA P-256 certificate, as browsers use for DTLS-SRTP."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    @classmethod
    def generate(cls, days: int = 30) -> Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, os.urandom(8).hex())])
        now = datetime.datetime.now(tz=datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @property
    def expires(self) -> datetime.datetime:
        return self.cert.not_valid_after_utc

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        return fingerprint_of(self.cert, algorithm)


def fingerprint_of(cert: x509.Certificate, algorithm: str) -> str:
    digest = cert.fingerprint(FINGERPRINT_ALGORITHMS[algorithm.lower()]).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def split_records(data: bytes) -> list[bytes]:
    """Split what OpenSSL wrote into its memory BIO into DTLS records.

    A memory BIO is a byte stream, so a flight of several datagrams arrives concatenated;
    sending it in arbitrary 1500-byte slices would cut a record in two.  Handles the
    DTLS 1.2 header and the DTLS 1.3 unified header (RFC 9147 4); anything it cannot frame
    is returned as one piece.
    """
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        b0 = data[pos]
        if 20 <= b0 <= 26:  # DTLSPlaintext / DTLSCiphertext 1.2: 13-byte header
            if pos + 13 > len(data):
                break
            end = pos + 13 + int.from_bytes(data[pos + 11 : pos + 13], "big")
        elif b0 & 0xE0 == 0x20 and not b0 & 0x10:  # 1.3 unified header without CID
            head = 1 + (2 if b0 & 0x08 else 1)
            if not b0 & 0x04:  # no length: the record runs to the end
                end = len(data)
            else:
                if pos + head + 2 > len(data):
                    break
                end = pos + head + 2 + int.from_bytes(data[pos + head : pos + head + 2], "big")
        else:
            break
        out.append(data[pos:end])
        pos = end
    if pos < len(data):
        out.append(data[pos:])
    return out


def _datagrams(records: Sequence[bytes]) -> list[bytes]:
    """Pack records into datagrams of at most MTU bytes (a larger record goes alone)."""
    out: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > MTU:
            out.append(current)
            current = b""
        current += record
    if current:
        out.append(current)
    return out


class DtlsSrtp:
    """One DTLS-SRTP association, fed and drained by the caller.

    ``client`` is our DTLS role (a=setup:active).  ``remote_fingerprints`` are the
    (algorithm, value) pairs from the remote SDP: at least one must use a known
    algorithm, and every known one must match the certificate the peer presents.
    """

    def __init__(
        self,
        certificate: Certificate,
        *,
        client: bool,
        remote_fingerprints: Sequence[tuple[str, str]],
    ) -> None:
        self.client = client
        self.remote_fingerprints = list(remote_fingerprints)
        self.state: DtlsState = "new"
        self.failure: str | None = None
        self.profile: SrtpProfile | None = None
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self._handshake_timer_done = False
        ctx = SSL.Context(SSL.DTLS_METHOD)
        ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        ctx.use_certificate(certificate.cert)
        ctx.use_privatekey(certificate.key)
        ctx.set_cipher_list(
            b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
            b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
        )
        ctx.set_tlsext_use_srtp(b":".join(p.openssl_name for p in PROFILES))
        self._ssl = SSL.Connection(ctx, None)
        self._ssl.set_ciphertext_mtu(MTU)
        if client:
            self._ssl.set_connect_state()
        else:
            self._ssl.set_accept_state()

    # --- driving

    def start(self) -> list[bytes]:
        """Begin the handshake; a client returns its ClientHello."""
        if self.state != "new":
            return []
        self.state = "connecting"
        return self._step()

    def receive(self, data: bytes) -> list[bytes]:
        """A DTLS datagram from the peer; returns datagrams to send back."""
        if self.state in ("failed", "closed"):
            return []
        if self.state == "new":  # we are the server and the ClientHello arrived first
            self.state = "connecting"
        self._ssl.bio_write(data)
        if self.state == "connecting":
            return self._step()
        try:
            self._ssl.recv(1500)  # alerts, DTLS 1.3 ACKs and retransmitted flights
        except SSL.ZeroReturnError:
            self.state = "closed"
        except SSL.WantReadError:
            pass
        except SSL.Error:
            pass
        return self._drain()

    def timeout(self) -> float | None:
        """Seconds until handle_timeout() is due, None when no timer is needed."""
        if self.state not in ("connecting", "connected") or self._handshake_timer_done:
            return None
        value = self._ssl.DTLSv1_get_timeout()
        if value is None and self.state == "connected":
            self._handshake_timer_done = True
        return None if value is None else float(value)

    def handle_timeout(self) -> list[bytes]:
        if self.state not in ("connecting", "connected"):
            return []
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self._fail(f"DTLS timeout handling failed: {exc}")
            return []
        return self._drain()

    def close(self) -> list[bytes]:
        """Send close_notify if the association was up."""
        out: list[bytes] = []
        if self.state in ("connecting", "connected"):
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
            out = self._drain()
        self.state = "closed"
        return out

    # --- internals

    def _drain(self) -> list[bytes]:
        data = b""
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            except SSL.Error:
                break
            if not chunk:
                break
            data += chunk
        return _datagrams(split_records(data)) if data else []

    def _fail(self, reason: str) -> None:
        self.state = "failed"
        self.failure = reason

    def _step(self) -> list[bytes]:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            return self._drain()
        except SSL.Error as exc:
            out = self._drain()  # the alert, if any
            self._fail(f"DTLS handshake failed: {exc}")
            return out
        out = self._drain()
        reason = self._check_fingerprint()
        if reason is None:
            reason = self._setup_srtp()
        if reason is not None:
            self._fail(reason)
            return out
        self.state = "connected"
        return out

    def _check_fingerprint(self) -> str | None:
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return "the peer presented no certificate"
        known = [(a.lower(), v) for a, v in self.remote_fingerprints
                 if a.lower() in FINGERPRINT_ALGORITHMS]
        if not known:
            return "no fingerprint with a supported hash algorithm"
        for algorithm, value in known:
            if fingerprint_of(cert, algorithm) != value.upper():
                return f"the peer's certificate does not match its {algorithm} fingerprint"
        return None

    def _setup_srtp(self) -> str | None:
        name = self._ssl.get_selected_srtp_profile()
        profile = next((p for p in PROFILES if p.openssl_name == name), None)
        if profile is None:
            return "no SRTP protection profile was negotiated"
        size = 2 * (profile.key_length + profile.salt_length)
        material = self._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", size)
        k, s = profile.key_length, profile.salt_length
        client_key = material[0:k] + material[2 * k : 2 * k + s]
        server_key = material[k : 2 * k] + material[2 * k + s : 2 * k + 2 * s]
        tx_key, rx_key = (client_key, server_key) if self.client else (server_key, client_key)
        rx_policy = pylibsrtp.Policy(
            key=rx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=profile.libsrtp_profile,
        )
        rx_policy.window_size = 1024
        tx_policy = pylibsrtp.Policy(
            key=tx_key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
            srtp_profile=profile.libsrtp_profile,
        )
        tx_policy.allow_repeat_tx = True  # NACK retransmissions reuse sequence numbers
        tx_policy.window_size = 1024
        self.rx = pylibsrtp.Session(rx_policy)
        self.tx = pylibsrtp.Session(tx_policy)
        self.profile = profile
        return None
