"""Browser-side WebRTC benchmarks of the gateway (not a test; results go to docs/benchmarks.md).

Two measurements, both against a real ``gateway run`` in echo mode on 127.0.0.1:

``first-frame``
    Headless Chromium (Debian's /usr/bin/chromium through Playwright) opens the call page
    with a fresh token, presses "Join the visit" and waits for the first decoded frame
    of the echoed video (``requestVideoFrameCallback`` on the remote <video>).  Reported
    per join: click -> join sent (camera and microphone), join sent -> peer connection
    connected (signalling, ICE, DTLS), connected -> first frame, and the total.

``echo-cpu``
    N concurrent echo calls from aiortc peers that send PRE-ENCODED VP8 640x360 (about
    600 kbit/s, 25 fps) and Opus (``MediaPlayer(decode=False)``) and drop what comes back
    before decoding, so the generator does no codec work.  The gateway process is pinned
    to CPU 1, the generator to CPU 0; the gateway's CPU (utime+stime from /proc) is
    measured over a steady window after every call is connected.

Run as root it re-executes itself inside ``unshare -n`` (a private network namespace
where 127.0.0.1 is the only address); otherwise on the host's loopback.  Every child
is stopped by its pid.  Examples::

    .venv/bin/python bench/webrtc_browser.py first-frame --joins 10
    .venv/bin/python bench/webrtc_browser.py echo-cpu --calls 0 1 5 10 20 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import platform
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Timestamps the page does not keep by itself, recorded by an init script (bench only).
PAGE_PROBE = """
window.__bench = {};
(() => {
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (!window.__bench.join && String(data).includes('"type":"join"')) {
      window.__bench.join = performance.now();
    }
    return send.call(this, data);
  };
  const PC = window.RTCPeerConnection;
  window.RTCPeerConnection = function (...args) {
    const pc = new PC(...args);
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected' && !window.__bench.connected) {
        window.__bench.connected = performance.now();
      }
    });
    return pc;
  };
  window.RTCPeerConnection.prototype = PC.prototype;
  document.addEventListener('click', (ev) => {
    if (ev.target && ev.target.id === 'join') {
      window.__bench.click = performance.now();
      const v = document.getElementById('remote');
      const seen = () => { if (!window.__bench.frame) window.__bench.frame = performance.now(); };
      if (v.requestVideoFrameCallback) v.requestVideoFrameCallback(seen);
      else v.addEventListener('loadeddata', seen, { once: true });
    }
  }, true);
})();
"""

# lo up in a fresh namespace without iproute2 (SIOCGIFFLAGS / SIOCSIFFLAGS)
_LO_UP = (
    "import fcntl, socket, struct\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "req = struct.pack('16sH22x', b'lo', 0)\n"
    "flags = struct.unpack('16sH22x', fcntl.ioctl(s, 0x8913, req))[1]\n"
    "fcntl.ioctl(s, 0x8914, struct.pack('16sH22x', b'lo', flags | 1))\n"
)


# ------------------------------------------------------------------ environment


def enter_netns() -> str:
    """Re-exec inside ``unshare -n`` when root; returns where we run."""
    if os.environ.get("GW_BENCH_NETNS") == "1":
        subprocess.run([PYTHON, "-c", _LO_UP], check=True)
        return "private network namespace (unshare -n), 127.0.0.1 only"
    if os.geteuid() == 0 and shutil.which("unshare"):
        env = dict(os.environ, GW_BENCH_NETNS="1")
        os.execvpe("unshare", ["unshare", "-n", PYTHON, *sys.argv], env)
    return "host network namespace, 127.0.0.1"


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        mem = "0"
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.strip() if Path(CHROMIUM).exists() else ""
    return {"cpu": model, "cpus": str(os.cpu_count()), "memory": f"{int(mem) // 1024} MiB",
            "kernel": platform.release(), "python": platform.python_version(),
            "chromium": chromium}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Gateway:
    """``gateway run`` (echo mode, 127.0.0.1, any free ports), optionally on one CPU."""

    def __init__(self, work: Path, cpu: int | None, log_level: str = "info") -> None:
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.config = work / "gateway.toml"
        self.config.write_text(
            f'[gateway]\nnode_id = "bench"\ndata_dir = "{work / "data"}"\n'
            f'secret = "bench-secret-0123456789abcdef"\nlog_level = "{log_level}"\n'
            '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
            '[web]\nlisten = ["http:127.0.0.1:0"]\nmedia_mode = "echo"\n'
            'join_failure_limit = 0\n'
            '[webrtc]\nhost_addresses = ["127.0.0.1"]\n')
        argv = [PYTHON, "-m", "gateway", "run", "--config", str(self.config)]
        if cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(cpu), *argv]
        self.log = open(work / "gateway.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=work, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.url = self._wait_url()

    def _wait_url(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = (self.work / "gateway.log").read_text()
            m = re.search(r"web: listening on (http://[0-9.]+:\d+)", text)
            if m and "ready" in text:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("the gateway did not start:\n" + (self.work / "gateway.log").read_text())

    def token(self, call_id: str) -> str:
        return subprocess.run(
            [PYTHON, "-m", "gateway", "token", "issue", "--call-id", call_id, "--config",
             str(self.config)], capture_output=True, text=True, check=True).stdout.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def pctl(values: Sequence[float], q: float) -> float:
    xs = sorted(values)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


# ------------------------------------------------------------------ first-frame


async def first_frame(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    gw = Gateway(work, cpu=None)
    rows: list[dict[str, float]] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                               args=CHROMIUM_ARGS)
            for i in range(args.joins + 1):  # the first join warms the browser up, not counted
                context = await browser.new_context(viewport={"width": 1280, "height": 720})
                await context.add_init_script(PAGE_PROBE)
                page = await context.new_page()
                await page.goto(f"{gw.url}/#token={gw.token(f'bench-{i}')}")
                await page.wait_for_selector("#join")
                await page.click("#join")
                await page.wait_for_function("() => !!window.__bench.frame", timeout=20000)
                t = await page.evaluate("window.__bench")
                await page.click("#hangup")
                await context.close()
                if i == 0:
                    continue
                rows.append({
                    "media_ms": t["join"] - t["click"],
                    "connect_ms": t["connected"] - t["join"],
                    "frame_ms": t["frame"] - t["connected"],
                    "join_to_frame_ms": t["frame"] - t["join"],
                    "total_ms": t["frame"] - t["click"],
                })
            version = browser.version
            await browser.close()
    finally:
        gw.stop()
    summary = {k: {"p50": round(statistics.median(r[k] for r in rows), 1),
                   "max": round(max(r[k] for r in rows), 1)} for k in rows[0]}
    return {"joins": len(rows), "browser": version, "summary": summary,
            "rows": [{k: round(v, 1) for k, v in r.items()} for r in rows]}


# ------------------------------------------------------------------ echo-cpu


def make_media(work: Path, seconds: int) -> tuple[Path, Path]:
    """VP8 640x360 25 fps (about 450 kbit/s) in a WebM file and Opus 48 kHz mono (20 ms
    frames, 32 kbit/s) in an Ogg file, encoded once with PyAV.  Two files, two players:
    aiortc paces one player's tracks by the container, which starved the audio."""
    import math
    import struct

    import av

    video_path, audio_path = work / "video.webm", work / "audio.ogg"
    with av.open(str(video_path), "w", format="webm") as out:
        v = out.add_stream("libvpx", rate=25)
        v.width, v.height, v.pix_fmt = 640, 360, "yuv420p"
        v.bit_rate = 600_000
        v.options = {"deadline": "realtime", "cpu-used": "8", "g": "50"}
        for n in range(seconds * 25):  # moving gradients and a bar: every frame differs
            frame = av.VideoFrame(640, 360, "yuv420p")
            y = frame.planes[0]
            row = bytes(((x + 4 * n) & 0xFF) for x in range(y.line_size))
            bar = bytes(255 if (x - 8 * n) % 640 < 60 else ((x + 4 * n) & 0xFF)
                        for x in range(y.line_size))
            y.update(b"".join(bar if (r + n) % 90 < 20 else row for r in range(y.height)))
            for k, plane in enumerate(frame.planes[1:]):
                plane.update(bytes([(100 + 60 * k + 2 * n) & 0xFF]) * plane.buffer_size)
            frame.pts = n
            for packet in v.encode(frame):
                out.mux(packet)
        for packet in v.encode():
            out.mux(packet)
    with av.open(str(audio_path), "w", format="ogg") as out:
        a = out.add_stream("libopus", rate=48000)
        a.layout = "mono"
        a.bit_rate = 32000
        samples = 960
        for n in range(seconds * 50):
            pcm = b"".join(struct.pack("<h", int(9000 * math.sin(
                2 * math.pi * 440 * (i + n * samples) / 48000))) for i in range(samples))
            sound = av.AudioFrame(format="s16", layout="mono", samples=samples)
            sound.planes[0].update(pcm)
            sound.sample_rate = 48000
            sound.pts = n * samples
            sound.time_base = fractions.Fraction(1, 48000)
            for packet in a.encode(sound):
                out.mux(packet)
        for packet in a.encode():
            out.mux(packet)
    return video_path, audio_path


