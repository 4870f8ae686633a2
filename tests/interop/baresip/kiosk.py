"""baresip as a kiosk of the gateway: gateway configuration, ports, log parsing."""

from __future__ import annotations

import hashlib
import itertools
import random
import re
import socket
from dataclasses import dataclass
from pathlib import Path

REALM = "interop.test"

# RTP port ranges for baresip instances: below Linux's ephemeral range (32768+), so
# no client socket can hold them, and spread so parallel runs rarely meet.
_rtp_bases = itertools.count(random.randrange(20000, 31000, 100), 100)


def rtp_range() -> tuple[int, int]:
    base = next(_rtp_bases)
    if base >= 32000:
        base = 20000 + base % 12000
    return base, base + 99


def free_port_pair() -> int:
    """A loopback port P with P and P+1 free for UDP and TCP (baresip listens for
    TLS on its SIP port + 1)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        held: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    t = socket.socket(socket.AF_INET, kind)
                    held.append(t)
                    t.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for t in held:
                t.close()
    raise RuntimeError("no free port pair")


def ha1_md5(username: str, password: str, realm: str = REALM) -> str:
    return hashlib.md5(f"{username}:{realm}:{password}".encode()).hexdigest()


@dataclass(frozen=True)
class KioskAccount:
    username: str
    password: str
    # Configure only the MD5 HA1 (no password): the gateway then challenges this
    # account with MD5 alone, which is all baresip 1.0 (libre 1.x) can answer.
    md5_only: bool = True

    def toml(self) -> str:
        out = f'[[sip.accounts]]\nusername = "{self.username}"\n'
        if self.md5_only:
            out += f'ha1_md5 = "{ha1_md5(self.username, self.password)}"\n'
        else:
            out += f'password = "{self.password}"\n'
        return out


def gateway_config(listen: list[str], accounts: list[KioskAccount], *,
                   registrar: str = "", tls: tuple[Path, Path] | None = None) -> str:
    """A gateway configuration: kiosk accounts, `kiosk-N` routed to registered kiosks.

    ``registrar`` is extra [sip.registrar] TOML; ``tls`` = (certificate, private key).
    Keepalive OPTIONS are off so the kiosks' traces hold only what a test does.
    """
    quoted = ", ".join(f'"{a}"' for a in listen)
    text = f"""
[gateway]
node_id = "interop"
data_dir = "data"
secret = "interop-test-secret-0123456789"
[sip]
listen = [{quoted}]
public_host = "127.0.0.1"
realm = "{REALM}"
options_keepalive_seconds = 0
"""
    if tls is not None:
        text += f'[sip.tls]\ncertificate = "{tls[0]}"\nprivate_key = "{tls[1]}"\n'
    text += f'[sip.registrar]\nalgorithms = ["SHA-256", "MD5"]\n{registrar}\n'
    text += "".join(a.toml() for a in accounts)
    text += '[[routes]]\nmatch = "kiosk-[0-9]+"\nto = "registered"\n'
    return text


# -- baresip's SIP trace (``baresip -s``) ---------------------------------------------

_TRACE = re.compile(
    r"\x1b\[36;1m#\n(?P<transport>UDP|TCP|TLS) (?P<src>\S+) -> (?P<dst>\S+)\n"
    r"(?P<msg>.*?)\x1b\[;m", re.S)


@dataclass(frozen=True)
class TracedMessage:
    transport: str
    src: str
    dst: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def body(self) -> str:
        _, _, body = self.text.replace("\r\n", "\n").partition("\n\n")
        return body

    def header(self, name: str) -> list[str]:
        head = self.text.replace("\r\n", "\n").partition("\n\n")[0]
        out = []
        for line in head.split("\n")[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == name.lower():
                out.append(v.strip())
        return out

    def cseq_method(self) -> str:
        cseq = self.header("CSeq")
        return cseq[0].split()[-1] if cseq else ""


def sip_trace(log: str) -> list[TracedMessage]:
    return [TracedMessage(m["transport"], m["src"], m["dst"], m["msg"])
            for m in _TRACE.finditer(log)]


def media_sections(sdp: str) -> dict[str, tuple[int, list[str]]]:
    """SDP media type -> (port, the section's rtpmap encodings, e.g. "VP8/90000")."""
    out: dict[str, tuple[int, list[str]]] = {}
    current: str | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind, port = line[2:].split()[:2]
            current = kind
            out[kind] = (int(port), [])
        elif line.startswith("a=rtpmap:") and current is not None:
            out[current][1].append(line[len("a=rtpmap:"):].split(None, 1)[-1].strip())
    return out


_STATS = re.compile(r"(audio|video)\s+Transmit:\s+Receive:\s*\npackets:\s+(\d+)\s+(\d+)")


def rtp_stats(log: str) -> dict[str, tuple[int, int]]:
    """Per media type, (packets sent, packets received) of the last call, from the
    statistics baresip prints when a call ends (``rtp_stats yes``)."""
    return {m[1]: (int(m[2]), int(m[3])) for m in _STATS.finditer(log)}
