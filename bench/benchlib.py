"""Shared helpers for the SIP benchmarks in bench/ (not part of the gateway package).

Everything runs on 127.0.0.1: the gateway (``python -m gateway run``) pinned to one
CPU, sipp pinned to the other.  Every process started here is recorded and killed by
its pid on exit, normal or not (``Procs``).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SIPP_DIR = BENCH / "sipp"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SIPP = "/usr/bin/sipp"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


# -- processes ----------------------------------------------------------------------


class Procs:
    """Every child started by the benchmark; all are stopped by pid at exit."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        atexit.register(self.stop_all)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop_all()
        sys.exit(128 + signum)

    def start(self, argv: Sequence[str], log: Path | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        out: Any = subprocess.DEVNULL
        if log is not None:
            f = open(log, "wb")  # noqa: SIM115 - closed in stop_all
            self._files.append(f)
            out = f
        p = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                             stderr=subprocess.STDOUT, cwd=cwd)
        self.children.append(p)
        return p

    def stop(self, p: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            except ProcessLookupError:
                pass
        return p.returncode

    def stop_all(self) -> None:
        for p in reversed(self.children):
            self.stop(p)
        self.children.clear()
        for f in self._files:
            f.close()
        self._files.clear()


# -- ports ----------------------------------------------------------------------------


def free_udp_ports(n: int) -> list[int]:
    """n distinct free UDP ports on 127.0.0.1 (sockets held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# -- /proc sampling -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


@dataclass
class Sample:
    t: float
    cpu: dict[int, float]
    rss: dict[int, int]


@dataclass
class Sampler:
    """Samples CPU time and RSS of some pids every ``interval`` seconds in a thread."""

    pids: list[int]
    interval: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _take(self) -> None:
        cpu: dict[int, float] = {}
        rss: dict[int, int] = {}
        for pid in self.pids:
            try:
                cpu[pid] = cpu_seconds(pid)
                rss[pid] = rss_kb(pid)
            except (OSError, IndexError, ValueError):
                pass
        self.samples.append(Sample(time.monotonic(), cpu, rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._take()
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._take()

    def cpu_percent(self, pid: int, t0: float, t1: float) -> float | None:
        """CPU use of pid between the samples nearest t0 and t1, in % of one core."""
        pts = [s for s in self.samples if pid in s.cpu]
        if len(pts) < 2:
            return None
        a = min(pts, key=lambda s: abs(s.t - t0))
        b = min(pts, key=lambda s: abs(s.t - t1))
        if b.t - a.t < 0.2:
            return None
        return 100.0 * (b.cpu[pid] - a.cpu[pid]) / (b.t - a.t)

    def peak_cpu_percent(self, pid: int, window: float = 1.0) -> float | None:
        """Highest CPU % over any ~window-second span of samples."""
        pts = [s for s in self.samples if pid in s.cpu]
        best: float | None = None
        j = 0
        for i in range(len(pts)):
            while j + 1 < i and pts[i].t - pts[j + 1].t >= window:
                j += 1
            if pts[i].t - pts[j].t >= window:
                v = 100.0 * (pts[i].cpu[pid] - pts[j].cpu[pid]) / (pts[i].t - pts[j].t)
                best = v if best is None else max(best, v)
        return best

    def series(self, pid: int, step: float = 1.0) -> list[tuple[float, float, int]]:
        """(seconds since the first sample, CPU % over the last step, RSS kB) per step."""
        pts = [s for s in self.samples if pid in s.cpu]
        out: list[tuple[float, float, int]] = []
        if not pts:
            return out
        prev = pts[0]
        for s in pts[1:]:
            if s.t - prev.t >= step * 0.95:
                pct = 100.0 * (s.cpu[pid] - prev.cpu[pid]) / (s.t - prev.t)
                out.append((round(s.t - pts[0].t, 1), round(pct, 1), s.rss[pid]))
                prev = s
        return out

    def max_rss_kb(self, pid: int) -> int | None:
        vals = [s.rss[pid] for s in self.samples if pid in s.rss]
        return max(vals) if vals else None


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp): drops show up as RcvbufErrors."""
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
                 if ln.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=False)}
    except (OSError, IndexError, ValueError):
        return {}


# -- the gateway ----------------------------------------------------------------------


