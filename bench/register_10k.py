#!/usr/bin/env python3
"""10,000 kiosk accounts registering with digest authentication, then refreshing.

Generates a configuration with N ``[[sip.accounts]]`` (``ha1_md5``, or ``--passwords``),
times ``gateway check-config`` and the gateway's start-up, then runs sipp (pinned to
CPU 0; the gateway to CPU 1) through bench/sipp/register.xml: REGISTER, 401, REGISTER
with MD5 digest credentials, 200, once per account.  A second pass repeats it with the
same Call-IDs and higher CSeq numbers: a refresh of every binding.

Measures registrations/s (steady state), failures, retransmissions, REGISTER->200 time,
gateway CPU (% of one core) and RSS after each pass, and checks that the gateway holds N
bindings: its "SIP status: N registered binding(s)" log line (every 30 s, when counts
change) and its per-registration log lines (``registered`` / ``refreshed``).  That needs
``log_level = "info"``, the documented default, so the figures include that logging.

    .venv/bin/python bench/register_10k.py
    .venv/bin/python bench/register_10k.py --accounts 10000 --rate 1000 --limit 200

Every process it starts is killed on exit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    BENCH,
    PYTHON,
    ROOT,
    SIPP_DIR,
    Procs,
    Sampler,
    free_udp_ports,
    gateway_config,
    log_lines,
    machine_info,
    options_probe,
    read_sipp_stats,
    repartition_percentile,
    rss_kb,
    sipp_cmd,
    start_gateway,
    stat_duration_ms,
    stat_epoch,
    stat_int,
    udp_counters,
)

REALM = "gateway"
STATUS = re.compile(r"SIP status: (-?\d+) registered binding")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=10000)
    p.add_argument("--rate", type=int, default=1000, help="registrations/s sipp offers")
    p.add_argument("--limit", type=int, default=200,
                   help="most registrations in progress at once (sipp -l)")
    p.add_argument("--passes", type=int, default=2, help="1 = register only, 2 = + refresh")
    p.add_argument("--passwords", action="store_true",
                   help="accounts with password = ... instead of ha1_md5 = ...")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                   help="gateway log level; the binding-count line needs info")
    p.add_argument("--status-wait", type=float, default=45.0,
                   help="seconds to wait for the gateway's status line after a pass")
    p.add_argument("--keepalive-check", type=float, default=0.0, metavar="SECONDS",
                   help="turn on OPTIONS keepalives (every 30 s) and, after the passes, "
                   "answer them from the kiosks' contact address for SECONDS while timing "
                   "the gateway (CPU, how long it stops answering)")
    p.add_argument("--gw-cpu", type=int, default=1)
    p.add_argument("--sipp-cpu", type=int, default=0)
    p.add_argument("--gateway-src", type=Path, default=None,
                   help="run the gateway package of another checkout (before/after runs)")
    p.add_argument("--work", type=Path, default=None)
    p.add_argument("--json", type=Path, default=BENCH / "results" / "register_10k.json")
    p.add_argument("--label", default="")
    return p.parse_args()


def username(i: int) -> str:
    return f"kiosk-{i:05d}"


def password(i: int) -> str:
    return f"bench-pw-{i:05d}"


def write_files(work: Path, n: int, port: int, log_level: str, passwords: bool,
                keepalive: int = 0) -> tuple[Path, Path]:
    accounts = []
    for i in range(n):
        u, pw = username(i), password(i)
        if passwords:
            accounts.append(f'[[sip.accounts]]\nusername = "{u}"\npassword = "{pw}"\n')
        else:
            ha1 = hashlib.md5(f"{u}:{REALM}:{pw}".encode()).hexdigest()
            accounts.append(f'[[sip.accounts]]\nusername = "{u}"\nha1_md5 = "{ha1}"\n')
    extra = f"""realm = "{REALM}"

[sip.registrar]
algorithms = ["MD5"]   # sipp computes MD5 digests only
max_expires = 3600

