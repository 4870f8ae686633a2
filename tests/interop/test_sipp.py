"""Interop with real sipp peers, all on 127.0.0.x: sipp UAC -> gateway -> sipp UAS.

Each test starts a gateway (``gateway run``) with a trusted trunk whose URI is a sipp UAS,
runs scenarios from ``tests/interop/sipp/`` and checks what a user would see: sipp's exit
status, its call counters (successful, failed) and, from sipp's message traces, which
requests and responses each side sent and received.  Every sipp writes its statistics,
errors, screen and message trace into the test's tmp_path; a failing assertion shows them.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import GatewayProcess, free_port, require_binary

SCENARIOS = Path(__file__).resolve().parent / "sipp"
ACCOUNT = ("kiosk-1", "secret-kiosk-1")
SIPP_TIMEOUT = 30  # seconds: sipp's own global timeout (-timeout), a safety net only


# -- gateway ---------------------------------------------------------------------------


def gateway_config(port: int, uas_port: int, transport: str = "udp", t1_ms: int = 500,
                   t2_ms: int = 4000) -> str:
    """A gateway on 127.0.0.1:port (UDP + TCP), one kiosk account, one trunk (the sipp
    UAS), kiosk-N routed to registered kiosks and everything else to the trunk."""
    return f"""
[gateway]
node_id = "interop"
data_dir = "data"
log_level = "info"

[sip]
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
public_host = "127.0.0.1"
realm = "interop.test"
t1_ms = {t1_ms}
t2_ms = {t2_ms}
options_keepalive_seconds = 0

[sip.registrar]
# sipp computes MD5 digests only.
algorithms = ["MD5"]

[[sip.accounts]]
username = "{ACCOUNT[0]}"
password = "{ACCOUNT[1]}"

[[sip.trunks]]
name = "pbx"
sources = ["127.0.0.1/32"]
uri = "sip:127.0.0.1:{uas_port};transport={transport}"

[[routes]]
match = "kiosk-[0-9]+"
to = "registered"

[[routes]]
match = ".*"
to = "trunk:pbx"
"""


def assert_gateway_clean(gw: GatewayProcess) -> None:
    out = gw.output()
    assert gw.alive(), f"the gateway died:\n{out[-4000:]}"
    assert "Traceback" not in out and "internal error" not in out, out[-6000:]


# -- sipp traces -----------------------------------------------------------------------


@dataclass
class TracedMessage:
    """One message from sipp's -trace_msg file, seen from that sipp."""

    direction: str  # "sent" or "received"
    start_line: str
    cseq_method: str
    text: str

    @property
    def status(self) -> int | None:
        m = re.match(r"SIP/2\.0 (\d{3})", self.start_line)
        return int(m.group(1)) if m else None

    @property
    def method(self) -> str | None:
        return None if self.start_line.startswith("SIP/") else self.start_line.split(" ")[0]

    def header(self, name: str) -> str | None:
        head = self.text.split("\n\n", 1)[0]
        for line in head.splitlines()[1:]:
            k, sep, v = line.partition(":")
            if sep and k.strip().lower() == name.lower():
                return v.strip()
        return None


# Each message starts after a "----- DATE TIME" line; sipp's notes on simulated loss (-lost)
# are written just before the dashes, on the same line, with no message text.
_TRACE_SEP = re.compile(r"-{20,} \d{4}-\d\d-\d\d [0-9:.]+\n")
_TRACE_HEAD = re.compile(r"^\s*(\w+) message (sent|received)")
_LOSS_NOTE = re.compile(r"\w+ message [()\w ]*lost[^\n]*$")


