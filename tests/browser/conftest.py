"""Headless Chromium against the real ``gateway run`` process, over 127.0.0.1 only.

* The browser is Debian's ``/usr/bin/chromium`` driven by Playwright (the pip package
  only; ``playwright install`` is never run).  Missing, it fails the tests.
* The gateway and Chromium run in a private network namespace (``unshare --net``,
  entered with ``nsenter``) whose only interface is ``lo``: 127.0.0.1 is the only
  address there, so every packet stays on loopback and no port can clash with other
  tests.  Without root (no namespaces) both run in the host namespace, which also
  works: the gateway's [webrtc] host address is 127.0.0.1 either way and no STUN or
  TURN server is configured.
* Playwright talks to Chromium over pipes and the test reads the gateway's log, so
  the test process itself needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from browser.helpers import CHROMIUM_ARGS, BrowserGateway, gateway_config
from conftest import require_binary
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

# Brings lo up inside a new namespace without needing iproute2 (SIOCGIFFLAGS/SIOCSIFFLAGS).
_LO_UP = (
    "import fcntl, socket, struct\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "req = struct.pack('16sH22x', b'lo', 0)\n"
    "flags = struct.unpack('16sH22x', fcntl.ioctl(s, 0x8913, req))[1]\n"
    "fcntl.ioctl(s, 0x8914, struct.pack('16sH22x', b'lo', flags | 1))\n"
)


@pytest.fixture(scope="session")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A command prefix that runs a program in the private namespace ([] = host's).

    ``GATEWAY_BROWSER_NETNS=0`` runs everything in the host namespace instead.
    """
    if (os.environ.get("GATEWAY_BROWSER_NETNS") == "0" or os.geteuid() != 0
            or not (shutil.which("unshare") and shutil.which("nsenter"))):
        yield []
        return
    path = tmp_path_factory.mktemp("netns") / "net"
    path.touch()
    made = subprocess.run(["unshare", f"--net={path}", "true"], capture_output=True,
                          text=True)
    if made.returncode != 0:  # e.g. a container without CAP_SYS_ADMIN
        sys.stderr.write("browser tests: no private network namespace "
                         f"({made.stderr.strip()}); using the host's loopback\n")
        yield []
        return
    prefix = ["nsenter", f"--net={path}"]
    try:
        subprocess.run([*prefix, sys.executable, "-c", _LO_UP], check=True, timeout=10)
        yield prefix
    finally:
        subprocess.run(["umount", str(path)], capture_output=True)


def _start_gateway(mode: str, factory: pytest.TempPathFactory,
                   prefix: list[str]) -> Iterator[BrowserGateway]:
    workdir = factory.mktemp(f"gw-{mode}")
    gw = BrowserGateway(gateway_config(mode, workdir), workdir, prefix)
    try:
        yield gw
    finally:
        code = gw.stop()
    assert code == 0, gw.output()[-3000:]
    assert "Traceback" not in gw.output(), gw.output()[-5000:]


@pytest.fixture(scope="module")
def echo_gateway(tmp_path_factory: pytest.TempPathFactory,
                 netns: list[str]) -> Iterator[BrowserGateway]:
    yield from _start_gateway("echo", tmp_path_factory, netns)


@pytest.fixture(scope="module")
def pattern_gateway(tmp_path_factory: pytest.TempPathFactory,
                    netns: list[str]) -> Iterator[BrowserGateway]:
    yield from _start_gateway("test-pattern", tmp_path_factory, netns)


@pytest.fixture(scope="session")
def chromium_path(tmp_path_factory: pytest.TempPathFactory, netns: list[str]) -> str:
    real = require_binary("chromium")  # missing: the tests FAIL, they never skip
    if not netns:
        return real
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(netns)} {real} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Module scope, not session: the sync API keeps an asyncio loop running in this
    # thread while it is open, and every later asyncio.run() would fail.
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium_path: str) -> Iterator[Browser]:
    # launch() gives every browser a fresh temporary user-data-dir.
    b = playwright.chromium.launch(executable_path=chromium_path, headless=True,
                                   args=CHROMIUM_ARGS)
    yield b
    b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
