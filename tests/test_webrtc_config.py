"""``[webrtc]`` in the configuration file, and how it reaches the endpoint and the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, default_config, load_config
from gateway.web.media import PerBrowserSessions, browser_ice_servers
from gateway.webrtc import WebRtcConfig
from gateway.webrtc.api import MediaMode


def load(tmp_path: Path, text: str) -> WebRtcConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_config(path).webrtc


def problems(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_defaults_are_loopback_and_no_public_server(tmp_path: Path) -> None:
    for cfg in (default_config().webrtc, load(tmp_path, ""), load(tmp_path, "[webrtc]\n")):
        assert cfg.host_addresses == ["127.0.0.1"]
        assert cfg.port_range is None
        assert cfg.stun_servers == [] and cfg.turn_servers == []
        assert browser_ice_servers(cfg) == []


def test_every_key(tmp_path: Path) -> None:
    cfg = load(tmp_path, (
        '[webrtc]\nhost_addresses = ["203.0.113.5", "2001:db8::5"]\n'
        "port_range = [40000, 40999]\n"
        'stun_servers = ["stun:stun.example.org:3478"]\n'
        "[[webrtc.turn_servers]]\n"
        'urls = ["turn:turn.example.org?transport=tcp", "turns:turn.example.org"]\n'
        'username = "gw"\ncredential = "secret"\n'
        "[[webrtc.turn_servers]]\n"
        'urls = "turn:relay2.example.org"\nusername = "gw2"\ncredential = "s2"\n'
    ))
    assert cfg.host_addresses == ["203.0.113.5", "2001:db8::5"]
    assert cfg.port_range == (40000, 40999)
    assert [s.host for s in cfg.turn()] == ["turn.example.org"] * 2 + ["relay2.example.org"]
    assert browser_ice_servers(cfg) == [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turn:turn.example.org?transport=tcp", "turns:turn.example.org"],
         "username": "gw", "credential": "secret"},
        {"urls": ["turn:relay2.example.org"], "username": "gw2", "credential": "s2"},
    ]


@pytest.mark.parametrize(("text", "message"), [
    ('host_addresses = ["0.0.0.0"]', 'webrtc.host_addresses[0]: expected an IP address'),
    ('host_addresses = ["gateway.local"]', 'webrtc.host_addresses[0]: expected an IP'),
    ("host_addresses = []", "webrtc.host_addresses: expected at least one address"),
    ("port_range = [5000]", "webrtc.port_range: expected [LOW, HIGH]"),
    ("port_range = [41000, 40000]", "webrtc.port_range: expected [LOW, HIGH]"),
    ("port_range = [80, 90]", "webrtc.port_range: expected [LOW, HIGH]"),
    ('stun_servers = ["turn:x.example.org"]', 'webrtc.stun_servers[0]: expected a "stun:'),
    ('stun_servers = ["http://x"]', 'webrtc.stun_servers[0]: expected a "stun:'),
    ("hosts = []", 'webrtc.hosts: unknown key; did you mean "host_addresses"?'),
    ('[[webrtc.turn_servers]]\nurls = "stun:x"\nusername = "u"\ncredential = "c"',
     "webrtc.turn_servers[0].urls: expected a \"turn:"),
    ('[[webrtc.turn_servers]]\nurls = "turn:x"\nusername = "u"',
     "webrtc.turn_servers[0].credential: required for a TURN server"),
])
def test_mistakes_name_the_key_and_line(tmp_path: Path, text: str, message: str) -> None:
    out = problems(tmp_path, f"[webrtc]\n{text}\n")
    assert message in out
    assert "gateway.toml:2:" in out or "gateway.toml:3:" in out


class _Endpoint:
    def __init__(self) -> None:
        self.keys: list[tuple[str, MediaMode]] = []

    def create_session(self, call_id: str, mode: MediaMode) -> object:
        self.keys.append((call_id, mode))
        return object()


def test_every_join_gets_its_own_session_key() -> None:
    inner = _Endpoint()
    media = PerBrowserSessions(inner)  # type: ignore[arg-type]
    media.create_session("visit-1", "echo")
    media.create_session("visit-1", "echo")  # a re-join, or a second browser
    media.create_session("visit-2", "test-pattern")
    assert inner.keys == [("visit-1#1", "echo"), ("visit-1#2", "echo"),
                          ("visit-2#3", "test-pattern")]
