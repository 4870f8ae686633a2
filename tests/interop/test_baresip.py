"""baresip 1.0 as a kiosk: digest registration, kiosk-to-kiosk video calls, brute force.

Two baresip instances, alice (kiosk-1) and bob (kiosk-2), register with the gateway
over UDP on 127.0.0.1; alice calls bob through the gateway (route ``to =
"registered"``), bob answers automatically.  The gateway passes SDP through, so RTP
goes directly between the two baresips.  baresip runs with ``-s``: its log holds a
trace of every SIP message it sent and received, which the tests read.

Digest: the gateway offers SHA-256 then MD5 (RFC 8760).  baresip 1.0's SIP stack (libre
1.x) only knows MD5 and gives up on a 401 that carries any other algorithm ("Function
not implemented") even when an MD5 challenge follows.  Kiosk accounts configured with
only an MD5 HA1 are challenged with MD5 alone, and that is how these kiosks are set
up; ``test_password_account_gets_both_challenges`` pins the behaviour with both.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import GatewayProcess, free_port
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

ALICE = KioskAccount("kiosk-1", "alice-secret")
BOB = KioskAccount("kiosk-2", "bob-secret")

GatewayFactory = Callable[[str], GatewayProcess]
BaresipFactory = Callable[[BaresipConfig], Baresip]


def start_kiosk(factory: BaresipFactory, tmp_path: Path, name: str, account: KioskAccount,
                gw_port: int, password: str | None = None, video: str = "VP8") -> Baresip:
    cfg = BaresipConfig(
        name=name, sip_port=free_port_pair(), ctrl_port=free_port(), rtp_ports=rtp_range(),
        wav=write_wav(tmp_path / "tone8k.wav"),
        aor=f"<sip:{account.username}@127.0.0.1:{gw_port}>",
        password=password if password is not None else account.password,
        regint=600, video_codec=video,
    )
    return factory(cfg)


def registered(b: Baresip, timeout: float = 10.0) -> dict[str, object]:
    return b.ctrl.wait_event("REGISTER_OK", timeout, fail_on=("REGISTER_FAIL",))


def received(b: Baresip, gw_port: int) -> list[TracedMessage]:
    """SIP messages baresip received from the gateway."""
    return [m for m in sip_trace(b.log()) if m.src == f"127.0.0.1:{gw_port}"]


def sent(b: Baresip, gw_port: int) -> list[TracedMessage]:
    return [m for m in sip_trace(b.log()) if m.dst == f"127.0.0.1:{gw_port}"]


@pytest.fixture
def gw_port() -> int:
    return free_port()


def test_register_md5_kiosks(gateway_factory: GatewayFactory, baresip_factory: BaresipFactory,
                             tmp_path: Path, gw_port: int) -> None:
    gw = gateway_factory(gateway_config([f"udp:127.0.0.1:{gw_port}"], [ALICE, BOB]))
    alice = start_kiosk(baresip_factory, tmp_path, "alice", ALICE, gw_port)
    bob = start_kiosk(baresip_factory, tmp_path, "bob", BOB, gw_port)
    for b, account in ((alice, ALICE), (bob, BOB)):
        ev = registered(b)
        assert ev["param"] == "200 OK"
        gw.wait_for(f"registered {account.username} from udp:127.0.0.1:{b.config.sip_port} ",
                    timeout=5)
        # The challenge offered MD5 only (the account has only an MD5 HA1) ...
        challenges = [m for m in received(b, gw_port)
                      if m.first_line.startswith("SIP/2.0 401")]
        assert challenges, "no 401 challenge in the trace"
        offered = [re.search(r"algorithm=([\w-]+)", v).group(1)  # type: ignore[union-attr]
                   for v in challenges[0].header("WWW-Authenticate")]
        assert offered == ["MD5"]
        # ... and baresip answered it with MD5: no algorithm parameter (MD5 by default)
        # or algorithm=MD5, and a 32-hex-digit response.
        authorized = [m for m in sent(b, gw_port)
                      if m.first_line.startswith("REGISTER") and m.header("Authorization")]
        assert authorized, "baresip never sent credentials"
        auth = authorized[0].header("Authorization")[0]
        assert f'username="{account.username}"' in auth
        alg = re.search(r"algorithm=\"?([\w-]+)", auth)
        assert alg is None or alg.group(1).upper() == "MD5", auth
        assert re.search(r'response="[0-9a-f]{32}"', auth), auth
        finals = [m.first_line for m in received(b, gw_port) if m.cseq_method() == "REGISTER"
                  and not m.first_line.startswith("SIP/2.0 1")]
        assert finals[-1] == "SIP/2.0 200 OK", finals
    assert "Traceback" not in gw.output()


def test_password_account_gets_both_challenges(
        gateway_factory: GatewayFactory, baresip_factory: BaresipFactory, tmp_path: Path,
        gw_port: int) -> None:
    """An account with a cleartext password is challenged with SHA-256 first, then
    MD5 (RFC 8760 order).  baresip 1.0 cannot take that offer (libre 1.x stops at the
    first non-MD5 challenge); a baresip that can must pick SHA-256 and get in."""
    carol = KioskAccount("kiosk-3", "carol-secret", md5_only=False)
    gw = gateway_factory(gateway_config([f"udp:127.0.0.1:{gw_port}"], [carol]))
    b = start_kiosk(baresip_factory, tmp_path, "carol", carol, gw_port)
    ev = b.ctrl.wait_event(("REGISTER_OK", "REGISTER_FAIL"), 10)
    challenge = next(m for m in received(b, gw_port) if m.first_line.startswith("SIP/2.0 401"))
    offered = [re.search(r"algorithm=([\w-]+)", v).group(1)  # type: ignore[union-attr]
               for v in challenge.header("WWW-Authenticate")]
    assert offered == ["SHA-256", "MD5"]
    if ev["type"] == "REGISTER_FAIL":
        # libre 1.x: sip_auth_authenticate() returns ENOSYS on algorithm=SHA-256.
        assert ev["param"] == "Function not implemented", ev
        assert not [m for m in sent(b, gw_port) if m.header("Authorization")]
    else:
        auth = next(m for m in sent(b, gw_port) if m.header("Authorization"))
        assert "algorithm=SHA-256" in auth.header("Authorization")[0]
        gw.wait_for("registered kiosk-3 from udp:127.0.0.1:", timeout=5)


@pytest.mark.parametrize("codec,rtpmap", [("VP8", "VP8/90000"), ("H264", "H264/90000")])
def test_video_call(gateway_factory: GatewayFactory, baresip_factory: BaresipFactory,
                    tmp_path: Path, gw_port: int, codec: str, rtpmap: str) -> None:
    gw = gateway_factory(gateway_config([f"udp:127.0.0.1:{gw_port}"], [ALICE, BOB]))
    alice = start_kiosk(baresip_factory, tmp_path, "alice", ALICE, gw_port, video=codec)
    bob = start_kiosk(baresip_factory, tmp_path, "bob", BOB, gw_port, video=codec)
    registered(alice)
    registered(bob)

    resp = alice.ctrl.command("dial", f"sip:kiosk-2@127.0.0.1:{gw_port}")
    assert resp["ok"], resp
    for b in (alice, bob):
        b.ctrl.wait_event("CALL_ESTABLISHED", 10, fail_on=("CALL_CLOSED",))
    line = gw.wait_for("INVITE from kiosk-1 (kiosk) for sip:kiosk-2@", timeout=5)
    call_id = re.search(r"call (\w+): INVITE from", line).group(1)  # type: ignore[union-attr]
    gw.wait_for(f"call {call_id}: routing 'kiosk-2' to kiosk kiosk-2", timeout=5)
    gw.wait_for(f"call {call_id}: connected", timeout=5)

    # The offer bob got from the gateway, and the answer alice got back, both carry a
    # video m-line with the configured codec.
    invites = [m for m in received(bob, gw_port) if m.first_line.startswith("INVITE ")]
    assert len(invites) == 1
    offer = media_sections(invites[0].body)
    assert set(offer) == {"audio", "video"}, invites[0].body
    assert offer["video"][0] > 0 and any(r.startswith(rtpmap) for r in offer["video"][1]), \
        invites[0].body
    ok = [m for m in received(alice, gw_port)
          if m.first_line == "SIP/2.0 200 OK" and m.cseq_method() == "INVITE"]
    assert ok, "alice got no 200 OK to her INVITE"
    answer = media_sections(ok[0].body)
    assert answer["video"][0] > 0 and any(r.startswith(rtpmap) for r in answer["video"][1]), \
        ok[0].body
    bob.ctrl.wait_event("CALL_REMOTE_SDP", 5, where=lambda e: e.get("param") == "offer")

    # RTP: baresip reports the first packet of each stream (CALL_RTPESTAB) ...
    for b in (alice, bob):
        for media in ("audio", "video"):
            b.ctrl.wait_event("CALL_RTPESTAB", 10, where=lambda e, m=media: e["param"] == m,
                              fail_on=("CALL_CLOSED",))
    time.sleep(1.0)  # let a second of media flow before counting

    mark = len(bob.ctrl.events)
    alice.ctrl.command("hangup")
    alice.ctrl.wait_event("CALL_CLOSED", 10)
    bob.ctrl.wait_event("CALL_CLOSED", 10, since=mark)
    gw.wait_for(f"call {call_id}: ended (BYE from the caller, by caller)", timeout=5)
    # ... and prints per-stream packet counts when the call ends.
    for b in (alice, bob):
        b.wait_log("video           Transmit:", timeout=5)
        stats = rtp_stats(b.log())
        assert stats["audio"][0] >= 10 and stats["audio"][1] >= 10, (b.name, stats)
        assert stats["video"][0] >= 5 and stats["video"][1] >= 5, (b.name, stats)
    byes = [m for m in received(bob, gw_port) if m.first_line.startswith("BYE ")]
    assert len(byes) == 1
    assert "Traceback" not in gw.output()


def test_wrong_password_then_blocked(gateway_factory: GatewayFactory,
                                     baresip_factory: BaresipFactory, tmp_path: Path,
                                     gw_port: int) -> None:
    limit = 3
    accounts = [ALICE, BOB, KioskAccount("kiosk-3", "carol-secret")]
    gw = gateway_factory(gateway_config(
        [f"udp:127.0.0.1:{gw_port}"], accounts,
        registrar=f"auth_failure_limit = {limit}\nauth_failure_window = 60\n"
                  "auth_block_seconds = 300\n"))
    # One baresip; each account added to it makes one REGISTER attempt with a wrong
    # password (libre waits 30 s or more before it retries a failed registration).
    b = start_kiosk(baresip_factory, tmp_path, "mallory", ALICE, gw_port, password="wrong")
    ev = b.ctrl.wait_event(("REGISTER_OK", "REGISTER_FAIL"), 10)
    assert ev["type"] == "REGISTER_FAIL" and ev["param"] == "403 Forbidden", ev
    gw.wait_for("authentication failure from udp:127.0.0.1:", timeout=5)
    for n, account in enumerate(accounts[1:limit], start=2):
        mark = len(b.ctrl.events)
        line = f"<sip:{account.username}@127.0.0.1:{gw_port}>;regint=600;auth_pass=wrong-{n}"
        assert b.ctrl.command("uanew", line)["ok"]
        ev = b.ctrl.wait_event(("REGISTER_OK", "REGISTER_FAIL"), 10, since=mark)
        assert ev["type"] == "REGISTER_FAIL" and ev["param"] == "403 Forbidden", ev
    assert gw.output().count("authentication failure from udp:127.0.0.1:") == limit
    gw.wait_for(f"blocking 127.0.0.1 for 300s after {limit} authentication failures",
                timeout=5)

    # Blocked: now even the right password is refused, without a challenge.
    good = start_kiosk(baresip_factory, tmp_path, "bob", BOB, gw_port)
    ev = good.ctrl.wait_event(("REGISTER_OK", "REGISTER_FAIL"), 10)
    assert ev["type"] == "REGISTER_FAIL" and ev["param"] == "403 Forbidden", ev
    gw.wait_for("refused REGISTER from blocked source udp:127.0.0.1:", timeout=5)
    assert not [m for m in received(good, gw_port) if m.first_line.startswith("SIP/2.0 401")]
    assert "registered kiosk-" not in gw.output()
