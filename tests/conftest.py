"""Shared fixtures: a real gateway process on loopback, free ports, peer binaries."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORTURE = (ROOT.parent / "shared" / "sip-torture")


def free_port(kinds: tuple[int, ...] = (socket.SOCK_DGRAM, socket.SOCK_STREAM)) -> int:
    """A loopback port free for every socket kind asked for."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kinds[0]) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for kind in kinds[1:]:
            with socket.socket(socket.AF_INET, kind) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port")


def require_binary(name: str) -> str:
    """Tests against real peers fail (never skip) when the peer is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs the test peers")
    return path


class GatewayProcess:
    """``gateway run`` in a subprocess, its output collected line by line."""

    def __init__(self, config_text: str, workdir: Path) -> None:
        self.workdir = workdir
        self.config = workdir / "gateway.toml"
        self.config.write_text(config_text)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir, env=env,
            text=True,
        )
        self.lines: list[str] = []
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._q.put(line)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        for line in list(self.lines):
            if text in line:
                return line
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if text in line:
                return line
            if self.proc.poll() is not None and self._q.empty():
                break
        raise AssertionError(f"gateway never logged {text!r}; output:\n{self.output()}")

    def output(self) -> str:
        return "".join(self.lines)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[[str], GatewayProcess]]:
    procs: list[GatewayProcess] = []

    def start(config_text: str) -> GatewayProcess:
        gw = GatewayProcess(config_text, tmp_path)
        procs.append(gw)
        gw.wait_for("SIP listening")
        return gw

    yield start
    for gw in procs:
        gw.stop()
