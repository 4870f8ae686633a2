"""The [web] table: defaults, and mistakes reported with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from web.helpers import self_signed

from gateway.config import (
    ConfigError,
    WebListenAddress,
    default_config,
    load_config,
    loads_config,
    normalize_origin,
)

REPO = Path(__file__).resolve().parents[2]


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).replace(str(path), "FILE")


def test_no_web_table_means_no_web_server() -> None:
    assert default_config().web.enabled is False
    assert loads_config("[sip]\n").web.enabled is False


def test_an_empty_web_table_gives_the_defaults() -> None:
    web = loads_config("[web]\n").web
    assert web.enabled is True
    assert web.listen == (WebListenAddress("http", "127.0.0.1", 8080),)
    assert (web.token_ttl, web.media_mode, web.admin_key) == (600, "echo", None)
    assert web.allowed_origins == () and web.certificate is None
    assert (web.max_message_bytes, web.join_failure_limit) == (65536, 10)


def test_example_file_documents_web_with_http_on_loopback() -> None:
    config = load_config(REPO / "conf" / "gateway.toml")
    assert config.web.enabled
    assert [str(a) for a in config.web.listen] == ["http:127.0.0.1:8080"]
    text = (REPO / "conf" / "gateway.toml").read_text()
    for key in ("enabled", "listen", "certificate", "private_key", "allowed_origins",
                "admin_key", "token_ttl", "media_mode", "max_message_bytes",
                "join_failure_limit", "join_failure_window", "join_block_seconds"):
        assert f"\n{key} = " in text or f"\n# {key} = " in text, key
    assert "https:" in text


def test_https_listener_loads_a_matching_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    web = loads_config(f'[web]\nlisten = ["https:[::1]:8443", "http:127.0.0.1:0"]\n'
                       f'certificate = "{cert.name}"\nprivate_key = "{key.name}"\n',
                       base_dir=tmp_path).web
    assert [str(a) for a in web.listen] == ["https:[::1]:8443", "http:127.0.0.1:0"]
    assert web.certificate == cert and web.private_key == key


def test_origins_are_normalised_as_browsers_send_them() -> None:
    web = loads_config('[web]\nallowed_origins = ["HTTPS://Visits.Example.org:443/", '
                       '"http://127.0.0.1:8080", "https://[::1]:8443"]\n').web
    assert web.allowed_origins == ("https://visits.example.org", "http://127.0.0.1:8080",
                                   "https://[::1]:8443")
    assert normalize_origin("null") is None
    assert normalize_origin("https://x.org/path") is None


@pytest.mark.parametrize(("text", "expected"), [
    ('[web]\nlisten = ["tcp:127.0.0.1:80"]\n',
     'FILE:2: web.listen[0]: expected "http:HOST:PORT" or "https:HOST:PORT"'),
    ('[web]\nlisten = ["http:localhost:80"]\n', "FILE:2: web.listen[0]: expected"),
    ('[web]\nlisten = ["http:127.0.0.1:80", "http:127.0.0.1:80"]\n',
     'FILE:2: web.listen[1]: "http:127.0.0.1:80" is listed twice'),
    ("[web]\nlisten = []\n", "FILE:2: web.listen: expected at least one listener"),
    ('[web]\nlisten = ["https:127.0.0.1:8443"]\n',
     "FILE:1: web.certificate: required for an https: listener"),
    ('[web]\ncertificate = "a.crt"\n',
     "FILE:2: web.certificate: private_key is missing"),
    ('[web]\nallowed_origins = ["visits.example.org"]\n',
     "FILE:2: web.allowed_origins[0]: expected an origin"),
    ('[web]\nadmin_key = "short"\n', "FILE:2: web.admin_key: expected a string of at least 16"),
    ("[web]\ntoken_ttl = 0\n", "FILE:2: web.token_ttl: expected an integer from 1 to 86400"),
    ("[web]\ntoken_ttl = 100000\n", "FILE:2: web.token_ttl: expected an integer from 1 to"),
    ('[web]\nmedia_mode = "bridge"\n',
     'FILE:2: web.media_mode: expected one of "echo", "test-pattern", got "bridge"'),
    ("[web]\nmax_message_bytes = 10\n", "FILE:2: web.max_message_bytes: expected an integer"),
    ('[web]\nenabled = "yes"\n', 'FILE:2: web.enabled: expected true or false, got "yes"'),
    ("[web]\nlisen = []\n", 'FILE:2: web.lisen: unknown key; did you mean "listen"?'),
    ('[wbe]\n', 'FILE:1: wbe: unknown key; did you mean "web"?'),
])
def test_mistakes_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text).startswith(expected)


def test_mismatched_certificate_and_key(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path, "one")
    _, key = self_signed(tmp_path, "two")
    message = error_of(tmp_path, f'[web]\nlisten = ["https:127.0.0.1:0"]\n'
                       f'certificate = "{cert}"\nprivate_key = "{key}"\n')
    assert message.startswith("FILE:4: web.private_key: ")
    assert "does not match the certificate" in message


def test_disabled_web_ignores_https_without_files() -> None:
    web = loads_config('[web]\nenabled = false\nlisten = ["https:0.0.0.0:8443"]\n').web
    assert web.enabled is False
