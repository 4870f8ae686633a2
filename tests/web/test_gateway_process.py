"""The real ``gateway run`` process with a [web] table, and ``gateway token issue``."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import GatewayProcess, free_port
from web.helpers import browser, http_client, run

GwFactory = Callable[[str], GatewayProcess]
OFFER = "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


def config(sip_port: int, web_port: int) -> str:
    return (
        '[gateway]\nnode_id = "web-test"\ndata_dir = "data"\n'
        f'[sip]\nlisten = ["udp:127.0.0.1:{sip_port}"]\n'
        f'[web]\nlisten = ["http:127.0.0.1:{web_port}"]\n'
    )


def gateway(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=30)


def test_join_a_running_gateway_with_a_cli_token(gateway_factory: GwFactory,
                                                 tmp_path: Path) -> None:
    web_port = free_port((socket.SOCK_STREAM,))
    gw = gateway_factory(config(free_port(), web_port))
    gw.wait_for(f"web: listening on http://127.0.0.1:{web_port}")
    # the same config, hence the same data_dir/secret as the running gateway
    issued = gateway("token", "issue", "--call-id", "visit-1", "--ttl", "600",
                     "--config", str(gw.config), cwd=tmp_path)
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    url = f"ws://127.0.0.1:{web_port}/ws"

    async def main() -> None:
        async with http_client() as client:
            r = await client.get(f"http://127.0.0.1:{web_port}/api/openapi.json")
            assert "/api/admin/tokens" in r.json()["paths"]
        async with browser(url) as b:
            await b.send({"type": "join", "token": token, "call_id": "other"})
            assert (await b.closed())[0] == 4403
        async with browser(url) as b:
            joined = await b.join(token, call_id="visit-1")
            assert joined["call_id"] == "visit-1"
            assert joined["ice_servers"] == []  # no STUN/TURN unless configured
            await b.send({"type": "offer", "sdp": OFFER})
            # the real media endpoint is wired in: it refuses an offer without media
            assert (await b.expect("error"))["code"] == "invalid_sdp"
            await b.send({"type": "ping"})
            await b.expect("pong")
            # SIGTERM: Twisted stops the services; the web one closes us with 1001
            stopping = asyncio.get_running_loop().run_in_executor(None, gw.stop)
            assert (await b.closed(timeout=10))[0] == 1001
            assert await stopping == 0

    run(main(), timeout=30)
    gw.wait_for("gateway web-test stopped")
    assert "Traceback" not in gw.output()


def test_a_taken_web_port_fails_start_up_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gw = GatewayProcess(config(free_port(), port), tmp_path)
        try:
            gw.wait_for("start-up failed")
            assert gw.proc.wait(timeout=15) == 1
        finally:
            gw.stop()
    assert f"web: cannot listen on http:127.0.0.1:{port}" in gw.output()
    assert "Traceback" not in gw.output()


def test_token_issue_refuses_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "g.toml").write_text('[gateway]\nsecret = "0123456789abcdef"\n')
    bad_id = gateway("token", "issue", "--call-id", "no spaces", "--config", "g.toml",
                     cwd=tmp_path)
    assert bad_id.returncode == 2 and "invalid call id" in bad_id.stderr
    bad_ttl = gateway("token", "issue", "--call-id", "c", "--ttl", "0", "--config", "g.toml",
                      cwd=tmp_path)
    assert bad_ttl.returncode == 2 and "ttl must be" in bad_ttl.stderr
    missing = gateway("token", "issue", cwd=tmp_path)
    assert missing.returncode == 2 and "--call-id" in missing.stderr