def options_probe(port: int, timeout: float = 0.5) -> int | None:
    """Send one OPTIONS to the gateway on 127.0.0.1:port; the response status or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        tag = os.urandom(4).hex()
        msg = (
            f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch=z9hG4bK{os.urandom(8).hex()};rport\r\n"
            f"From: <sip:probe@127.0.0.1:{lport}>;tag={tag}\r\n"
            f"To: <sip:probe@127.0.0.1:{port}>\r\n"
            f"Call-ID: probe-{tag}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.settimeout(timeout)
        s.sendto(msg.encode(), ("127.0.0.1", port))
        data, _ = s.recvfrom(65535)
        parts = data.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    except (TimeoutError, OSError):
        return None
    finally:
        s.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, limit: float) -> float:
    """Seconds until the gateway answers OPTIONS; raises if it dies or takes too long."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode} during start-up")
        if options_probe(port, 0.2) == 200:
            return time.monotonic() - t0
        time.sleep(0.05)
    raise RuntimeError(f"gateway did not answer OPTIONS within {limit:.0f} s")


def start_gateway(procs: Procs, config: Path, log: Path, port: int, cpu: int | None,
                  limit: float = 120.0, instrument: Sequence[str] = (),
                  src: Path | None = None) -> tuple[subprocess.Popen[bytes], float]:
    """``python -m gateway run``; with ``instrument``, through bench/gw_instrumented.py.

    ``src``: another checkout whose ``gateway`` package to run (``python -m`` puts the
    working directory first on sys.path), e.g. an unmodified tree for before/after.
    """
    argv = [PYTHON, "-m", "gateway", "run", "--config", str(config)]
    if instrument:
        argv = [PYTHON, str(BENCH / "gw_instrumented.py"), *instrument, "--", "run",
                "--config", str(config)]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    p = procs.start(argv, log=log, cwd=src or ROOT)
    return p, wait_ready(p, port, limit)


def gateway_config(work: Path, port: int, log_level: str, extra: str = "") -> str:
    return f"""# generated by bench/ for a benchmark run
[gateway]
node_id = "bench"
data_dir = "{work / 'data'}"
log_level = "{log_level}"
secret = "bench-only-secret-0123456789abcdef"

[sip]
listen = ["udp:127.0.0.1:{port}"]
public_host = "127.0.0.1"
options_keepalive_seconds = 0
{extra}"""


def log_lines(path: Path, start: int = 0) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[start:]
    except OSError:
        return []


# -- sipp -----------------------------------------------------------------------------


SIPP_BUFF = 4 * 1024 * 1024  # sipp's own socket buffers: keep its drops out of the figures


def sipp_cmd(cpu: int | None, *args: str) -> list[str]:
    argv = [SIPP, *args, "-buff_size", str(SIPP_BUFF)]
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv


def read_sipp_stats(path: Path) -> list[dict[str, str]]:
    """Rows of a sipp -trace_stat CSV (";"-separated, header first)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        return []
    head = lines[0].rstrip(";").split(";")
    return [dict(zip(head, ln.rstrip(";").split(";"), strict=False)) for ln in lines[1:]]


def stat_int(row: dict[str, str], key: str) -> int:
    v = row.get(key, "0").strip()
    return int(v) if v.isdigit() else 0


def stat_epoch(row: dict[str, str], key: str) -> float:
    """sipp writes times as "date<TAB>time<TAB>epoch"."""
    return float(row.get(key, "0").split("\t")[-1] or 0)


def stat_duration_ms(row: dict[str, str], key: str) -> float:
    """"hh:mm:ss:usec" -> milliseconds."""
    v = row.get(key, "")
    parts = v.split(":")
    if len(parts) != 4:
        return 0.0
    h, m, s, us = (int(x) for x in parts)
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def machine_info() -> dict[str, str]:
    def cmd(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    model = ""
    for line in cmd("lscpu").splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    sipp_ver = cmd(SIPP, "-v").strip().splitlines()
    return {
        "cpu_model": model,
        "cpus": str(os.cpu_count()),
        "memory": mem,
        "kernel": os.uname().release,
        "python": cmd(PYTHON, "--version").strip(),
        "sipp": sipp_ver[0].strip() if sipp_ver else "",
    }


def repartition_percentile(row: dict[str, str], prefix: str, q: float) -> str | None:
    """The bucket of a sipp ResponseTimeRepartition holding quantile q, e.g. "<5" (ms)."""
    buckets = [(k[len(prefix) + 1 :], stat_int(row, k)) for k in row
               if k.startswith(prefix + "_")]
    total = sum(n for _, n in buckets)
    if not total:
        return None
    seen = 0
    for label, n in buckets:
        seen += n
        if seen >= q * total:
            return label
    return buckets[-1][0]
