#!/usr/bin/env python3
"""In-process B2BUA call benchmark: the sans-IO core with no sockets and a fake clock.

Builds the same objects as ``SipService`` (core, registrar, call layer, config router,
from a generated configuration with a trunk trusting 127.0.0.1) and feeds it the
bytes sipp sends in bench/sip_cps.py: per call INVITE, the far end's 180 and 200,
ACK, BYE after a hold, 200 to the BYE.  Calls start at ``--rate`` per second of
simulated time, so the amount of live state (calls, transactions, timers) matches a
real run at that rate.

Measures the CPU time spent inside the gateway's code only (not in this script's own
peers) per call, what that means as calls/s on one core, the garbage collector's
passes and the objects left alive.  Deterministic and quick: use it to compare
optimizations; use bench/sip_cps.py for the end-to-end figure.

    .venv/bin/python bench/core_calls.py --calls 20000 --rate 300
    .venv/bin/python bench/core_calls.py --calls 5000 --cprofile /tmp/core.prof
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import itertools
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

# GATEWAY_SRC=/path/to/another/checkout measures that tree's gateway package instead.
ROOT = Path(os.environ.get("GATEWAY_SRC") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(ROOT))

from gateway.config import load_config  # noqa: E402
from gateway.sip.b2bua import CallLayer, IncomingCall, SessionTimerConfig  # noqa: E402
from gateway.sip.core import CoreConfig, SipCore  # noqa: E402
from gateway.sip.registrar_glue import (  # noqa: E402
    BindingContacts,
    RegistrarHandler,
    make_authorizer,
    make_registrar,
)
from gateway.sip.routing import ConfigRouter, Rejection  # noqa: E402
from gateway.sip.transaction import TimerConfig  # noqa: E402
from gateway.store.memory import MemoryStore  # noqa: E402

GW_PORT = 5060
UAC = ("udp", "127.0.0.1", 5071)
UAS_PORT = 5070
SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
       b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def build(work: Path) -> tuple[SipCore, CallLayer, ConfigRouter]:
    cfg_path = work / "gateway.toml"
    cfg_path.write_text(f"""
