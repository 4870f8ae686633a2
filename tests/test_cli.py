"""The ``gateway`` command and the twistd plugin, run as real subprocesses."""

from __future__ import annotations

import errno
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def gateway_cmd() -> list[str]:
    """The installed console script, as a user runs it; ``python -m gateway`` if absent."""
    script = BIN / "gateway"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*gateway_cmd(), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
        env=child_env(),
    )


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    """A loopback port that is free for both UDP and TCP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free loopback port")


class Proc:
    """A running process whose merged output is read line by line, with bounded waits."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.popen = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            stdin=subprocess.DEVNULL, env=child_env(),
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> str:
        """The first output line matching ``pattern``; fails with the output so far."""
        regex = re.compile(pattern)
        for line in self.lines:
            if regex.search(line):
                return line
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if item is None:
                break
            self.lines.append(item)
            if regex.search(item):
                return item
        pytest.fail(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.popen.send_signal(sig)
        code = self.popen.wait(timeout=STOP_TIMEOUT)
        self._thread.join(timeout=5)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started by a test, killed at the end whatever happened."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.kill()


def write_config(tmp_path: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\nnode_id = "test-node"\ndata_dir = "data"\n'
        f'[sip]\nlisten = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]\n{extra}',
        encoding="utf-8",
    )
    return path


def assert_udp_port_taken(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(OSError) as info:
            udp.bind(("127.0.0.1", port))
    assert info.value.errno == errno.EADDRINUSE


# --------------------------------------------------------------------- check-config, version


def test_check_config_accepts_the_example_files() -> None:
    for name in ("conf/gateway.toml", "conf/dev.toml", "docker/gateway.toml"):
        result = run("check-config", name)
        assert (result.returncode, result.stdout, result.stderr) == (0, f"{name}: ok\n", "")


def test_check_config_reports_problems_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[sip]\nrealm = "x"\nt1_ms = "fast"\n')
    result = run("check-config", "bad.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        'bad.toml:3: sip.t1_ms: expected a positive integer (milliseconds), got "fast"\n'
    )


def test_check_config_reports_toml_syntax_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[sip\n")
    result = run("check-config", "bad.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("bad.toml:1: TOML syntax error: ")


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = run("check-config", "nope.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "nope.toml: cannot read: No such file or directory\n"


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"gateway {version('gateway')} (Python ")
    module = subprocess.run([sys.executable, "-m", "gateway", "version"], capture_output=True,
                            text=True, timeout=60)
    assert module.stdout == result.stdout


def test_no_command_prints_usage() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage: gateway" in result.stderr
    assert "check-config" in result.stderr


def test_importing_the_package_leaves_the_reactor_alone() -> None:
    """Importing gateway modules must not pick a reactor (that is install_reactor's job)."""
    code = (
        "import sys, gateway, gateway.config, gateway.cli, gateway.reactor, gateway.app\n"
        "print('twisted.internet.reactor' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr


def test_install_reactor_is_idempotent_and_refuses_another_reactor() -> None:
    code = (
        "from gateway.reactor import install_reactor, ReactorError\n"
        "r = install_reactor()\n"
        "assert install_reactor() is r\n"
        "print(type(r).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout) == (0, "AsyncioSelectorReactor\n"), result.stderr
    code = (
        "from twisted.internet import reactor\n"
        "from gateway.reactor import install_reactor\n"
        "install_reactor()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "gateway.reactor.ReactorError: another Twisted reactor" in result.stderr


# --------------------------------------------------------------------- gateway run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_listens_and_stops_cleanly(tmp_path: Path, procs: list[Proc], sig: int) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    proc = Proc([*gateway_cmd(), "run", "--config", str(config)], cwd=tmp_path)
    procs.append(proc)
    proc.wait_for(r"gateway test-node .* starting \(config: .*gateway\.toml")
    ready = proc.wait_for(r"gateway test-node ready: SIP listening on ")
    assert f"udp:127.0.0.1:{port}" in ready and f"tcp:127.0.0.1:{port}" in ready
    assert_udp_port_taken(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    assert (tmp_path / "data" / "secret").exists()
    assert proc.stop(sig) == 0, "\n".join(proc.lines)
    assert any("gateway test-node stopped" in line for line in proc.lines)


def test_run_without_config_uses_embedded_defaults(tmp_path: Path, procs: list[Proc]) -> None:
    proc = Proc([*gateway_cmd(), "run"], cwd=tmp_path)
    procs.append(proc)
    proc.wait_for(r"starting \(config: embedded defaults, data: " + re.escape(str(tmp_path)))
    # 127.0.0.1:5060 may be in use on a developer machine: either outcome shows the defaults.
    line = proc.wait_for(r"ready: SIP listening on .*udp:127\.0\.0\.1:5060|start-up failed")
    expected = 0 if "ready" in line else 1
    assert proc.stop() == expected


def test_run_reports_a_port_in_use(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        proc = Proc([*gateway_cmd(), "run", "--config", str(write_config(tmp_path, port))],
                    cwd=tmp_path)
        procs.append(proc)
        proc.wait_for(r"start-up failed")
        assert proc.popen.wait(timeout=STOP_TIMEOUT) == 1


def test_run_reports_an_unusable_data_dir(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port()).read_text().replace(
        'data_dir = "data"', 'data_dir = "/proc/gateway-test"')
    (tmp_path / "gateway.toml").write_text(config)
    result = run("run", "--config", "gateway.toml", cwd=tmp_path)
    assert result.returncode == 1
    assert "start-up failed: [Errno 2] No such file or directory: '/proc/gateway-test'" in (
        result.stdout
    )


def test_run_refuses_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[sip]\nlisten = [\"udp:localhost:5060\"]\n")
    result = run("run", "--config", "bad.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("bad.toml:2: sip.listen[0]: expected ")


# --------------------------------------------------------------------- twistd plugin


def test_twistd_lists_the_plugin() -> None:
    result = subprocess.run([str(BIN / "twistd"), "--help"], capture_output=True, text=True,
                            timeout=60, cwd="/")
    assert re.search(r"^\s+gateway\s+Video-visitation gateway", result.stdout, re.MULTILINE), (
        result.stdout
    )


@pytest.mark.parametrize("reactor_args", [[], ["--reactor=asyncio"]])
def test_twistd_runs_the_same_service(
    tmp_path: Path, procs: list[Proc], reactor_args: list[str]
) -> None:
    port = free_port()
    config = write_config(tmp_path, port)
    argv = [str(BIN / "twistd"), "-n", "--pidfile=", *reactor_args, "gateway", "--config",
            str(config)]
    proc = Proc(argv, cwd=tmp_path)
    procs.append(proc)
    proc.wait_for(r"reactor class: twisted\.internet\.asyncioreactor\.AsyncioSelectorReactor")
    ready = proc.wait_for(r"gateway test-node ready: SIP listening on ")
    assert f"udp:127.0.0.1:{port}" in ready
    assert_udp_port_taken(port)
    # twistd ends a clean SIGTERM shutdown by re-raising the signal on itself.
    assert proc.stop() in (0, -signal.SIGTERM), "\n".join(proc.lines)
    assert any("gateway test-node stopped" in line for line in proc.lines)
    assert any("Server Shut Down." in line for line in proc.lines)


def test_twistd_refuses_another_reactor_and_bad_config(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port())
    twistd = str(BIN / "twistd")
    result = subprocess.run([twistd, "-n", "--pidfile=", "--reactor=poll", "gateway", "--config",
                             str(config)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 1
    assert "another Twisted reactor" in result.stdout
    (tmp_path / "bad.toml").write_text("[sip]\nt1_ms = 0\n")
    result = subprocess.run([twistd, "-n", "--pidfile=", "gateway", "--config", "bad.toml"],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert "bad.toml:2: sip.t1_ms: expected a positive integer (milliseconds), got 0" in (
        result.stdout
    )