class DropQueue(queue.Queue):  # type: ignore[type-arg]
    """Replaces aiortc's receiver decoder queue: echoed frames are counted, not decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:  # the receiver's shutdown sentinel
            super().put(item, block, timeout)
        else:
            self.frames += 1


async def echo_call(i: int, url: str, token: str, media: tuple[Path, Path],
                    stop: asyncio.Event, results: list[dict[str, Any]]) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer
    from websockets.asyncio.client import connect

    r: dict[str, Any] = {"i": i}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = MediaPlayer(str(media[0]), decode=False, loop=True).video
    audio = MediaPlayer(str(media[1]), decode=False, loop=True).audio
    try:
        assert audio is not None and video is not None
        pc.addTrack(audio)
        pc.addTrack(video)
        for t in pc.getTransceivers():
            t.receiver._RTCRtpReceiver__decoder_queue = DropQueue()  # type: ignore[attr-defined]
        ws_url = url.replace("http://", "ws://") + "/ws"
        async with connect(ws_url, max_size=2**20) as ws:
            await ws.send(json.dumps({"type": "join", "token": token}))
            joined = json.loads(await ws.recv())
            assert joined["type"] == "joined", joined
            await pc.setLocalDescription(await pc.createOffer())
            t0 = time.perf_counter()
            await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] == "answer":
                    break
            r["answer_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
            deadline = time.perf_counter() + 15
            while pc.connectionState != "connected" and time.perf_counter() < deadline:
                await asyncio.sleep(0.02)
            r["connect_ms"] = round((time.perf_counter() - t0) * 1000, 1)
            r["state"] = pc.connectionState
            results.append(r)
            t_up = time.perf_counter()
            await stop.wait()
            r["seconds"] = time.perf_counter() - t_up
            stats = await pc.getStats()
            for s in stats.values():
                if s.type == "inbound-rtp":
                    r[f"in_{s.kind}"] = s.packetsReceived
                    r[f"lost_{s.kind}"] = s.packetsLost
                elif s.type == "outbound-rtp":
                    r[f"out_{s.kind}"] = s.packetsSent
            await ws.send(json.dumps({"type": "hangup"}))
    except Exception as exc:  # reported, the run goes on
        r["error"] = repr(exc)[:200]
        if r not in results:
            results.append(r)
    finally:
        for track in (audio, video):
            if track is not None:
                track.stop()
        await pc.close()


async def echo_cpu_one(n: int, args: argparse.Namespace, work: Path,
                       media: tuple[Path, Path]) -> dict[str, Any]:
    gw = Gateway(work / f"gw-{n}", cpu=1 if (os.cpu_count() or 1) > 1 else None)
    try:
        tokens = [gw.token(f"load-{n}-{i}") for i in range(n)]
        results: list[dict[str, Any]] = []
        stop = asyncio.Event()
        tasks = [asyncio.ensure_future(echo_call(i, gw.url, tokens[i], media, stop, results))
                 for i in range(n)]
        deadline = time.monotonic() + 30
        while len(results) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.warmup)
        c0, t0 = cpu_seconds(gw.proc.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        c1, t1 = cpu_seconds(gw.proc.pid), time.monotonic()
        rss = rss_mb(gw.proc.pid)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
    finally:
        gw.stop()
    connected = [r for r in results if r.get("state") == "connected"]
    out: dict[str, Any] = {
        "calls": n, "connected": len(connected),
        "gateway_cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 2),
        "gateway_rss_mb": round(rss, 1),
        "errors": [r["error"] for r in results if "error" in r][:3],
    }
    if connected:
        out["answer_ms_p50"] = round(statistics.median(r["answer_ms"] for r in connected), 1)
        out["connect_ms_p50"] = round(statistics.median(r["connect_ms"] for r in connected), 1)
        out["connect_ms_max"] = round(max(r["connect_ms"] for r in connected), 1)
        for k in ("in_video", "out_video", "lost_video", "in_audio", "lost_audio"):
            out[k] = sum(r.get(k, 0) for r in connected)
        # packets/s the gateway received from each peer (and echoed back), per kind
        secs = sum(r.get("seconds", 0.0) for r in connected) or 1.0
        out["pps_per_call_in"] = {k: round(sum(r.get(f"out_{k}", 0) for r in connected) / secs)
                                  for k in ("audio", "video")}
    return out


async def echo_cpu(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import aioice.ice

    # aioice skips loopback when listing host addresses; the peers live on 127.0.0.1.
    aioice.ice.get_host_addresses = (
        lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else [])
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # the generator on CPU 0, the gateway on CPU 1
    media = make_media(work, 30)
    runs = []
    for n in args.calls:
        run = await echo_cpu_one(n, args, work, media)
        print(json.dumps(run), flush=True)
        runs.append(run)
    base = next((r["gateway_cpu_pct"] for r in runs if r["calls"] == 0), None)
    loaded = [r for r in runs if r["calls"] > 0]
    per_leg: float | None = None
    if len(loaded) >= 2:  # least squares slope of CPU over calls
        xs = [float(r["calls"]) for r in loaded]
        ys = [float(r["gateway_cpu_pct"]) for r in loaded]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        per_leg = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs)
    return {"idle_cpu_pct": base, "per_leg_cpu_pct": None if per_leg is None
            else round(per_leg, 2), "runs": runs}


# ------------------------------------------------------------------ main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", type=Path, help="also write the result here")
    sub = p.add_subparsers(dest="what", required=True)
    ff = sub.add_parser("first-frame", parents=[common],
                        help="join -> first decoded frame in Chromium")
    ff.add_argument("--joins", type=int, default=10)
    ec = sub.add_parser("echo-cpu", parents=[common],
                        help="gateway CPU per echo call (aiortc peers)")
    ec.add_argument("--calls", type=int, nargs="+", default=[0, 1, 5, 10, 20])
    ec.add_argument("--seconds", type=float, default=20.0, help="measured window")
    ec.add_argument("--warmup", type=float, default=3.0)
    args = p.parse_args()
    where = enter_netns()
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
        if args.what == "first-frame":
            result = asyncio.run(first_frame(args, work))
        else:
            result = asyncio.run(echo_cpu(args, work))
    result = {"machine": machine(), "network": where,
              "command": " ".join(["bench/webrtc_browser.py", *sys.argv[1:]]), **result}
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
