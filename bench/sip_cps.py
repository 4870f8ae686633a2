#!/usr/bin/env python3
"""Call setups per second through the gateway's B2BUA, on one core.

Starts the gateway (``python -m gateway run``, pinned with ``taskset -c 1``) with a
trunk that trusts 127.0.0.1 and a route for every user to a sipp UAS, then runs a
sipp UAC at increasing call rates (sipp pinned to CPU 0).  Each call is
INVITE / 100 / 180 / 200 / ACK / hold 0-100 ms / BYE / 200 on both legs, signalling
only, all over UDP on 127.0.0.1.

For each step: offered rate, achieved (steady-state completed calls/s), successful
and failed calls (UAC and UAS side), retransmissions, INVITE->200 time, gateway CPU
(% of one core, from /proc/PID/stat) and RSS.  Prints a table, writes JSON, and
reports the highest rate with zero failed calls.

    .venv/bin/python bench/sip_cps.py                       # default rate ladder
    .venv/bin/python bench/sip_cps.py --rates 100,300,500 --duration 20 --soak 120

Stops at the first step that fails (failed calls, or achieved < 95 % of offered)
unless --keep-going.  Every process it starts is killed on exit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    BENCH,
    ROOT,
    SIPP_DIR,
    Procs,
    Sampler,
    free_udp_ports,
    gateway_config,
    log_lines,
    machine_info,
    read_sipp_stats,
    repartition_percentile,
    sipp_cmd,
    start_gateway,
    stat_duration_ms,
    stat_epoch,
    stat_int,
    udp_counters,
)

DEFAULT_RATES = "100,200,300,400,500,600,700,800,1000"
FAIL_KEYS = (
    "FailedCannotSendMessage(C)", "FailedMaxUDPRetrans(C)", "FailedUnexpectedMessage(C)",
    "FailedCallRejected(C)", "FailedCmdNotSent(C)", "FailedRegexpDoesntMatch(C)",
    "FailedOutboundCongestion(C)", "FailedTimeoutOnRecv(C)", "FailedTimeoutOnSend(C)",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default=DEFAULT_RATES, help="calls/s per step (comma list)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of calls per step")
    p.add_argument("--max-calls", type=int, default=30000, help="cap on calls per step")
    p.add_argument("--settle", type=float, default=8.0,
                   help="seconds between steps (>= 5: the UAS counts a call after its "
                   "4 s timewait)")
    p.add_argument("--soak", type=float, default=0.0,
                   help="after the ladder, run this many seconds at the best clean rate, "
                   "on a fresh gateway (no --max-calls cap)")
    p.add_argument("--soak-rate", type=int, default=None,
                   help="rate of the soak run (default: the best clean rate of the ladder)")
    p.add_argument("--keep-going", action="store_true", help="do not stop at a failing step")
    p.add_argument("--gw-cpu", type=int, default=1, help="CPU for the gateway (taskset)")
    p.add_argument("--sipp-cpu", type=int, default=0, help="CPU for sipp UAC + UAS")
    p.add_argument("--min-ratio", type=float, default=0.95,
                   help="a step also fails if achieved < this fraction of offered")
    p.add_argument("--profile-rate", type=int, default=None,
                   help="record the gateway with py-spy during the step at this rate")
    p.add_argument("--profile-out", type=Path, default=None,
                   help="py-spy output (default WORK/profile_RATE.txt, --format raw)")
    p.add_argument("--instrument", default="",
                   help='run the gateway under bench/gw_instrumented.py with these options, '
                   'e.g. "--gc-stats gc.json --cprofile gw.prof" (slows it down)')
    p.add_argument("--gateway-src", type=Path, default=None,
                   help="run the gateway package of another checkout (before/after runs)")
    p.add_argument("--work", type=Path, default=None, help="work dir (default: a temp dir)")
    p.add_argument("--json", type=Path, default=BENCH / "results" / "sip_cps.json")
    p.add_argument("--label", default="", help="free text stored in the JSON")
    return p.parse_args(argv)


def build_config(work: Path, gw_port: int, uas_port: int) -> Path:
    extra = f"""
