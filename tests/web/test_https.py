"""HTTPS and WSS with a self-signed certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

from web.helpers import (
    browser,
    http_client,
    http_url,
    issue,
    run,
    running,
    self_signed,
    web_config,
    ws_url,
)


def test_https_page_api_and_wss_join(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = web_config(tmp_path, f'certificate = "{cert}"\nprivate_key = "{key}"\n',
                        listen='["https:127.0.0.1:0", "http:127.0.0.1:0"]')
    trust = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        async with running(config) as srv:
            async with http_client(verify=trust) as client:
                r = await client.get(http_url(srv, "/", "https"))
                assert r.status_code == 200
                assert r.headers["strict-transport-security"].startswith("max-age=")
                assert (await client.get(http_url(srv, "/api/health", "https"))).json() == {
                    "status": "ok"}
            async with http_client(verify=ssl.create_default_context()) as client:
                try:
                    await client.get(http_url(srv, "/", "https"))
                except Exception as exc:  # an untrusted self-signed certificate is refused
                    assert "CERTIFICATE_VERIFY_FAILED" in repr(exc) or "verify" in str(exc)
                else:
                    raise AssertionError("the self-signed certificate was trusted")
            own = http_url(srv, "", "https")
            async with browser(ws_url(srv, "https"), ssl=trust, origin=own) as b:
                joined = await b.join(issue(srv, "secure-call"))
                assert joined["call_id"] == "secure-call"
            async with http_client() as client:  # the plain listener runs alongside
                assert (await client.get(http_url(srv, "/api/health"))).status_code == 200

    run(main())