def parse_trace(path: Path) -> tuple[list[TracedMessage], int]:
    """The messages of a -trace_msg file, and how many sipp dropped on purpose (-lost)."""
    if not path.exists():
        return [], 0
    out = []
    lost = 0
    for block in _TRACE_SEP.split(path.read_text(errors="replace")):
        note = _LOSS_NOTE.search(block)
        if note is not None:
            lost += note.group(0).count(" lost ")
            block = block[: note.start()]
        block = block.replace("\r\n", "\n").strip("\n")
        m = _TRACE_HEAD.match(block)
        if m is None:
            continue
        text = block.split("\n", 1)[1].lstrip("\n") if "\n" in block else ""
        start = text.split("\n", 1)[0].strip()
        cseq = re.search(r"^CSeq:\s*\d+\s+(\w+)", text, re.M | re.I)
        out.append(TracedMessage(m.group(2), start, cseq.group(1) if cseq else "", text))
    return out, lost


# -- running sipp ----------------------------------------------------------------------


def wait_bound(ip: str, port: int, tcp: bool, timeout: float = 5.0) -> None:
    """Until something (sipp) listens on ip:port, read from /proc/net (probing with a
    bind of our own could steal the port from sipp at the wrong moment)."""
    table = Path("/proc/net/tcp" if tcp else "/proc/net/udp")
    local = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            # fields[1] = local address, fields[3] = state (0A = TCP LISTEN, 07 = UDP)
            if fields[1] == local and (not tcp or fields[3] == "0A"):
                return
        time.sleep(0.02)
    raise AssertionError(f"nothing bound {ip}:{port} within {timeout} s")


