"""A baresip process driven over ctrl_tcp, with its log kept for assertions."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from .config import BaresipConfig
from .ctrl import BaresipCtrl, CtrlError


class Baresip:
    """``baresip -f DIR`` (with ``-s``: SIP trace in the log), stdin closed."""

    def __init__(self, binary: str, config: BaresipConfig, workdir: Path) -> None:
        self.config = config
        self.name = config.name
        self.dir = config.write(workdir / config.name)
        self.log_path = workdir / f"{config.name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, "-s", "-f", str(self.dir)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        try:
            self.ctrl = BaresipCtrl(config.ctrl_port, config.name, alive=self.alive)
        except CtrlError:
            self.stop()
            raise CtrlError(f"{self.name} did not start:\n{self.log()[-3000:]}") from None
        resp = self.ctrl.command("uanew", config.account_line().strip())
        if not resp.get("ok"):
            self.stop()
            raise CtrlError(f"{self.name}: uanew failed: {resp}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_bytes().decode("utf-8", "replace")

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Wait until the log holds ``text``; returns the whole log."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.log()
            if text in out:
                return out
            if time.monotonic() > deadline or not self.alive():
                raise AssertionError(f"{self.name} never logged {text!r}:\n{out[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Quit politely, then terminate, then kill: bounded, and only this process."""
        ctrl = getattr(self, "ctrl", None)
        if ctrl is not None and self.alive():
            try:
                ctrl.command("quit", timeout=1.0)
            except (CtrlError, OSError):
                pass
        for sig in ("wait", "terminate", "kill"):
            if sig == "terminate":
                self.proc.terminate()
            elif sig == "kill":
                self.proc.kill()
            try:
                self.proc.wait(timeout=2.0)
                break
            except subprocess.TimeoutExpired:
                continue
        if ctrl is not None:
            ctrl.close()
        self._log.close()
