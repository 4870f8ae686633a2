"""RFC 4475 torture messages, sent unchanged to a running gateway over UDP and TCP.

Each message gets the outcome ``cases.tsv`` names, and after each one the gateway
still answers a known-good OPTIONS: one bad peer never takes it down.
"""

from __future__ import annotations

import csv
import socket
import time
from typing import Any

import pytest
from conftest import TORTURE, GatewayProcess, free_port

from gateway.sip.message import Response, StreamFramer, parse_datagram

CASES = list(csv.DictReader((TORTURE / "cases.tsv").open(), delimiter="\t"))
assert len(CASES) == 49, "the RFC 4475 corpus must hold 49 cases"

GOOD_OPTIONS = (
    "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/{t} 127.0.0.1:{port};branch=z9hG4bK-alive-{n};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:gw@127.0.0.1>\r\n"
    "Call-ID: alive-{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def config(port: int) -> str:
    return f"""
[gateway]
node_id = "torture"
data_dir = "data"
[sip]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
realm = "torture.test"
options_keepalive_seconds = 0
[[sip.accounts]]
username = "kiosk-1"
password = "secret-1"
[[routes]]
match = ".*"
to = "registered"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    port = free_port()
    gw = GatewayProcess(config(port), tmp_path_factory.mktemp("torture"))
    gw.wait_for("SIP listening")
    gw.port = port  # type: ignore[attr-defined]
    yield gw
    gw.stop()


def final_udp(sock: socket.socket, wait: float) -> list[Response]:
    """Responses until a final one (or silence for ``wait`` seconds)."""
    out: list[Response] = []
    sock.settimeout(wait)
    while True:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return out
        msg = parse_datagram(data)
        assert isinstance(msg, Response)
        out.append(msg)
        if msg.status >= 200:
            return out


def final_tcp(sock: socket.socket, wait: float) -> tuple[list[Response], bool]:
    framer = StreamFramer()
    out: list[Response] = []
    sock.settimeout(wait)
    closed = False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        if not data:
            closed = True
            break
        for msg in framer.feed(data):
            assert isinstance(msg, Response)
            out.append(msg)
        if out and out[-1].status >= 200:
            break
    return out, closed


def check(case: dict[str, str], finals: list[int]) -> None:
    allowed = case["status"].split("|")
    name = case["file"]
    if not finals:
        assert "drop" in allowed, f"{name}: no answer, expected {case['status']}"
        return
    status = finals[-1]
    assert "drop" not in allowed or len(allowed) > 1, f"{name}: answered {status}, must drop"
    ok = str(status) in allowed or (
        "process" in allowed and status not in (400, 505, 500, 513)
    )
    assert ok, f"{name}: answered {status}, expected {case['status']}"


def alive_udp(port: int, n: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        msg = GOOD_OPTIONS.format(t="UDP", port=s.getsockname()[1], n=n).encode()
        s.sendto(msg, ("127.0.0.1", port))
        resp = final_udp(s, 5)
        assert resp and resp[-1].status == 200, "gateway stopped answering OPTIONS"


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_udp(gateway: GatewayProcess, case: dict[str, str]) -> None:
    port = gateway.port  # type: ignore[attr-defined]
    data = (TORTURE / case["file"]).read_bytes()
    drop_expected = case["status"] == "drop"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(data, ("127.0.0.1", port))
        responses = final_udp(s, 0.5 if drop_expected else 5)
    check(case, [r.status for r in responses if r.status >= 200])
    alive_udp(port, hash(case["file"]) & 0xFFFF)
    assert gateway.alive()


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_tcp(gateway: GatewayProcess, case: dict[str, str]) -> None:
    port = gateway.port  # type: ignore[attr-defined]
    data = (TORTURE / case["file"]).read_bytes()
    framing_ok = case["framing"] == "ok"
    drop_expected = case["status"] == "drop"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        responses, closed = final_tcp(s, 0.5 if (drop_expected or not framing_ok) else 5)
    finals = [r.status for r in responses if r.status >= 200]
    if framing_ok:
        check(case, finals)
    else:
        # A framing anomaly on a stream: an error answer, or silence / a closed
        # connection; never a success.
        assert not finals or finals[-1] >= 400, f"{case['file']}: answered {finals}"
    alive_udp(port, hash(case["file"]) & 0xFFFF)
    assert gateway.alive()


def test_no_internal_errors_logged(gateway: GatewayProcess) -> None:
    # Runs after the cases above (pytest keeps file order).
    out = gateway.output()
    assert "Traceback" not in out and "internal error" not in out, out[-4000:]