[gateway]
data_dir = "{work / 'data'}"
log_level = "warning"
secret = "bench-only-secret-0123456789abcdef"
[sip]
listen = ["udp:127.0.0.1:{GW_PORT}"]
public_host = "127.0.0.1"
options_keepalive_seconds = 0
[[sip.trunks]]
name = "sipp-uas"
sources = ["127.0.0.1/32"]
uri = "sip:127.0.0.1:{UAS_PORT};transport=udp"
[[routes]]
match = ".+"
to = "trunk:sipp-uas"
""")
    cfg = load_config(cfg_path)
    sip = cfg.sip
    timers = TimerConfig(t1=sip.t1_ms / 1000, t2=sip.t2_ms / 1000, t4=sip.t4_ms / 1000)
    core = SipCore(CoreConfig(
        local={"udp": ("127.0.0.1", GW_PORT)}, user_agent=sip.user_agent,
        force_rport=sip.force_rport, max_message_bytes=sip.max_message_bytes,
        max_headers=sip.max_headers, udp_size_threshold=sip.udp_size_threshold,
        timers=timers))
    registrar, auth, limiter = make_registrar(sip, MemoryStore(), b"0123456789abcdef")
    calls = CallLayer(core, make_authorizer(sip, auth, limiter, registrar),
                      SessionTimerConfig(sip.session_expires, sip.min_se))
    core.handlers.append(RegistrarHandler(registrar, core))
    core.handlers.append(calls)
    router = ConfigRouter(cfg.routes, sip, BindingContacts(registrar))
    return core, calls, router


# -- the peers (sipp look-alikes); their time is not counted ----------------------------


def headers_of(data: bytes) -> tuple[str, dict[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    lines = head.split("\r\n")
    h: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        h.setdefault(k.strip().lower(), v.strip())
    return lines[0], h


def uac_invite(n: int) -> bytes:
    return (
        f"INVITE sip:bench@127.0.0.1:{GW_PORT} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1-{n}-0\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5071>;tag=1SIPpTag00{n}\r\n"
        f"To: bench <sip:bench@127.0.0.1:{GW_PORT}>\r\n"
        f"Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
        "Contact: sip:sipp@127.0.0.1:5071\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP


def uac_in_dialog(method: str, n: int, to: str, cseq: int) -> bytes:
    return (
        f"{method} sip:bench@127.0.0.1:{GW_PORT} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1-{n}-{cseq}{method}\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5071>;tag=1SIPpTag00{n}\r\n"
        f"To: {to}\r\nCall-ID: {n}-1@127.0.0.1\r\nCSeq: {cseq} {method}\r\n"
        "Contact: sip:sipp@127.0.0.1:5071\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def uas_response(h: dict[str, str], status: str, tag: str | None, body: bytes = b"") -> bytes:
    to = h["to"] if tag is None or ";tag=" in h["to"] else f"{h['to']};tag={tag}"
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"SIP/2.0 {status}\r\nVia: {h['via']}\r\nFrom: {h['from']}\r\nTo: {to}\r\n"
        f"Call-ID: {h['call-id']}\r\nCSeq: {h['cseq']}\r\n"
        f"Contact: <sip:127.0.0.1:{UAS_PORT};transport=UDP>\r\n{ctype}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Sim:
    def __init__(self, core: SipCore, calls: CallLayer, router: ConfigRouter,
                 hold: float) -> None:
        self.core, self.calls, self.router = core, calls, router
        self.hold = hold
        self.now = 0.0
        self.gw_time = 0.0
        self.queue: list[tuple[float, int, Any]] = []
        self.seq = itertools.count()
        self.uac_to: dict[str, str] = {}  # call-id -> To with the gateway's tag
        self.completed = 0
        self.unexpected = 0

    def at(self, t: float, fn: Any) -> None:
        heapq.heappush(self.queue, (t, next(self.seq), fn))

    # gateway entry points, timed
    def deliver(self, data: bytes, peer: tuple[str, str, int]) -> None:
        t0 = time.perf_counter()
        self.core.receive_datagram(data, peer, self.now)
        out = self.flush()
        self.gw_time += time.perf_counter() - t0
        self.route_out(out)

    def timers(self) -> None:
        t0 = time.perf_counter()
        self.core.handle_timer(self.now)
        out = self.flush()
        self.gw_time += time.perf_counter() - t0
        self.route_out(out)

    def flush(self) -> list[tuple[Any, bytes]]:
        """What SipDriver.flush does: output, then events (routing), then output."""
        core = self.core
        out = core.messages_to_send()
        while (ev := core.next_event()) is not None:
            if isinstance(ev, IncomingCall):
                d = self.router.route(ev.user, core.now)
                if isinstance(d, Rejection):
                    self.calls.reject(ev.call, d.status, d.reason)
                else:
                    self.calls.connect(ev.call, d.uri, d.peer, from_user=ev.caller)
        out.extend(core.messages_to_send())
        return out

    # the peers
    def route_out(self, out: list[tuple[Any, bytes]]) -> None:
        for peer, data in out:
            start, h = headers_of(data)
            if peer[2] == UAS_PORT:
                self.uas(start, h)
            else:
                self.uac(start, h)

    def uas(self, start: str, h: dict[str, str]) -> None:
        method = start.split(" ", 1)[0]
        if method == "INVITE":
            tag = "uas" + h["call-id"][:8]
            self.deliver(uas_response(h, "180 Ringing", tag), ("udp", "127.0.0.1", UAS_PORT))
            self.deliver(uas_response(h, "200 OK", tag, SDP), ("udp", "127.0.0.1", UAS_PORT))
        elif method == "BYE":
            self.deliver(uas_response(h, "200 OK", None), ("udp", "127.0.0.1", UAS_PORT))
        elif method != "ACK":
            self.unexpected += 1

    def uac(self, start: str, h: dict[str, str]) -> None:
        if not start.startswith("SIP/2.0"):
            self.unexpected += 1
            return
        status = start.split(" ")[1]
        cid = h["call-id"]
        n = int(cid.split("-", 1)[0])
        if h["cseq"].endswith("INVITE") and status == "200":
            if cid in self.uac_to:
                return  # a 2xx retransmission
            self.uac_to[cid] = h["to"]
            self.deliver(uac_in_dialog("ACK", n, h["to"], 1), UAC)
            self.at(self.now + self.hold, lambda: self.deliver(
                uac_in_dialog("BYE", n, self.uac_to[cid], 2), UAC))
        elif h["cseq"].endswith("BYE") and status == "200":
            self.completed += 1
            self.uac_to.pop(cid, None)

    def run(self, calls: int, rate: float) -> None:
        for n in range(calls):
            self.at(n / rate, lambda n=n: self.deliver(uac_invite(n), UAC))
        end = calls / rate + 40.0  # let the last calls' state expire
        while self.queue or self.now < end:
            t_next = self.queue[0][0] if self.queue else end
            deadline = self.core.get_timer()
            if deadline is not None and deadline <= t_next and deadline <= end:
                self.now = max(self.now, deadline)
                self.timers()
                continue
            if not self.queue:
                self.now = end
                self.timers()
                break
            t, _, fn = heapq.heappop(self.queue)
            self.now = max(self.now, t)
            fn()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--rate", type=float, default=300.0, help="calls per simulated second")
    p.add_argument("--hold", type=float, default=0.05, help="seconds between ACK and BYE")
    p.add_argument("--cprofile", type=Path, help="write a cProfile of the gateway's work")
    p.add_argument("--top", type=int, default=25, help="functions printed with --cprofile")
    p.add_argument("--json", type=Path)
    p.add_argument("--gc-threshold", default="",
                   help="gc.set_threshold values before the run, e.g. 10000,10,10")
    p.add_argument("--gc-freeze", action="store_true", help="gc.freeze() before the run")
    p.add_argument("--gc-off", action="store_true",
                   help="gc.disable() (profiling only: keeps collector time out of the "
                   "functions that happen to trigger it)")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gw-core-"))
    core, calls, router = build(work)
    sim = Sim(core, calls, router, args.hold)
    if args.gc_threshold:
        gc.set_threshold(*(int(x) for x in args.gc_threshold.split(",")))
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    if args.gc_off:
        gc.disable()
    gc_time = [0.0, 0.0]
    gc_max = [0.0]
    gc_count = Counter[int]()
    start: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            start["t"] = time.perf_counter()
        else:
            d = time.perf_counter() - start["t"]
            gc_time[0] += d
            gc_count[info["generation"]] += 1
            if info["generation"] == 2:
                gc_time[1] += d
                gc_max[0] = max(gc_max[0], d)

    gc.callbacks.append(on_gc)
    prof = cProfile.Profile() if args.cprofile else None
    if prof is not None:
        prof.enable()
    wall0 = time.perf_counter()
    sim.run(args.calls, args.rate)
    wall = time.perf_counter() - wall0
    if prof is not None and args.cprofile:
        prof.disable()
        prof.dump_stats(str(args.cprofile))
    gc.callbacks.remove(on_gc)
    per_call_us = 1e6 * sim.gw_time / max(1, args.calls)
    res = {
        "calls": args.calls, "rate": args.rate, "completed": sim.completed,
        "unexpected": sim.unexpected,
        "gateway_cpu_s": round(sim.gw_time, 3),
        "us_per_call": round(per_call_us, 1),
        "calls_per_s_one_core": round(1e6 / per_call_us) if per_call_us else None,
        "gc_passes": dict(gc_count), "gc_total_s": round(gc_time[0], 3),
        "gc_gen2_total_s": round(gc_time[1], 3), "gc_gen2_max_ms": round(1000 * gc_max[0], 1),
        "live_calls_after": len(calls.calls), "live_legs_after": len(calls.legs),
        "core_timers_after": len(core._timers),
        "gc_objects_after": len(gc.get_objects()),
        "wall_s": round(wall, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if prof is not None and args.cprofile:
        pstats.Stats(str(args.cprofile)).sort_stats("tottime").print_stats(args.top)
    return 0 if sim.completed == args.calls and not sim.unexpected else 1


if __name__ == "__main__":
    sys.exit(main())
