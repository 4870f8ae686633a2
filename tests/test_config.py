"""Configuration loading: what an operator sees for good and bad files."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
import stat
from pathlib import Path

import pytest

from gateway.config import (
    Config,
    ConfigError,
    ListenAddress,
    default_config,
    load_config,
    loads_config,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "conf" / "gateway.toml"


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).replace(str(path), "FILE")


# --------------------------------------------------------------------- good files


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.sip.listen == (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    assert [a.username for a in config.sip.accounts] == ["kiosk-a1"]
    assert [t.name for t in config.sip.trunks] == ["facility-pbx"]
    assert config.sip.trunks[0].accepts_source("127.0.0.1")
    assert not config.sip.trunks[0].accepts_source("127.0.0.2")
    assert len(config.routes) >= 2
    assert config.source == EXAMPLE


def test_dev_file_routes_kiosk_to_kiosk() -> None:
    config = load_config(REPO / "conf" / "dev.toml")
    assert {a.username for a in config.sip.accounts} == {"kiosk-1", "kiosk-2"}
    route = config.route_for("kiosk-2")
    assert route is not None and route.kind == "registered"
    assert [str(a) for a in config.sip.listen] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = default_config()
    sip = config.sip
    assert [str(a) for a in sip.listen] == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert sip.public_host == "127.0.0.1"
    assert (sip.realm, sip.t1_ms, sip.t2_ms, sip.t4_ms) == ("gateway", 500, 4000, 5000)
    assert (sip.max_message_bytes, sip.max_headers) == (65535, 256)
    assert (sip.max_tcp_connections_per_source, sip.tcp_idle_timeout) == (32, 300)
    assert sip.force_rport is True
    assert (sip.udp_size_threshold, sip.options_keepalive_seconds) == (1300, 30)
    assert (sip.session_expires, sip.min_se) == (1800, 90)
    assert sip.user_agent.startswith("gateway/")
    assert sip.tls is None and sip.accounts == () and sip.trunks == ()
    reg = sip.registrar
    assert (reg.min_expires, reg.max_expires, reg.default_expires) == (60, 3600, 3600)
    assert (reg.max_contacts, reg.nonce_ttl, reg.algorithms) == (10, 300, ("SHA-256", "MD5"))
    assert (reg.auth_failure_limit, reg.auth_failure_window, reg.auth_block_seconds) == (
        10, 60, 300)
    assert config.gateway.data_dir == tmp_path / "data"
    assert config.gateway.log_level == "info" and config.gateway.secret is None
    assert config.gateway.node_id
    assert config.store.redis_url == "" and config.store.embedded
    assert config.database.url == f"sqlite:///{tmp_path / 'data' / 'gateway.sqlite3'}"
    assert config.routes == () and config.source is None


def test_config_is_frozen() -> None:
    config = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sip.t1_ms = 1  # type: ignore[misc]


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    path = write(sub, '[gateway]\ndata_dir = "state"\n')
    config = load_config(path)
    assert config.gateway.data_dir == sub / "state"
    assert config.database.url == f"sqlite:///{sub / 'state' / 'gateway.sqlite3'}"


def test_external_store_and_database(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[store]
redis_url = "redis://127.0.0.1:6379/0"
node_timeout_seconds = 30
[database]
url = "postgresql://gateway@127.0.0.1:5432/gateway"
"""))
    assert config.store.redis_url == "redis://127.0.0.1:6379/0" and not config.store.embedded
    assert config.store.node_timeout_seconds == 30
    assert config.database.url == "postgresql://gateway@127.0.0.1:5432/gateway"


