"""Schemathesis: generated requests against the OpenAPI document, answers checked
against it (status codes, bodies, no 5xx, bad input refused, auth enforced)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from web.fakes import FakeMediaEndpoint
from web.helpers import ADMIN_KEY, web_config

from gateway.web.server import WebServer

_server = WebServer(web_config(Path(tempfile.mkdtemp(prefix="gw-web-fuzz-"))),
                    FakeMediaEndpoint())  # not bound: schemathesis calls the app in-process
schema = schemathesis.openapi.from_asgi("/api/openapi.json", _server.app)


@schema.parametrize()
@settings(max_examples=100, deadline=None, derandomize=True,  # the same cases every run
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_KEY}"})
