"""The gateway process and Chromium settings of the browser tests (fixtures: conftest.py)."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conftest import GatewayProcess
from playwright.sync_api import Page

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",  # a synthetic camera (moving picture) and mic (beeps)
    "--use-fake-ui-for-media-stream",  # no permission prompt
    "--allow-loopback-in-peer-connection",  # else no candidate at all on 127.0.0.1
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real addresses, not .local names
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
TOKEN_SECRET = "browser-tests-secret-0123456789"
LEFT_RE = re.compile(
    r"web: (?P<peer>\w+) left call (?P<call>\S+) \((?P<reason>[\w-]+)\); media "
    r"rx audio=(?P<rx_audio>\d+) video=(?P<rx_video>\d+) "
    r"tx audio=(?P<tx_audio>\d+) video=(?P<tx_video>\d+) packets; codecs (?P<codecs>.*)$")


def gateway_config(mode: str, workdir: Path) -> str:
    """[web] and [webrtc] on 127.0.0.1 (any free port), no STUN/TURN, one media mode."""
    return (
        f'[gateway]\nnode_id = "browser-{mode}"\ndata_dir = "{workdir / "data"}"\n'
        f'secret = "{TOKEN_SECRET}"\nlog_level = "info"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[web]\nlisten = ["http:127.0.0.1:0"]\nmedia_mode = "{mode}"\n'
        '[webrtc]\nhost_addresses = ["127.0.0.1"]\n'
    )


class BrowserGateway(GatewayProcess):
    """``gateway run`` like :class:`GatewayProcess`, run through ``prefix`` (nsenter)."""

    def __init__(self, config_text: str, workdir: Path, prefix: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.config = workdir / "gateway.toml"
        self.config.write_text(config_text)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir, env=env, text=True,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_for("web: listening on http://")
        match = re.search(r"listening on (http://[0-9.]+:\d+)", line)
        assert match is not None, line
        self.base_url = match.group(1)

    def token(self, call_id: str, ttl: int = 600) -> str:
        """``gateway token issue`` with the running gateway's configuration."""
        out = subprocess.run(
            [sys.executable, "-m", "gateway", "token", "issue", "--call-id", call_id,
             "--ttl", str(ttl), "--config", str(self.config)],
            cwd=self.workdir, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def left(self, call_id: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The leave lines of ``call_id`` (waits for one), with the counters as ints."""
        self.wait_for(f"left call {call_id} ", timeout)
        out: list[dict[str, Any]] = []
        for line in list(self.lines):
            m = LEFT_RE.search(line.rstrip())
            if m and m.group("call") == call_id:
                d: dict[str, Any] = m.groupdict()
                for k in ("rx_audio", "rx_video", "tx_audio", "tx_video"):
                    d[k] = int(d[k])
                d["codecs"] = dict(kv.split("=", 1) for kv in d["codecs"].split())
                out.append(d)
        return out

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.lines))


def wait_until(page: Page, check: Callable[[], Any], what: str, timeout: float = 15.0,
               every: float = 0.2) -> Any:
    """Poll ``check()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        page.wait_for_timeout(every * 1000)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}; page state: "
                         f"{page.evaluate('window.gwCall && window.gwCall.state()')}")