def test_ipv6_listener_and_public_host(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[sip]\nlisten = ["udp:[::1]:5070"]\n'))
    assert config.sip.listen == (ListenAddress("udp", "::1", 5070),)
    assert str(config.sip.listen[0]) == "udp:[::1]:5070"
    assert config.sip.public_host == "::1"


def test_accounts_and_digest_ha1(tmp_path: Path) -> None:
    sha = hashlib.sha256(b"k2:gateway:pw").hexdigest()
    config = load_config(write(tmp_path, f"""
[[sip.accounts]]
username = "k1"
password = "pw"
[[sip.accounts]]
username = "k2"
ha1_sha256 = "{sha.upper()}"
"""))
    k1, k2 = config.sip.accounts
    assert k1.ha1("MD5", "gateway") == hashlib.md5(b"k1:gateway:pw").hexdigest()
    assert k1.ha1("SHA-256", "gateway") == hashlib.sha256(b"k1:gateway:pw").hexdigest()
    assert k2.ha1("sha-256", "gateway") == sha
    assert k2.ha1("MD5", "gateway") is None
    assert config.sip.account("k2") is k2 and config.sip.account("nobody") is None


def test_routes_first_full_match_wins(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[[sip.trunks]]
name = "pbx"
sources = ["127.0.0.1"]
uri = "sip:127.0.0.1:5070"
[[routes]]
match = "9(\\\\d+)"
to = "trunk:pbx"
strip_prefix = "9"
prepend = "+1"
[[routes]]
match = "\\\\d+"
to = "sip:{user}@127.0.0.1:5080"
[[routes]]
match = "kiosk-.*"
to = "registered"
"""))
    first = config.route_for("9555")
    assert first is not None and first.trunk_name == "pbx" and first.rewrite("9555") == "+1555"
    second = config.route_for("555")
    assert second is not None and second.uri_for("555") == "sip:555@127.0.0.1:5080"
    assert config.route_for("x555") is None  # the whole user part must match
    assert config.route_for("kiosk-9") is not None


def make_cert(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


TLS_CONF = """
[sip]
listen = ["tls:127.0.0.1:5061"]
[sip.tls]
certificate = "{cert}"
private_key = "{key}"
"""


def test_tls_listener_with_matching_certificate(tmp_path: Path) -> None:
    make_cert(tmp_path, "a")
    config = load_config(write(tmp_path, TLS_CONF.format(cert="a.crt", key="a.key")))
    assert config.sip.tls is not None
    assert config.sip.tls.certificate == tmp_path / "a.crt"


def test_tls_problems(tmp_path: Path) -> None:
    make_cert(tmp_path, "a")
    make_cert(tmp_path, "b")
    assert error_of(tmp_path, '[sip]\nlisten = ["tls:127.0.0.1:5061"]\n') == (
        "FILE:1: sip.tls: a [sip.tls] table with certificate and private_key is required for a "
        "tls: listener"
    )
    missing = error_of(tmp_path, TLS_CONF.format(cert="nope.crt", key="a.key"))
    assert missing.startswith("FILE:5: sip.tls.certificate: cannot read ")
    assert "nope.crt: No such file or directory" in missing
    assert error_of(tmp_path, TLS_CONF.format(cert="a.crt", key="b.key")) == (
        f"FILE:6: sip.tls.private_key: {tmp_path / 'b.key'} does not match the certificate in "
        f"{tmp_path / 'a.crt'}"
    )
    assert error_of(tmp_path, TLS_CONF.format(cert="a.key", key="a.key")) == (
        f"FILE:5: sip.tls.certificate: {tmp_path / 'a.key'} holds no PEM certificate"
    )


def test_secret_generated_once_and_kept(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[gateway]\ndata_dir = "d"\n'))
    secret_file = tmp_path / "d" / "secret"
    assert not secret_file.exists()  # loading (check-config) writes nothing
    first = config.gateway.secret_key()
    assert len(first) >= 32
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert load_config(tmp_path / "gateway.toml").gateway.secret_key() == first


def test_configured_secret_is_used(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[gateway]\nsecret = "0123456789abcdef-x"\n'))
    assert config.gateway.secret_key() == b"0123456789abcdef-x"
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------- bad files


def test_error_names_file_line_key_and_expectation(tmp_path: Path) -> None:
    path = write(tmp_path, '[sip]\nrealm = "x"\n\nt1_ms = "fast"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f'{path}:4: sip.t1_ms: expected a positive integer (milliseconds), got "fast"'
    )
    problem = info.value.problems[0]
    assert (problem.line, problem.key) == (4, "sip.t1_ms")


def test_relative_path_is_reported_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", "[sip]\nforce_rport = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("conf/gateway.toml")
    assert str(info.value) == "conf/gateway.toml:2: sip.force_rport: expected true or false, got 1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sip]\nt1 = 3\n", 'FILE:2: sip.t1: unknown key; did you mean "t1_ms"?'),
        ("[sipp]\n", "FILE:1: sipp: unknown key; did you mean \"sip\"?"),
        ("[sip]\nt4_ms = true\n", "FILE:2: sip.t4_ms: expected a positive integer "
         "(milliseconds), got true"),
        ("[sip]\nt1_ms = 0\n", "FILE:2: sip.t1_ms: expected a positive integer "
         "(milliseconds), got 0"),
        ("[sip]\nt1_ms = 1000\nt2_ms = 500\n",
         "FILE:3: sip.t2_ms: expected at least t1_ms (1000), got 500"),
        ("[sip]\nmin_se = 60\n", "FILE:2: sip.min_se: expected an integer >= 90 (seconds), "
         "got 60"),
        ("[sip]\noptions_keepalive_seconds = -1\n", "FILE:2: sip.options_keepalive_seconds: "
         "expected a non-negative integer (seconds, 0 = off), got -1"),
        ("[gateway]\nlog_level = \"verbose\"\n", 'FILE:2: gateway.log_level: expected one of '
         '"debug", "info", "warning", "error", got "verbose"'),
        ("[gateway]\nsecret = \"short\"\n", "FILE:2: gateway.secret: expected a string of at "
         "least 16 characters (or leave it out to generate one in data_dir/secret)"),
        ("[sip]\nlisten = [\n  \"udp:127.0.0.1:5060\",\n  \"udp:::1:5060\",\n]\n",
         'FILE:4: sip.listen[1]: expected "udp:HOST:PORT", "tcp:HOST:PORT" or "tls:HOST:PORT" '
         "with an IP address as HOST (IPv6 in brackets) and a port from 0 to 65535, "
         'got "udp:::1:5060"'),
        ("[sip]\nlisten = [\"sctp:127.0.0.1:5060\"]\n", "FILE:2: sip.listen[0]: expected "
         '"udp:HOST:PORT", "tcp:HOST:PORT" or "tls:HOST:PORT" with an IP address as HOST '
         '(IPv6 in brackets) and a port from 0 to 65535, got "sctp:127.0.0.1:5060"'),
        ("[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:127.0.0.1:5060\"]\n",
         'FILE:2: sip.listen[1]: "udp:127.0.0.1:5060" is listed twice'),
        ("[sip]\nlisten = [\"udp:0.0.0.0:5060\"]\n", "FILE:1: sip.public_host: required when "
         "the first listener binds the wildcard address 0.0.0.0 (set the address kiosks reach "
         "this gateway at)"),
        ("[gateway]\nlog_level = 1\n[sip]\nlisten = []\n", "FILE:2: gateway.log_level: expected "
         'one of "debug", "info", "warning", "error", got 1\n'
         "FILE:4: sip.listen: expected at least one listener"),
        ("[sip]\nlisten = \"udp:127.0.0.1:5060\"\n", 'FILE:2: sip.listen: expected an array of '
         'strings, got "udp:127.0.0.1:5060"'),
        ("[sip.registrar]\nmin_expires = 600\nmax_expires = 300\ndefault_expires = 300\n",
         "FILE:3: sip.registrar.max_expires: expected at least min_expires (600), got 300"),
        ("[sip.registrar]\nalgorithms = [\"SHA-256\", \"SHA-1\"]\n",
         'FILE:2: sip.registrar.algorithms[1]: expected "SHA-256" or "MD5", got "SHA-1"'),
        ("sip = 5\n", "FILE:1: sip: expected a table, got 5"),
        ("[routes]\nmatch = \"x\"\n", "FILE:1: routes: expected an array of tables "
         "([[routes]]), got a table"),
        ("[store]\nredis_url = \"localhost:6379\"\n", "FILE:2: store.redis_url: expected an "
         'empty string or a redis://, rediss:// or unix:// URL, got "localhost:6379"'),
        ("[store]\nnode_timeout_seconds = 1\n", "FILE:2: store.node_timeout_seconds: "
         "expected an integer from 3 to 600 (seconds), got 1"),
        ("[database]\nurl = \"mysql://x\"\n", "FILE:2: database.url: expected an empty string, "
         'a sqlite:/// or a postgresql:// URL, got "mysql://x"'),
    ],
)
def test_bad_values(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


ACCOUNT_CASES = [
    ('[[sip.accounts]]\npassword = "x"\n', "FILE:1: sip.accounts[0]: username is required"),
    ('[[sip.accounts]]\nusername = "a b"\npassword = "x"\n',
     "FILE:2: sip.accounts[0].username: expected a SIP user name (letters, digits and "
     "-_.!~*'()&=+$,;?/), got \"a b\""),
    ('[[sip.accounts]]\nusername = "k1"\n',
     'FILE:1: sip.accounts[0]: account "k1": one of password, ha1_md5 or ha1_sha256 is '
     "required"),
    ('[[sip.accounts]]\nusername = "k1"\npassword = "x"\nha1_md5 = "' + "0" * 32 + '"\n',
     "FILE:4: sip.accounts[0].ha1_md5: give either password or ha1_md5/ha1_sha256, not both"),
    ('[[sip.accounts]]\nusername = "k1"\nha1_md5 = "abc"\n',
     'FILE:3: sip.accounts[0].ha1_md5: expected 32 hexadecimal digits, got "abc"'),
    ('[sip.registrar]\nalgorithms = ["SHA-256"]\n[[sip.accounts]]\nusername = "k1"\n'
     'ha1_md5 = "' + "0" * 32 + '"\n',
     "FILE:5: sip.accounts[0].ha1_md5: no HA1 for any algorithm in sip.registrar.algorithms "
     "(SHA-256)"),
    ('[[sip.accounts]]\nusername = "k1"\npassword = "x"\n\n'
     '[[sip.accounts]]\nusername = "k1"\npassword = "y"\n',
     'FILE:6: sip.accounts[1].username: "k1" is already used by another account'),
    ('[[sip.accounts]]\nusername = "k1"\npassword = "x"\nkind = "phone"\n',
     'FILE:4: sip.accounts[0].kind: expected one of "kiosk", got "phone"'),
    ('[[sip.accounts]]\nusername = "k1"\npasword = "x"\n',
     'FILE:3: sip.accounts[0].pasword: unknown key; did you mean "password"?\n'
     'FILE:1: sip.accounts[0]: account "k1": one of password, ha1_md5 or ha1_sha256 is '
     "required"),
]


@pytest.mark.parametrize(("text", "message"), ACCOUNT_CASES)
def test_bad_accounts(tmp_path: Path, text: str, message: str) -> None:
    got = error_of(tmp_path, text)
    assert sorted(got.splitlines()) == sorted(message.splitlines())


TRUNK = '[[sip.trunks]]\nname = "pbx"\nsources = ["127.0.0.1/32"]\nuri = "sip:127.0.0.1:5070"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[sip.trunks]]\nname = "pbx"\n',
         "FILE:1: sip.trunks[0]: sources, uri required in every [[sip.trunks]]"),
        (TRUNK + TRUNK, 'FILE:6: sip.trunks[1].name: "pbx" is already used by another trunk'),
        (TRUNK.replace("127.0.0.1/32", "127.0.0.300/32"),
         'FILE:3: sip.trunks[0].sources[0]: expected an IP network in CIDR form, e.g. '
         '"127.0.0.1/32", got "127.0.0.300/32"'),
        (TRUNK.replace('"sip:127.0.0.1:5070"', '"http://pbx"'),
         'FILE:4: sip.trunks[0].uri: expected a SIP URI, e.g. '
         '"sip:127.0.0.1:5070;transport=udp", got "http://pbx"'),
        (TRUNK + 'username = "pbx"\n',
         "FILE:5: sip.trunks[0].username: password is missing (username and password go "
         "together)"),
        ('[[routes]]\nmatch = "("\nto = "registered"\n',
         'FILE:2: routes[0].match: expected a Python regular expression, got "(" '
         "(missing ), unterminated subpattern at position 0)"),
        (TRUNK + '[[routes]]\nmatch = ".*"\nto = "trunk:pbxx"\n',
         'FILE:7: routes[0].to: "trunk:pbxx" names no [[sip.trunks]] entry (trunks: pbx)'),
        ('[[routes]]\nmatch = ".*"\nto = "{user}@host"\n',
         'FILE:3: routes[0].to: expected "registered", "trunk:NAME" or a SIP URI template '
         'such as "sip:{user}@127.0.0.1:5070", got "{user}@host"'),
        ('[[routes]]\nmatch = ".*"\nto = "sip:{usr}@host"\n',
         'FILE:3: routes[0].to: expected "registered", "trunk:NAME" or a SIP URI template '
         'such as "sip:{user}@127.0.0.1:5070", got "sip:{usr}@host"'),
        ('[[routes]]\nto = "registered"\n',
         "FILE:1: routes[0]: match required in every [[routes]]"),
    ],
)
def test_bad_trunks_and_routes(tmp_path: Path, text: str, message: str) -> None:
    assert error_of(tmp_path, text) == message


def test_all_problems_reported_in_file_order(tmp_path: Path) -> None:
    text = '[sip]\nt4_ms = "x"\nt1_ms = "y"\n[gateway]\nlog_level = 3\n'
    lines = error_of(tmp_path, text).splitlines()
    assert [line.split(":")[1] for line in lines] == ["2", "3", "5"]


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    assert error_of(tmp_path, '[sip]\nrealm = "gateway"\nt1_ms = \n') == (
        "FILE:3: TOML syntax error: Invalid value (column 9)"
    )
    assert error_of(tmp_path, '[sip]\n[sip]\n').startswith("FILE:2: TOML syntax error: ")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.toml")
    assert str(info.value) == f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_bytes(b'[sip]\nrealm = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2: not valid UTF-8"


def test_line_numbers_survive_tricky_toml() -> None:
    text = '''# comment with key = 1
[gateway]
log_level = """
t1_ms = "fast"
[sip]
"""
[sip]
"t1_ms" = 1
listen = [ # comment
  "udp:127.0.0.1:5060", 'tcp:127.0.0.1:5060',

  "bogus",
]
registrar = { min_expires = 60, 'nonce_ttl' = "x" }
'''
    with pytest.raises(ConfigError) as info:
        loads_config(text, source="t.toml")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("t.toml:3: gateway.log_level: expected one of")
    assert lines[1].startswith('t.toml:12: sip.listen[2]: expected "udp:HOST:PORT"')
    assert lines[2] == (
        't.toml:14: sip.registrar.nonce_ttl: expected a positive integer (seconds), got "x"'
    )


# --------------------------------------------------------------------- the example file


def _example_integer_lines() -> list[tuple[int, str]]:
    """(line number, dotted key) for every `key = <integer>` line of the example."""
    out: list[tuple[int, str]] = []
    section = ""
    for number, line in enumerate(EXAMPLE.read_text().splitlines(), start=1):
        header = re.match(r"^\[\[?([a-z_.]+)\]\]?", line)
        if header:
            section = header.group(1)
        match = re.match(r"^([a-z_0-9]+) = \d+$", line)
        if match:
            out.append((number, f"{section}.{match.group(1)}"))
    return out


@pytest.mark.parametrize(("number", "key"), _example_integer_lines())
def test_every_integer_in_the_example_is_checked(tmp_path: Path, number: int, key: str) -> None:
    lines = EXAMPLE.read_text().splitlines()
    lines[number - 1] = lines[number - 1].split("=")[0] + '= "fast"'
    message = error_of(tmp_path, "\n".join(lines) + "\n")
    assert message.startswith(f"FILE:{number}: {key}: expected ")
    assert message.endswith(', got "fast"')


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def test_example_documents_every_key() -> None:
    """Every configurable key appears in conf/gateway.toml, set or commented out."""
    text = EXAMPLE.read_text()
    written = set(re.findall(r"^#? ?([a-z_0-9]+) = ", text, flags=re.MULTILINE))
    from gateway import config as c

    expected = (
        (_fields(c.GatewayConfig) | _fields(c.SipConfig) | _fields(c.RegistrarConfig)
         | _fields(c.TlsConfig) | _fields(c.Account) | _fields(c.Trunk) | _fields(c.Route)
         | _fields(c.StoreConfig) | _fields(c.DatabaseConfig))
        - {"tls", "registrar", "accounts", "trunks"}
    )
    assert expected - written == set()
    assert isinstance(load_config(EXAMPLE), Config)