[[sip.trunks]]
name = "sipp-uas"
sources = ["127.0.0.1/32"]
uri = "sip:127.0.0.1:{uas_port};transport=udp"

[[routes]]
match = ".+"
to = "trunk:sipp-uas"
"""
    cfg = work / "gateway.toml"
    cfg.write_text(gateway_config(work, gw_port, "warning", extra))
    return cfg


def run_step(procs: Procs, args: argparse.Namespace, work: Path, rate: int, duration: float,
             gw: subprocess.Popen[bytes], uas: subprocess.Popen[bytes], uas_csv: Path,
             gw_log: Path, ports: dict[str, int], tag: str,
             max_calls: int | None) -> dict[str, Any]:
    calls = max(1, int(rate * duration))
    if max_calls is not None:
        calls = min(calls, max_calls)
    send_time = calls / rate
    step_dir = work / f"{tag}_r{rate}"
    step_dir.mkdir(parents=True, exist_ok=True)
    stat = step_dir / "uac_stat.csv"
    uas_before = (read_sipp_stats(uas_csv) or [{}])[-1]
    uas_counts_before = _counts(work, "uas_cps")
    udp_before = udp_counters()
    log_start = len(log_lines(gw_log))
    argv = sipp_cmd(
        args.sipp_cpu, "-sf", str(SIPP_DIR / "uac_cps.xml"), f"127.0.0.1:{ports['gw']}",
        "-s", "bench", "-i", "127.0.0.1", "-p", str(ports["uac"]), "-mi", "127.0.0.1",
        "-ci", "127.0.0.1", "-cp", str(ports["uac_cp"]),
        "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(max(2000, rate * 10)),
        "-recv_timeout", "10000", "-nostdin", "-max_socket", "1000",
        "-trace_stat", "-stf", str(stat), "-fd", "1", "-trace_counts",
        "-trace_err", "-error_file", str(step_dir / "uac_errors.log"),
    )
    uac = procs.start(argv, log=step_dir / "uac_screen.txt", cwd=step_dir)
    sampler = Sampler([gw.pid, uas.pid, uac.pid], interval=0.5).start()
    t_start = time.monotonic()
    prof: subprocess.Popen[bytes] | None = None
    prof_out: Path | None = None
    if args.profile_rate == rate and tag == "step":
        prof_out = args.profile_out or (work / f"profile_{rate}.txt")
        pyspy = ROOT / ".venv" / "bin" / "py-spy"
        prof = procs.start(
            ["taskset", "-c", str(args.sipp_cpu), str(pyspy), "record", "--pid", str(gw.pid),
             "--rate", "250", "--nonblocking", "--format", "raw", "--output", str(prof_out),
             "--duration", str(max(1, int(send_time) - 2))],
            log=step_dir / "py-spy.txt")
    try:
        rc = uac.wait(timeout=send_time + 60)
    except subprocess.TimeoutExpired:
        procs.stop(uac)
        rc = None
    t_end = time.monotonic()
    if prof is not None:
        try:
            prof.wait(timeout=30)
        except subprocess.TimeoutExpired:
            procs.stop(prof)
    time.sleep(args.settle)  # the UAS counts a call only after its timewait
    sampler.stop()
    udp_after = udp_counters()
    rows = read_sipp_stats(stat)
    uas_after = (read_sipp_stats(uas_csv) or [{}])[-1]
    uas_counts = _delta(_counts(work, "uas_cps"), uas_counts_before)
    uac_counts = _counts(step_dir, "uac_cps")
    last = rows[-1] if rows else {}

    # Steady state: from 2 s after the start to the last call creation.
    achieved = None
    if rows:
        t0 = stat_epoch(rows[0], "StartTime")
        window = [r for r in rows if t0 + 2 <= stat_epoch(r, "CurrentTime") <= t0 + send_time]
        if len(window) >= 2:
            a, b = window[0], window[-1]
            dt = stat_epoch(b, "CurrentTime") - stat_epoch(a, "CurrentTime")
            if dt > 0:
                achieved = (stat_int(b, "SuccessfulCall(C)")
                            - stat_int(a, "SuccessfulCall(C)")) / dt
        if achieved is None:  # short step: whole run
            dt = stat_epoch(last, "CurrentTime") - t0
            achieved = stat_int(last, "SuccessfulCall(C)") / dt if dt > 0 else 0.0
    w0, w1 = t_start + 1.5, t_start + max(2.0, send_time)
    new_log = log_lines(gw_log, log_start)
    res: dict[str, Any] = {
        "offered_cps": rate,
        "calls": calls,
        "created": stat_int(last, "OutgoingCall(C)"),
        "achieved_cps": round(achieved, 1) if achieved is not None else None,
        "sipp_call_rate": float(last.get("CallRate(C)", 0) or 0),
        "successful": stat_int(last, "SuccessfulCall(C)"),
        "failed": stat_int(last, "FailedCall(C)"),
        "failed_detail": {k[6:-3]: stat_int(last, k) for k in FAIL_KEYS if stat_int(last, k)},
        "retransmissions": stat_int(last, "Retransmissions(C)"),
        "dead_call_msgs": stat_int(last, "DeadCallMsgs(C)"),
        "setup_ms_mean": round(stat_duration_ms(last, "ResponseTime1(C)"), 2),
        "setup_ms_p50": repartition_percentile(last, "ResponseTimeRepartition1", 0.5),
        "setup_ms_p99": repartition_percentile(last, "ResponseTimeRepartition1", 0.99),
        "uas_successful": stat_int(uas_after, "SuccessfulCall(C)")
        - stat_int(uas_before, "SuccessfulCall(C)"),
        "uas_failed": stat_int(uas_after, "FailedCall(C)") - stat_int(uas_before, "FailedCall(C)"),
        "uas_retransmissions": stat_int(uas_after, "Retransmissions(C)")
        - stat_int(uas_before, "Retransmissions(C)"),
        "gw_cpu_pct": _round(sampler.cpu_percent(gw.pid, w0, w1)),
        "gw_cpu_peak_pct": _round(sampler.peak_cpu_percent(gw.pid, 2.0)),
        "gw_rss_mb": _mb(sampler.samples[-1].rss.get(gw.pid)) if sampler.samples else None,
        "gw_rss_max_mb": _mb(sampler.max_rss_kb(gw.pid)),
        # Other processes on the machine compete for the CPUs: record the load.
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "uac_cpu_pct": _round(sampler.cpu_percent(uac.pid, w0, min(w1, t_end))),
        "uas_cpu_pct": _round(sampler.cpu_percent(uas.pid, w0, w1)),
        "udp_rcvbuf_errors": udp_after.get("RcvbufErrors", 0) - udp_before.get("RcvbufErrors", 0),
        # Retransmissions by message (sipp -trace_counts): what the peers saw twice.
        "uac_retrans_by_msg": {k: v for k, v in uac_counts.items()
                               if v and ("Retrans" in k or "Unexp" in k or "Timeout" in k)},
        "uas_retrans_by_msg": {k: v for k, v in uas_counts.items()
                               if v and ("Retrans" in k or "Unexp" in k or "Timeout" in k)},
        # INVITEs the gateway retransmitted to the UAS (no answer seen within T1).
        "gw_invite_retrans": uas_counts.get("3_INVITE_Recv", 0)
        + uas_counts.get("0_INVITE_Retrans", 0),
        "sipp_rc": rc,
        "wall_s": round(t_end - t_start, 1),
        "gw_log_lines": len(new_log),
        "gw_log_sample": new_log[:5],
        "profiled": prof_out is not None,
        "gw_series": sampler.series(gw.pid),
    }
    if prof_out is not None:
        res["profile"] = str(prof_out)
    ok = (rc == 0 and res["failed"] == 0 and res["uas_failed"] == 0
          and res["successful"] == calls
          and (achieved or 0) >= args.min_ratio * rate and gw.poll() is None)
    res["clean"] = ok
    return res


def _counts(d: Path, scenario: str) -> dict[str, int]:
    """Last row of sipp's -trace_counts CSV (per-message counters) in directory d."""
    files = sorted(d.glob(f"{scenario}_*_counts.csv"))
    if not files:
        return {}
    rows = read_sipp_stats(files[-1])
    if not rows:
        return {}
    return {k: int(v) for k, v in rows[-1].items() if v.strip().isdigit()}


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