""" + "\n".join(accounts)
    cfg = work / "gateway.toml"
    text = gateway_config(work, port, log_level, extra)
    if keepalive:
        text = text.replace("options_keepalive_seconds = 0",
                            f"options_keepalive_seconds = {keepalive}")
    cfg.write_text(text)
    users = work / "users.csv"
    users.write_text("SEQUENTIAL\n" + "".join(
        f"{username(i)};[authentication username={username(i)} password={password(i)}];\n"
        for i in range(n)))
    return cfg, users


def check_config(cfg: Path, src: Path | None) -> dict[str, Any]:
    t0 = time.monotonic()
    p = subprocess.run([PYTHON, "-m", "gateway", "check-config", str(cfg)],
                       capture_output=True, text=True, timeout=300, cwd=src or ROOT)
    return {"seconds": round(time.monotonic() - t0, 2), "rc": p.returncode,
            "output": (p.stdout + p.stderr).strip()[-300:]}


def wait_status(log: Path, want: int, since: int, limit: float) -> tuple[int | None, str]:
    """The last binding count the gateway logged after line ``since`` (waits for want)."""
    t0 = time.monotonic()
    last: tuple[int | None, str] = (None, "")
    while time.monotonic() - t0 < limit:
        for line in log_lines(log, since):
            m = STATUS.search(line)
            if m:
                last = (int(m.group(1)), line.strip())
        if last[0] == want:
            break
        time.sleep(1.0)
    return last


def run_pass(procs: Procs, args: argparse.Namespace, work: Path, n: int, users: Path,
             gw: subprocess.Popen[bytes], ports: dict[str, int], gw_log: Path,
             number: int) -> dict[str, Any]:
    pdir = work / f"pass{number}"
    pdir.mkdir(exist_ok=True)
    stat = pdir / "stat.csv"
    cseq1 = 2 * number - 1
    log_start = len(log_lines(gw_log))
    udp0 = udp_counters()
    argv = sipp_cmd(
        args.sipp_cpu, "-sf", str(SIPP_DIR / "register.xml"), f"127.0.0.1:{ports['gw']}",
        "-inf", str(users), "-key", "cseq1", str(cseq1), "-key", "cseq2", str(cseq1 + 1),
        "-cid_str", "reg-%u@%s",
        "-i", "127.0.0.1", "-p", str(ports["uac"]), "-mi", "127.0.0.1", "-ci", "127.0.0.1",
        "-cp", str(ports["uac_cp"]), "-r", str(args.rate), "-rp", "1000", "-m", str(n),
        "-l", str(args.limit), "-recv_timeout", "10000", "-nostdin", "-max_socket", "1000",
        "-trace_stat", "-stf", str(stat), "-fd", "1",
        "-trace_err", "-error_file", str(pdir / "errors.log"))
    uac = procs.start(argv, log=pdir / "screen.txt", cwd=pdir)
    sampler = Sampler([gw.pid, uac.pid], interval=0.5).start()
    t_start = time.monotonic()
    try:
        rc = uac.wait(timeout=n / max(1, args.rate) + 120)
    except subprocess.TimeoutExpired:
        procs.stop(uac)
        rc = None
    t_end = time.monotonic()
    time.sleep(1.0)
    sampler.stop()
    rows = read_sipp_stats(stat)
    last = rows[-1] if rows else {}
    ok = stat_int(last, "SuccessfulCall(C)")
    # Steady state: from 2 s after the start to 1 s before the last completion.
    achieved = None
    if rows:
        t0 = stat_epoch(rows[0], "StartTime")
        t_last = stat_epoch(last, "CurrentTime")
        window = [r for r in rows if t0 + 2 <= stat_epoch(r, "CurrentTime") <= t_last - 1]
        if len(window) >= 2:
            a, b = window[0], window[-1]
            dt = stat_epoch(b, "CurrentTime") - stat_epoch(a, "CurrentTime")
            if dt > 0:
                achieved = (stat_int(b, "SuccessfulCall(C)")
                            - stat_int(a, "SuccessfulCall(C)")) / dt
        overall = ok / (t_last - t0) if t_last > t0 else None
    else:
        overall = None
    new_log = log_lines(gw_log, log_start)
    events = {"registered": 0, "refreshed": 0}
    for line in new_log:
        for k in events:
            if f"] {k} kiosk-" in line:
                events[k] += 1
    udp1 = udp_counters()
    w0, w1 = t_start + 1.0, t_end - 0.5
    return {
        "pass": number, "kind": "register" if number == 1 else "refresh",
        "offered_rate": args.rate, "limit": args.limit, "registrations": n,
        "successful": ok, "failed": stat_int(last, "FailedCall(C)"),
        "retransmissions": stat_int(last, "Retransmissions(C)"),
        "achieved_per_s": round(achieved, 1) if achieved is not None else None,
        "overall_per_s": round(overall, 1) if overall else None,
        "register_to_200_ms_mean": round(stat_duration_ms(last, "ResponseTime1(C)"), 2),
        "register_to_200_ms_p50": repartition_percentile(last, "ResponseTimeRepartition1", .5),
        "register_to_200_ms_p99": repartition_percentile(last, "ResponseTimeRepartition1",
                                                         .99),
        "gw_cpu_pct": _r(sampler.cpu_percent(gw.pid, w0, w1)),
        "gw_cpu_peak_pct": _r(sampler.peak_cpu_percent(gw.pid, 2.0)),
        "gw_rss_mb": _mb(rss_kb(gw.pid)) if gw.poll() is None else None,
        "sipp_cpu_pct": _r(sampler.cpu_percent(uac.pid, w0, w1)),
        "udp_rcvbuf_errors": udp1.get("RcvbufErrors", 0) - udp0.get("RcvbufErrors", 0),
        "gw_log_events": events,
        "gw_log_warnings": sum(1 for ln in new_log if "#warn]" in ln or "#error]" in ln),
        "sipp_rc": rc, "wall_s": round(t_end - t_start, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


KEEPALIVE_INTERVAL = 30


def keepalive_check(args: argparse.Namespace, gw: subprocess.Popen[bytes],
                    ports: dict[str, int]) -> dict[str, Any]:
    """Answer the gateway's keepalive OPTIONS at the address every binding points to (the
    port sipp registered from) and measure what a keepalive round costs the gateway."""
    stop = threading.Event()
    answered = [0]
    call_ids: set[bytes] = set()
    rtts: list[tuple[float, float | None]] = []

    def responder() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        s.bind(("127.0.0.1", ports["uac"]))
        s.settimeout(0.2)
        try:
            while not stop.is_set():
                try:
                    data, addr = s.recvfrom(65535)
                except TimeoutError:
                    continue
                if not data.startswith(b"OPTIONS "):
                    continue
                head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
                keep = [h for h in head[1:] if h.split(b":", 1)[0].strip().lower()
                        in (b"via", b"from", b"to", b"call-id", b"cseq")]
                call_ids.update(h for h in keep if h.lower().startswith(b"call-id"))
                s.sendto(b"\r\n".join([b"SIP/2.0 200 OK", *keep, b"Content-Length: 0",
                                        b"", b""]), addr)
                answered[0] += 1
        finally:
            s.close()

    def prober() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            status = options_probe(ports["gw"], timeout=2.0)
            rtts.append((t0, time.monotonic() - t0 if status == 200 else None))
            stop.wait(0.1)

    threads = [threading.Thread(target=responder, daemon=True),
               threading.Thread(target=prober, daemon=True)]
    for t in threads:
        t.start()
    sampler = Sampler([gw.pid], interval=0.25).start()
    time.sleep(args.keepalive_check)
    stop.set()
    for t in threads:
        t.join(5)
    sampler.stop()
    ok_rtts = sorted(r for _, r in rtts if r is not None)
    series = sampler.series(gw.pid, 1.0)
    return {
        "interval_s": KEEPALIVE_INTERVAL, "observed_s": args.keepalive_check,
        "options_answered": answered[0],
        "options_distinct": len(call_ids),  # the rest are retransmissions (timer E)
        "probe_count": len(rtts), "probe_lost": sum(1 for _, r in rtts if r is None),
        "probe_rtt_ms_p50": round(1000 * ok_rtts[len(ok_rtts) // 2], 1) if ok_rtts else None,
        "probe_rtt_ms_max": round(1000 * ok_rtts[-1], 1) if ok_rtts else None,
        "gw_cpu_pct_mean": _r(sampler.cpu_percent(gw.pid, sampler.samples[0].t,
                                                  sampler.samples[-1].t)),
        "gw_cpu_series": [x[1] for x in series],
        "gw_rss_mb": _mb(rss_kb(gw.pid)),
    }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def main() -> int:
    args = parse_args()
    n = args.accounts
    work = args.work or Path(tempfile.mkdtemp(prefix="gw-reg-"))
    work.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    ports = dict(zip(("gw", "uac", "uac_cp"), free_udp_ports(3), strict=True))
    t0 = time.monotonic()
    cfg, users = write_files(work, n, ports["gw"], args.log_level, args.passwords,
                             KEEPALIVE_INTERVAL if args.keepalive_check else 0)
    results: dict[str, Any] = {
        "benchmark": "register_10k", "label": args.label, "machine": machine_info(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "work": str(work),
        "settings": {"accounts": n, "rate": args.rate, "limit": args.limit,
                     "credentials": "password" if args.passwords else "ha1_md5",
                     "algorithms": ["MD5"], "log_level": args.log_level,
                     "gw_cpu": args.gw_cpu, "sipp_cpu": args.sipp_cpu,
                     "gateway_src": str(args.gateway_src or ROOT)},
        "config_bytes": cfg.stat().st_size,
        "config_write_s": round(time.monotonic() - t0, 2),
        "passes": [],
    }
    ok = True
    try:
        results["check_config"] = check_config(cfg, args.gateway_src)
        print(f"check-config with {n} accounts: {results['check_config']['seconds']} s "
              f"(rc {results['check_config']['rc']})", flush=True)
        gw_log = work / "gateway.log"
        gw, startup = start_gateway(procs, cfg, gw_log, ports["gw"], args.gw_cpu,
                                    limit=300, src=args.gateway_src)
        time.sleep(1.0)
        results["gateway_startup_s"] = round(startup, 2)
        results["gw_rss_idle_mb"] = _mb(rss_kb(gw.pid))
        print(f"gateway ready in {startup:.2f} s, RSS {results['gw_rss_idle_mb']} MB",
              flush=True)
        for number in range(1, args.passes + 1):
            print(f"pass {number}: {n} registrations offered at {args.rate}/s ...", flush=True)
            since = len(log_lines(gw_log))
            r = run_pass(procs, args, work, n, users, gw, ports, gw_log, number)
            count, line = wait_status(gw_log, n, since, args.status_wait)
            r["gw_status_bindings"] = count
            r["gw_status_line"] = line
            r["gw_rss_after_mb"] = _mb(rss_kb(gw.pid)) if gw.poll() is None else None
            results["passes"].append(r)
            print(json.dumps({k: r[k] for k in (
                "kind", "successful", "failed", "retransmissions", "achieved_per_s",
                "overall_per_s", "register_to_200_ms_p99", "gw_cpu_pct", "gw_rss_after_mb",
                "gw_status_bindings", "gw_log_events")}), flush=True)
            ok = ok and r["failed"] == 0 and r["successful"] == n and count == n
            if gw.poll() is not None:
                ok = False
                break
        if args.keepalive_check and gw.poll() is None:
            print(f"keepalive check: answering OPTIONS on the kiosks' contact address for "
                  f"{args.keepalive_check:.0f} s ...", flush=True)
            results["keepalive"] = keepalive_check(args, gw, ports)
            print(json.dumps(results["keepalive"]), flush=True)
    finally:
        procs.stop_all()
        results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        results["ok"] = ok
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'pass':8} {'ok':>6} {'failed':>6} {'retrans':>7} {'reg/s':>7} {'p99_ms':>7} "
          f"{'gw_cpu%':>7} {'rss_MB':>7} {'bindings':>8}")
    for r in results["passes"]:
        print(f"{r['kind']:8} {r['successful']:6} {r['failed']:6} {r['retransmissions']:7} "
              f"{r['achieved_per_s']!s:>7} {r['register_to_200_ms_p99']!s:>7} "
              f"{r['gw_cpu_pct']!s:>7} {r['gw_rss_after_mb']!s:>7} "
              f"{r['gw_status_bindings']!s:>8}")
    print(f"check-config {results.get('check_config', {}).get('seconds')} s, start-up "
          f"{results.get('gateway_startup_s')} s, idle RSS {results.get('gw_rss_idle_mb')} MB"
          f"\nJSON: {args.json}  (logs: {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
