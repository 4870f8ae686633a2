"""The HTTP side: OpenAPI document, admin token API and its errors, page and headers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from web.helpers import ADMIN_KEY, SECRET, http_client, http_url, run, running, web_config

from gateway.web.tokens import JoinTokens

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def call(tmp_path: Path, method: str, path: str, *, admin_key: str | None = ADMIN_KEY,
         **kw: Any) -> tuple[int, dict[str, str], Any]:
    """One request against a fresh server: (status, headers, JSON or text body)."""
    async def main() -> tuple[int, dict[str, str], Any]:
        async with running(web_config(tmp_path, admin_key=admin_key)) as srv, \
                http_client() as client:
            r = await client.request(method, http_url(srv, path), **kw)
            is_json = r.headers.get("content-type", "").startswith("application/json")
            return r.status_code, dict(r.headers), r.json() if is_json else r.text
    return run(main())


def test_openapi_document_lists_the_endpoints(tmp_path: Path) -> None:
    status, _, doc = call(tmp_path, "GET", "/api/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {"/api/health", "/api/admin/tokens"}
    post = doc["paths"]["/api/admin/tokens"]["post"]
    assert {"201", "401", "403", "422"} <= set(post["responses"])
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorBody")
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    ttl = doc["components"]["schemas"]["TokenRequest"]["properties"]["ttl"]["anyOf"][0]
    assert (ttl["type"], ttl["minimum"], ttl["maximum"]) == ("integer", 1, 86400)
    assert doc["components"]["securitySchemes"]["adminKey"]["scheme"] == "bearer"


def test_admin_issues_a_token_that_verifies(tmp_path: Path) -> None:
    before = time.time()
    status, headers, body = call(tmp_path, "POST", "/api/admin/tokens", headers=AUTH,
                                 json={"call_id": "visit-9", "ttl": 120})
    assert status == 201, body
    assert (body["call_id"], body["role"], body["ttl"]) == ("visit-9", "family", 120)
    claims = JoinTokens(SECRET.encode()).verify(body["token"], now=time.time(),
                                                call_id="visit-9")
    assert before + 119 <= claims.expires_at <= time.time() + 121
    assert body["expires_at"].endswith("Z")
    assert headers["cache-control"] == "no-store"


def test_admin_default_ttl_comes_from_config(tmp_path: Path) -> None:
    _, _, body = call(tmp_path, "POST", "/api/admin/tokens", headers=AUTH,
                      json={"call_id": "c"})
    assert body["ttl"] == 600


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-key-wrong-key"}, {"Authorization": f"Basic {ADMIN_KEY}"},
    {"Authorization": ADMIN_KEY},
])
def test_admin_refuses_without_the_key(tmp_path: Path, headers: dict[str, str]) -> None:
    status, got, body = call(tmp_path, "POST", "/api/admin/tokens", headers=headers,
                             json={"call_id": "c"})
    assert status == 401
    assert body["error"] == "unauthorized" and "Bearer" in body["message"]
    assert got["www-authenticate"] == "Bearer"


def test_admin_refuses_before_validating_the_body(tmp_path: Path) -> None:
    status, _, body = call(tmp_path, "POST", "/api/admin/tokens", json={})
    assert (status, body["error"]) == (401, "unauthorized")


def test_admin_api_is_off_without_an_admin_key(tmp_path: Path) -> None:
    status, _, body = call(tmp_path, "POST", "/api/admin/tokens", admin_key=None,
                           headers=AUTH, json={"call_id": "c"})
    assert (status, body["error"]) == (403, "admin_disabled")


@pytest.mark.parametrize(("kw", "field", "text"), [
    ({"json": {}}, "call_id", "call_id: Field required"),
    ({"json": {"call_id": "has spaces"}}, "call_id", "call_id: String should match pattern"),
    ({"json": {"call_id": 7}}, "call_id", "call_id: Input should be a valid string"),
    ({"json": {"call_id": "c", "ttl": 0}}, "ttl", "ttl: Input should be greater than"),
    ({"json": {"call_id": "c", "ttl": True}}, "ttl", "ttl: Input should be a valid integer"),
    ({"json": {"call_id": "c", "ttl": "60"}}, "ttl", "ttl: Input should be a valid integer"),
    ({"json": {"call_id": "c", "ttl": 86401}}, "ttl", "ttl: Input should be less than"),
    ({"json": {"call_id": "c", "role": "staff"}}, "role", "role: Input should be 'family'"),
    ({"json": {"call_id": "c", "colour": "red"}}, "colour", "colour: Extra inputs"),
    ({"content": b"{nope", "headers": {"content-type": "application/json"}}, "body",
     "not valid JSON"),
    ({"content": b"\xff\x16", "headers": {"content-type": "application/json"}}, "body",
     "not valid JSON"),
    ({}, "body", "a JSON object body is required"),
])
def test_bad_input_gets_422_naming_the_field(tmp_path: Path, kw: dict[str, Any], field: str,
                                             text: str) -> None:
    headers = {**AUTH, **kw.pop("headers", {})}
    status, _, body = call(tmp_path, "POST", "/api/admin/tokens", headers=headers, **kw)
    assert status == 422
    assert body["error"] == "invalid_request" and body["field"] == field
    assert text in body["message"]


def test_page_is_served_with_security_headers(tmp_path: Path) -> None:
    status, headers, text = call(tmp_path, "GET", "/")
    assert status == 200 and "<title>Video visit</title>" in text
    csp = headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "strict-transport-security" not in headers  # plain http: HSTS means nothing
    assert "server" not in headers
    status, headers, _ = call(tmp_path, "GET", "/static/call.css")
    assert status == 200 and headers["content-type"].startswith("text/css")


def test_unknown_paths_and_methods_get_json_errors(tmp_path: Path) -> None:
    status, headers, body = call(tmp_path, "GET", "/nope")
    assert (status, body["error"]) == (404, "not_found")
    assert headers["x-frame-options"] == "DENY"
    status, _, body = call(tmp_path, "GET", "/api/admin/tokens")
    assert (status, body["error"]) == (405, "method_not_allowed")


def test_health(tmp_path: Path) -> None:
    assert call(tmp_path, "GET", "/api/health")[::2] == (200, {"status": "ok"})


def test_oversized_or_unsized_bodies_are_refused(tmp_path: Path) -> None:
    big = b'{"call_id": "' + b"x" * 70_000 + b'"}'
    status, headers, body = call(tmp_path, "POST", "/api/admin/tokens", content=big,
                                 headers={**AUTH, "content-type": "application/json"})
    assert (status, body["error"]) == (413, "too_large")
    assert headers["x-content-type-options"] == "nosniff"

    async def chunks() -> Any:
        yield b'{"call_id": "c"}'

    status, _, body = call(tmp_path, "POST", "/api/admin/tokens", content=chunks(),
                           headers={**AUTH, "content-type": "application/json"})
    assert (status, body["error"]) == (411, "length_required")