COLUMNS = [
    ("offered", "offered_cps", "{}"), ("achieved", "achieved_cps", "{}"),
    ("ok", "successful", "{}"), ("failed", "failed", "{}"), ("uas_fail", "uas_failed", "{}"),
    ("retrans", "retransmissions", "{}"), ("uas_retr", "uas_retransmissions", "{}"),
    ("gw_inv_retr", "gw_invite_retrans", "{}"),
    ("setup_p50", "setup_ms_p50", "{}"),
    ("setup_p99", "setup_ms_p99", "{}"), ("gw_cpu%", "gw_cpu_pct", "{}"),
    ("peak%", "gw_cpu_peak_pct", "{}"), ("rss_MB", "gw_rss_mb", "{}"),
    ("sipp_cpu%", "_sipp", "{}"),
    ("udp_drops", "udp_rcvbuf_errors", "{}"),
    ("clean", "clean", "{}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    head = [c[0] for c in COLUMNS]
    body = []
    for r in rows:
        sipp = (r.get("uac_cpu_pct") or 0) + (r.get("uas_cpu_pct") or 0)
        body.append([
            f"{round(sipp, 1)}" if c[1] == "_sipp" else c[2].format(r.get(c[1]))
            for c in COLUMNS])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    lines = ["| " + " | ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for b in body:
        lines.append("| " + " | ".join(v.rjust(w) for v, w in zip(b, widths, strict=True)) + " |")
    return "\n".join(lines)


class Stack:
    """A gateway and its sipp UAS, in their own work directory."""

    def __init__(self, procs: Procs, args: argparse.Namespace, work: Path) -> None:
        self.procs, self.args, self.work = procs, args, work
        work.mkdir(parents=True, exist_ok=True)
        names = ("gw", "uas", "uac", "uas_cp", "uac_cp")
        self.ports = dict(zip(names, free_udp_ports(len(names)), strict=True))
        self.gw_log = work / "gateway.log"
        self.uas_csv = work / "uas_stat.csv"
        cfg = build_config(work, self.ports["gw"], self.ports["uas"])
        self.gw, self.startup = start_gateway(
            procs, cfg, self.gw_log, self.ports["gw"], args.gw_cpu,
            instrument=args.instrument.split(), src=args.gateway_src)
        print(f"gateway pid {self.gw.pid} on CPU {args.gw_cpu}, udp "
              f"127.0.0.1:{self.ports['gw']}, ready in {self.startup:.2f} s; work dir {work}",
              flush=True)
        self.uas = procs.start(sipp_cmd(
            args.sipp_cpu, "-sf", str(SIPP_DIR / "uas_cps.xml"), "-i", "127.0.0.1",
            "-p", str(self.ports["uas"]), "-mi", "127.0.0.1", "-ci", "127.0.0.1",
            "-cp", str(self.ports["uas_cp"]), "-nostdin", "-max_socket", "1000",
            "-trace_stat", "-stf", str(self.uas_csv), "-fd", "1", "-trace_counts",
            "-trace_err", "-error_file", str(work / "uas_errors.log")),
            log=work / "uas_screen.txt", cwd=work)
        time.sleep(1.0)
        if self.uas.poll() is not None:
            raise RuntimeError(f"sipp UAS exited with {self.uas.returncode}")

    def step(self, rate: int, duration: float, tag: str,
             max_calls: int | None) -> dict[str, Any]:
        return run_step(self.procs, self.args, self.work, rate, duration, self.gw, self.uas,
                        self.uas_csv, self.gw_log, self.ports, tag, max_calls)

    def stop(self) -> None:
        self.procs.stop(self.uas)
        self.procs.stop(self.gw)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="gw-cps-"))
    work.mkdir(parents=True, exist_ok=True)
    for tool in ("taskset", "/usr/bin/sipp"):
        if shutil.which(tool) is None:
            print(f"missing {tool}", file=sys.stderr)
            return 2
    procs = Procs()
    results: dict[str, Any] = {
        "benchmark": "sip_cps", "label": args.label, "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "work": str(work),
        "settings": {"duration_s": args.duration, "max_calls": args.max_calls,
                     "hold_ms": "uniform 0-100", "gw_cpu": args.gw_cpu,
                     "sipp_cpu": args.sipp_cpu, "min_ratio": args.min_ratio,
                     "rates": rates, "soak_s": args.soak, "transport": "udp",
                     "log_level": "warning", "gateway_src": str(args.gateway_src or ROOT)},
        "steps": [], "soak": None,
    }
    try:
        stack = Stack(procs, args, work)
        results["gateway_startup_s"] = round(stack.startup, 2)
        best: dict[str, Any] | None = None
        for rate in rates:
            print(f"step: {rate} calls/s for {args.duration:.0f} s ...", flush=True)
            r = stack.step(rate, args.duration, "step", args.max_calls)
            results["steps"].append(r)
            print(table([r]).splitlines()[-1], flush=True)
            if r["clean"]:
                if best is None or rate > best["offered_cps"]:
                    best = r
            elif not args.keep_going:
                break
            else:
                # Calls of an overloaded step still fail 64*T1 = 32 s later: keep them
                # out of the next step's figures.
                time.sleep(40)
            if stack.gw.poll() is not None:
                break
        soak_rate = args.soak_rate or (best["offered_cps"] if best else None)
        if soak_rate and args.soak > 0:
            stack.stop()  # a fresh gateway and UAS: nothing left over from the ladder
            soak = Stack(procs, args, work / "soak")
            print(f"soak: {soak_rate} calls/s for {args.soak:.0f} s ...", flush=True)
            results["soak"] = soak.step(soak_rate, args.soak, "soak", None)
        results["best_clean_cps"] = best["offered_cps"] if best else None
        results["best_clean_step"] = best
        # Stricter: no datagram lost and retransmissions below 1 % of the calls.
        quiet = [r for r in results["steps"] if r["clean"] and not r["udp_rcvbuf_errors"]
                 and r["retransmissions"] + r["uas_retransmissions"] < 0.01 * r["calls"]]
        results["best_quiet_cps"] = max((r["offered_cps"] for r in quiet), default=None)
    finally:
        procs.stop_all()
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")

    print()
    print(table(results["steps"]))
    if results["soak"]:
        print("\nsoak:")
        print(table([results["soak"]]))
    best = results.get("best_clean_step")
    if best:
        print(f"\nhighest rate with zero failed calls: {best['offered_cps']} calls/s offered, "
              f"{best['achieved_cps']} achieved, gateway {best['gw_cpu_pct']} % of one core, "
              f"RSS {best['gw_rss_mb']} MB")
        print(f"highest with no drops and retransmissions < 1 % of calls: "
              f"{results.get('best_quiet_cps')} calls/s")
    else:
        print("\nno step was clean")
    print(f"JSON: {args.json}  (logs: {work})")
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())
