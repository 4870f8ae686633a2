"""WebRtcConfig validation: clear errors, no server unless configured."""

from __future__ import annotations

import pytest

from gateway.webrtc.config import IceServer, WebRtcConfig, parse_ice_url


def test_defaults_use_no_server() -> None:
    config = WebRtcConfig()
    assert config.host_addresses == ["127.0.0.1"]
    assert config.stun() == [] and config.turn() == []


def test_urls() -> None:
    assert parse_ice_url("stun:stun.example.org") == IceServer("stun", "stun.example.org", 3478)
    assert parse_ice_url("turn:10.0.0.1:3479?transport=tcp") == IceServer(
        "turn", "10.0.0.1", 3479, "tcp")
    assert parse_ice_url("turns:[2001:db8::1]") == IceServer("turn", "2001:db8::1", 5349, "tcp",
                                                             True)
    config = WebRtcConfig(turn_servers=[{"urls": ["turn:t.example:3478"], "username": "u",
                                         "credential": "p"}])
    assert config.turn() == [IceServer("turn", "t.example", 3478, "udp", False, "u", "p")]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"host_addresses": []}, "at least one"),
    ({"host_addresses": ["eth0"]}, "not an IP address"),
    ({"host_addresses": ["0.0.0.0"]}, "cannot be a candidate"),
    ({"port_range": (40000, 30000)}, "port_range"),
    ({"port_range": (80, 90)}, "port_range"),
    ({"stun_servers": ["http://x"]}, "expected stun"),
    ({"stun_servers": ["turn:x"]}, "not a stun"),
    ({"stun_servers": ["stun:x:99999"]}, "bad port"),
    ({"turn_servers": [{"urls": "turn:x"}]}, "username and credential"),
    ({"turn_servers": [{"urls": "stun:x", "username": "u", "credential": "p"}]}, "not a turn"),
    ({"turn_servers": ["turn:x"]}, "expected a table"),
])
def test_bad_config_names_the_key(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WebRtcConfig(**kwargs)  # type: ignore[arg-type]