def free_media_port() -> int:
    """A base port with base..base+3 free over UDP (sipp's audio and video RTP/RTCP)."""
    for _ in range(50):
        base = free_port((socket.SOCK_DGRAM,))
        socks = []
        try:
            for p in range(base, base + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free media port block")


@dataclass
class SippResult:
    name: str
    rc: int
    stats: dict[str, str]
    messages: list[TracedMessage]
    lost: int  # messages sipp dropped on purpose (-lost), sent or received
    files: dict[str, Path]

    def stat(self, name: str) -> int:
        value = self.stats.get(f"{name}(C)", "")
        return int(value) if value.isdigit() else -1

    @property
    def successful(self) -> int:
        return self.stat("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.stat("FailedCall")

    def count(self, direction: str, what: str | int, cseq: str | None = None) -> int:
        """How many messages this sipp sent/received: a method name or a status code
        (optionally only responses to ``cseq`` method)."""
        n = 0
        for m in self.messages:
            if m.direction != direction:
                continue
            if isinstance(what, int):
                if m.status != what:
                    continue
            elif m.method != what:
                continue
            if cseq is not None and m.cseq_method != cseq:
                continue
            n += 1
        return n

    def per_call(self, direction: str) -> dict[str, list[str | int]]:
        """Call-ID -> the methods / status codes this sipp sent or received, in order."""
        out: dict[str, list[str | int]] = {}
        for m in self.messages:
            if m.direction == direction:
                what = m.method if m.status is None else m.status
                out.setdefault(m.header("Call-ID") or "", []).append(what or "")
        return out

    def find(self, direction: str, what: str | int) -> list[TracedMessage]:
        return [m for m in self.messages if m.direction == direction
                and (m.status == what if isinstance(what, int) else m.method == what)]

    def report(self) -> str:
        parts = [f"=== sipp {self.name}: exit code {self.rc}, successful={self.successful} "
                 f"failed={self.failed}"]
        for key in ("errors", "screen", "stdout"):
            path = self.files[key]
            if not path.exists() or (key == "stdout" and self.files["screen"].exists()):
                continue
            text = path.read_text(errors="replace")
            # The scenario screen (per-message counts) comes first; errors matter last.
            text = text[:2500] if key == "screen" else text[-3000:]
            parts.append(f"--- {key} ({path}):\n{text}")
        summary = [f"{m.direction:8} {m.start_line} [{m.cseq_method}]" for m in self.messages]
        parts.append("--- messages:\n" + "\n".join(summary[-60:]))
        return "\n".join(parts)


def read_stats(path: Path) -> dict[str, str]:
    """The last row of sipp's -trace_stat CSV (';'-separated, cumulative (C) columns)."""
    if not path.exists():
        return {}
    rows = [r for r in path.read_text(errors="replace").splitlines() if r.strip()]
    if len(rows) < 2:
        return {}
    header = rows[0].split(";")
    return dict(zip(header, rows[-1].split(";"), strict=False))


class Sipp:
    """One sipp process; ``wait`` (or ``stop``) gives its SippResult."""

    def __init__(self, binary: str, workdir: Path, name: str, scenario: str,
                 args: list[str]) -> None:
        self.name = name
        self.files = {
            "stats": workdir / f"{name}_stats.csv",
            "errors": workdir / f"{name}_errors.log",
            "screen": workdir / f"{name}_screen.log",
            "messages": workdir / f"{name}_messages.log",
            "stdout": workdir / f"{name}_stdout.log",
        }
        for path in self.files.values():
            path.unlink(missing_ok=True)
        cmd = [
            binary, "-sf", str(SCENARIOS / scenario), *args,
            "-nostdin", "-timeout", str(SIPP_TIMEOUT), "-timeout_error",
            "-trace_stat", "-stf", str(self.files["stats"]), "-fd", "1",
            "-trace_err", "-error_file", str(self.files["errors"]),
            "-trace_screen", "-screen_file", str(self.files["screen"]),
            "-trace_msg", "-message_file", str(self.files["messages"]),
        ]
        self.cmd = cmd
        self._out = self.files["stdout"].open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=workdir)

    def wait(self, timeout: float = SIPP_TIMEOUT + 10) -> SippResult:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = self.stop()
        return self._result(rc)

    def stop(self, grace: float = 3.0) -> int:
        """Ask sipp to quit (SIGUSR1: finish and write its files), then kill it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def close(self) -> None:
        self._out.close()

    def _result(self, rc: int) -> SippResult:
        self.close()
        messages, lost = parse_trace(self.files["messages"])
        return SippResult(self.name, rc, read_stats(self.files["stats"]), messages, lost,
                          self.files)


@dataclass
class SippRunner:
    binary: str
    workdir: Path
    running: list[Sipp] = field(default_factory=list)

    def start(self, name: str, scenario: str, *, port: int, remote: str | None = None,
              ip: str = "127.0.0.1", transport: str = "u1", calls: int = 1,
              extra: tuple[str, ...] = ()) -> Sipp:
        args = [] if remote is None else [remote]
        args += [
            "-i", ip, "-p", str(port), "-t", transport,
            "-mi", ip, "-mp", str(free_media_port()),
            "-ci", ip, "-cp", str(free_port((socket.SOCK_DGRAM,))),
            "-m", str(calls), *extra,
        ]
        sipp = Sipp(self.binary, self.workdir, name, scenario, args)
        self.running.append(sipp)
        return sipp

    def uas(self, scenario: str, port: int, calls: int, transport: str = "u1",
            extra: tuple[str, ...] = ()) -> Sipp:
        sipp = self.start("uas", scenario, port=port, transport=transport, calls=calls,
                          extra=extra)
        try:
            wait_bound("127.0.0.1", port, tcp=transport.startswith("t"))
        except AssertionError:
            raise AssertionError(sipp.wait(0.1).report()) from None
        return sipp


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippRunner]:
    runner = SippRunner(require_binary("sipp"), tmp_path)
    yield runner
    for proc in runner.running:
        proc.stop(grace=1.0)
        proc.close()


@pytest.fixture
def gateway(gateway_factory: Callable[[str], GatewayProcess]) -> Callable[..., GatewayProcess]:
    """Start a gateway on a free port for a UAS port; ``gw.port`` is where it listens."""

    def start(uas_port: int, **kw: object) -> GatewayProcess:
        port = free_port()
        gw = gateway_factory(gateway_config(port, uas_port, **kw))  # type: ignore[arg-type]
        gw.port = port  # type: ignore[attr-defined]
        return gw

    return start


def run_pair(uac: Sipp, uas: Sipp, gw: GatewayProcess) -> tuple[SippResult, SippResult, str]:
    """Wait for the UAC, then the UAS (not long if the UAC already failed)."""
    a = uac.wait()
    b = uas.wait(timeout=15 if a.rc == 0 else 2)
    context = f"{a.report()}\n\n{b.report()}\n\n=== gateway log:\n{gw.output()[-6000:]}"
    return a, b, context


def assert_all_succeeded(result: SippResult, calls: int, context: str) -> None:
    assert result.rc == 0, f"sipp {result.name} exited {result.rc}\n{context}"
    assert result.successful == calls, (
        f"sipp {result.name}: {result.successful} successful calls, expected {calls}\n{context}")
    assert result.failed == 0, f"sipp {result.name}: {result.failed} failed calls\n{context}"


def gw_uri(gw: GatewayProcess) -> str:
    return f"127.0.0.1:{gw.port}"  # type: ignore[attr-defined]


# -- the cases -------------------------------------------------------------------------


def test_basic_calls(sipp: SippRunner, gateway: Callable[..., GatewayProcess]) -> None:
    """10 calls INVITE/100/180/200/ACK, 1 s hold, BYE/200: every message exactly once."""
    calls = 10
    uas_port = free_port()
    gw = gateway(uas_port)
    uas = sipp.uas("uas_call.xml", uas_port, calls)
    uac = sipp.start("uac", "uac_call.xml", port=free_port(), remote=gw_uri(gw), calls=calls,
                     extra=("-s", "5551234", "-d", "1000", "-r", "10"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    # Every call has exactly the expected shape on each side: no retransmission, nothing
    # missing, nothing extra, in order.
    caller_got = a.per_call("received")
    assert len(caller_got) == calls, ctx
    assert all(seq == [100, 180, 200, 200] for seq in caller_got.values()), ctx
    assert all(seq == ["INVITE", "ACK", "BYE"] for seq in a.per_call("sent").values()), ctx
    assert a.count("received", 200, "INVITE") == calls, ctx
    assert a.count("received", 200, "BYE") == calls, ctx
    callee_got = b.per_call("received")
    assert len(callee_got) == calls, ctx
    assert all(seq == ["INVITE", "ACK", "BYE"] for seq in callee_got.values()), ctx
    assert all(seq == [180, 200, 200] for seq in b.per_call("sent").values()), ctx
    invite = b.find("received", "INVITE")[0]
    assert invite.start_line.startswith(f"INVITE sip:5551234@127.0.0.1:{uas_port}"), ctx
    assert "o=interop-uac 1001 1 " in invite.text, "the offer was not passed through"
    # A trunk call shows the callee the caller's number, not the trunk's name.
    sent_from = a.find("sent", "INVITE")[0].header("From") or ""
    caller_user = sent_from.split("sip:", 1)[1].split("@", 1)[0]
    assert f"<sip:{caller_user}@" in (invite.header("From") or ""), ctx
    # The caller's 200 carries the callee's answer, unchanged.
    assert "o=interop-uas 2001 1 " in a.find("received", 200)[0].text, ctx
    assert_gateway_clean(gw)


def test_calls_survive_packet_loss(sipp: SippRunner,
                                   gateway: Callable[..., GatewayProcess]) -> None:
    """20 calls with 10 % of packets lost at both sipps: retransmissions recover them all.

    The gateway and both sipps use T1 = 100 ms and T2 = 1 s, so that a request is tried
    about 8 times within the 64*T1 = 6.4 s its receiver keeps state for.  The *_lossy.xml
    scenarios say which sipp quirks they work around (and why no ACK is dropped).
    """
    calls = 20
    uas_port = free_port()
    gw = gateway(uas_port, t1_ms=100, t2_ms=1000)
    uas = sipp.uas("uas_call_lossy.xml", uas_port, calls, extra=("-lost", "10", "-T2", "1000"))
    uac = sipp.start("uac", "uac_call_lossy.xml", port=free_port(), remote=gw_uri(gw),
                     calls=calls, extra=("-s", "5551234", "-d", "200", "-r", "20",
                                         "-lost", "10", "-T2", "1000"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    # The loss really happened, on both sides (P(no loss) ~ 0.9**100).
    assert a.lost > 0 and b.lost > 0, ctx
    assert_gateway_clean(gw)


def test_caller_hangs_up_before_its_ack(sipp: SippRunner,
                                       gateway: Callable[..., GatewayProcess]) -> None:
    """The caller's ACK is lost and it sends BYE at once: the gateway answers the BYE and
    still ACKs the callee's 200 before its BYE (uas_call.xml insists on the ACK)."""
    calls = 3
    uas_port = free_port()
    gw = gateway(uas_port)
    uas = sipp.uas("uas_call.xml", uas_port, calls)
    uac = sipp.start("uac", "uac_bye_before_ack.xml", port=free_port(), remote=gw_uri(gw),
                     calls=calls, extra=("-s", "5551234"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    assert a.count("sent", "ACK") == 0 and a.count("received", 200, "BYE") == calls, ctx
    assert b.count("received", "INVITE") == calls, ctx
    callee_got = b.per_call("received")
    assert len(callee_got) == calls, ctx
    for call_id, seq in callee_got.items():
        assert seq == ["INVITE", "ACK", "BYE"], f"{call_id}: {seq}\n{ctx}"
    assert_gateway_clean(gw)


def test_cancel_while_ringing(sipp: SippRunner,
                              gateway: Callable[..., GatewayProcess]) -> None:
    """CANCEL after 180: 200 + 487 on both sides, and the 487 ACKed on both sides."""
    calls = 3
    uas_port = free_port()
    gw = gateway(uas_port)
    uas = sipp.uas("uas_cancel.xml", uas_port, calls)
    uac = sipp.start("uac", "uac_cancel.xml", port=free_port(), remote=gw_uri(gw),
                     calls=calls, extra=("-s", "5551234"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    # Caller: 180, then 200 to its CANCEL and 487 to its INVITE; never a 200 to the INVITE.
    assert a.count("received", 180) == calls, ctx
    assert a.count("sent", "CANCEL") == calls, ctx
    assert a.count("received", 200, "CANCEL") == calls, ctx
    assert a.count("received", 487, "INVITE") == calls, ctx
    assert a.count("received", 200, "INVITE") == 0, ctx
    assert a.count("sent", "ACK") == calls, ctx
    # Callee: the gateway's CANCEL (same branch as its INVITE), then the ACK for the 487.
    assert b.count("received", "CANCEL") == calls, ctx
    assert b.count("sent", 200, "CANCEL") == calls, ctx
    assert b.count("sent", 487, "INVITE") == calls, ctx
    assert b.count("received", "ACK") == calls, ctx
    assert all(seq == ["INVITE", "CANCEL", "ACK"]
               for seq in b.per_call("received").values()), ctx
    for inv in b.find("received", "INVITE"):
        cancel = [m for m in b.find("received", "CANCEL")
                  if m.header("Call-ID") == inv.header("Call-ID")]
        assert len(cancel) == 1 and cancel[0].header("Via") == inv.header("Via"), ctx
    assert_gateway_clean(gw)


def test_reinvite_with_new_sdp(sipp: SippRunner,
                               gateway: Callable[..., GatewayProcess]) -> None:
    """A mid-call re-INVITE from the caller reaches the callee with the new offer; the
    callee's new answer comes back in the 200; ACK on both sides; then BYE."""
    calls = 2
    uas_port = free_port()
    gw = gateway(uas_port)
    uas = sipp.uas("uas_reinvite.xml", uas_port, calls)
    uac = sipp.start("uac", "uac_reinvite.xml", port=free_port(), remote=gw_uri(gw),
                     calls=calls, extra=("-s", "5551234"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    assert b.count("received", "INVITE") == 2 * calls, ctx
    reinvites = [m for m in b.find("received", "INVITE") if "s=offer2" in m.text]
    assert len(reinvites) == calls, ctx
    for m in reinvites:
        assert m.header("To") is not None and "tag=" in (m.header("To") or ""), ctx
        assert "a=sendonly" in m.text, ctx
    assert b.count("received", "ACK") == 2 * calls, ctx
    answers = [m for m in a.find("received", 200) if "s=answer2" in m.text]
    assert len(answers) == calls, ctx
    assert all("a=recvonly" in m.text for m in answers), ctx
    assert a.count("sent", "ACK") == 2 * calls, ctx
    assert b.count("received", "BYE") == calls and a.count("received", 200, "BYE") == calls, ctx
    assert_gateway_clean(gw)


def test_basic_calls_over_tcp(sipp: SippRunner,
                              gateway: Callable[..., GatewayProcess]) -> None:
    """The basic call over TCP on both sides (sipp -t t1, trunk ;transport=tcp)."""
    calls = 5
    uas_port = free_port()
    gw = gateway(uas_port, transport="tcp")
    uas = sipp.uas("uas_call.xml", uas_port, calls, transport="t1")
    uac = sipp.start("uac", "uac_call.xml", port=free_port(), remote=gw_uri(gw), calls=calls,
                     transport="t1", extra=("-s", "5551234", "-d", "300", "-r", "10"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    assert a.count("received", 200, "INVITE") == calls, ctx
    assert a.count("received", 200, "BYE") == calls, ctx
    assert b.count("received", "INVITE") == calls, ctx
    assert b.count("received", "ACK") == calls and b.count("received", "BYE") == calls, ctx
    for m in a.messages + b.messages:
        assert "SIP/2.0/TCP" in (m.header("Via") or ""), f"not over TCP: {m.start_line}\n{ctx}"
    assert_gateway_clean(gw)


def test_busy_callee(sipp: SippRunner, gateway: Callable[..., GatewayProcess]) -> None:
    """The callee answers 486 Busy Here: the caller gets 486 (and ACKs it)."""
    calls = 3
    uas_port = free_port()
    gw = gateway(uas_port)
    uas = sipp.uas("uas_busy.xml", uas_port, calls)
    uac = sipp.start("uac", "uac_busy.xml", port=free_port(), remote=gw_uri(gw), calls=calls,
                     extra=("-s", "5551234"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    assert a.count("received", 486, "INVITE") == calls, ctx
    assert a.count("received", 200) == 0, ctx
    assert a.count("sent", "ACK") == calls, ctx
    assert b.count("sent", 486) == calls and b.count("received", "ACK") == calls, ctx
    assert_gateway_clean(gw)


def test_untrusted_source_must_authenticate(sipp: SippRunner,
                                            gateway: Callable[..., GatewayProcess]) -> None:
    """From 127.0.0.2 (the trunk trusts 127.0.0.1/32 only) an INVITE is challenged with
    401; with a kiosk account's credentials the call goes through to the trunk."""
    uas_port = free_port()
    gw = gateway(uas_port)
    # Without credentials: 401 (Digest, MD5), nothing reaches the callee.
    unauth = sipp.start("unauth", "uac_unauth.xml", ip="127.0.0.2", port=free_port(),
                        remote=gw_uri(gw), calls=2,
                        extra=("-s", "5551234", "-key", "caller", ACCOUNT[0]))
    r = unauth.wait()
    ctx = f"{r.report()}\n=== gateway log:\n{gw.output()[-4000:]}"
    assert_all_succeeded(r, 2, ctx)
    assert r.count("received", 401, "INVITE") == 2, ctx
    assert r.count("received", 180) == 0 and r.count("received", 200) == 0, ctx
    challenge = r.find("received", 401)[0].header("WWW-Authenticate") or ""
    assert challenge.startswith("Digest ") and 'realm="interop.test"' in challenge, challenge
    assert "algorithm=MD5" in challenge, challenge
    assert "routing" not in gw.output(), "an unauthenticated call was routed"

    # With the kiosk's credentials (-au/-ap): 401, ACK, INVITE with Authorization, call.
    calls = 3
    uas = sipp.uas("uas_call.xml", uas_port, calls)
    uac = sipp.start("uac", "uac_auth_call.xml", ip="127.0.0.2", port=free_port(),
                     remote=gw_uri(gw), calls=calls,
                     extra=("-s", "5551234", "-key", "caller", ACCOUNT[0], "-d", "200",
                            "-au", ACCOUNT[0], "-ap", ACCOUNT[1],
                            # sipp's digest uri is sip:REMOTE_IP:PORT unless told; the
                            # gateway (rightly) wants the Request-URI (RFC 3261 22.4).
                            "-auth_uri", f"5551234@{gw_uri(gw)}"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    assert a.count("received", 401) == calls, ctx
    authed = [m for m in a.find("sent", "INVITE") if m.header("Authorization")]
    assert len(authed) == calls, ctx
    assert a.count("received", 200, "INVITE") == calls, ctx
    assert b.count("received", "INVITE") == calls, ctx
    # The callee sees the kiosk as the caller (the account, not the trunk).
    from_hdr = b.find("received", "INVITE")[0].header("From") or ""
    assert f"sip:{ACCOUNT[0]}@" in from_hdr, ctx
    assert f"INVITE from {ACCOUNT[0]} (kiosk)" in gw.output()
    assert_gateway_clean(gw)


def test_register_then_call_the_registered_kiosk(
        sipp: SippRunner, gateway: Callable[..., GatewayProcess]) -> None:
    """A kiosk REGISTERs with digest (200 lists its Contact); a call for kiosk-1 is then
    sent to that registered contact, where a sipp UAS answers it."""
    kiosk_port = free_port()
    trunk_port = free_port()  # nothing listens there: kiosk-1 must not go to the trunk
    gw = gateway(trunk_port)
    reg = sipp.start("register", "register.xml", port=kiosk_port, remote=gw_uri(gw),
                     extra=("-key", "user", ACCOUNT[0], "-au", ACCOUNT[0],
                            "-ap", ACCOUNT[1]))
    r = reg.wait()
    ctx = f"{r.report()}\n=== gateway log:\n{gw.output()[-4000:]}"
    assert_all_succeeded(r, 1, ctx)
    assert r.count("received", 401, "REGISTER") == 1, ctx
    ok = r.find("received", 200)
    assert len(ok) == 1, ctx
    contact = ok[0].header("Contact") or ""
    assert contact.startswith(f"<sip:{ACCOUNT[0]}@127.0.0.1:{kiosk_port}>"), ctx
    assert re.search(r";\s*expires=\d+", contact), ctx

    # The kiosk's SIP stack now answers calls on the port it registered from.
    calls = 2
    uas = sipp.uas("uas_call.xml", kiosk_port, calls)
    uac = sipp.start("uac", "uac_call.xml", port=free_port(), remote=gw_uri(gw), calls=calls,
                     extra=("-s", ACCOUNT[0], "-d", "200"))
    a, b, ctx = run_pair(uac, uas, gw)
    assert_all_succeeded(a, calls, ctx)
    assert_all_succeeded(b, calls, ctx)
    invites = b.find("received", "INVITE")
    assert len(invites) == calls, ctx
    for inv in invites:
        assert inv.start_line == f"INVITE sip:{ACCOUNT[0]}@127.0.0.1:{kiosk_port} SIP/2.0", ctx
    assert f"routing '{ACCOUNT[0]}' to kiosk {ACCOUNT[0]}" in gw.output(), ctx
    assert_gateway_clean(gw)
