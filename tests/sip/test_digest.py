"""Server-side digest authentication: RFC vectors, nonce handling, client exchanges."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from gateway.sip.digest import (
    SUPPORTED_ALGORITHMS,
    AuthReason,
    Credential,
    DigestAuthenticator,
    authorization_for,
    compute_ha1,
    digest_response,
    parse_auth_header,
    same_uri,
    select_challenge,
)
from gateway.sip.message import Request, make_response, parse_datagram

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "gw.example.org"
T0 = 1_700_000_000.0


_COUNTER = itertools.count()


def counter_random(n: int) -> bytes:
    """Distinct, reproducible salts."""
    return next(_COUNTER).to_bytes(n, "big")


def auth(**kw: object) -> DigestAuthenticator:
    kw.setdefault("random", counter_random)
    return DigestAuthenticator(REALM, SECRET, **kw)  # type: ignore[arg-type]


USERS = {"kiosk-17": Credential("kiosk-17", password="s3cret")}


def lookup(name: str) -> Credential | None:
    return USERS.get(name)


def register(
    authorization: str | list[str] | None = None, uri: str = "sip:gw.example.org"
) -> Request:
    headers = [
        ("Via", "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds"),
        ("To", "<sip:kiosk-17@gw.example.org>"),
        ("From", "<sip:kiosk-17@gw.example.org>;tag=1928301774"),
        ("Call-ID", "a84b4c76e66710"),
        ("CSeq", "2 REGISTER"),
    ]
    if isinstance(authorization, str):
        headers.append(("Authorization", authorization))
    elif authorization:
        headers += [("Authorization", a) for a in authorization]
    return Request("REGISTER", uri, headers)


def answer(a: DigestAuthenticator, now: float, *, index: int = 0, nc: int = 1,
           password: str = "s3cret", user: str = "kiosk-17", uri: str = "sip:gw.example.org",
           cnonce: str = "0a4f113b", challenge: str | None = None) -> str:
    ch = challenge if challenge is not None else a.challenge(now)[index]
    return authorization_for(ch, "REGISTER", uri, user, password, cnonce, nc)


# RFC vectors -------------------------------------------------------------------------


def test_rfc2617_section_3_5_md5() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    assert digest_response(
        "MD5", ha1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html",
        qop="auth", nc="00000001", cnonce="0a4f113b",
    ) == "6629fae49393a05397450978507c4ef1"

    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    header = authorization_for(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1
    )
    _, p = parse_auth_header(header)
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert p["qop"] == "auth" and p["nc"] == "00000001"
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert "algorithm" not in p  # not in the challenge, so not echoed
    assert "qop=auth," in header  # unquoted in credentials (RFC 2617 3.2.2)


RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1(algorithm: str, expected: str) -> None:
    # The challenge as printed in the RFC, qop list with a comma inside the quotes.
    challenge = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    header = authorization_for(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle of Life", RFC7616_CNONCE, 1
    )
    scheme, p = parse_auth_header(header)
    assert scheme == "Digest"
    assert p["response"] == expected
    assert p["algorithm"] == algorithm and p["opaque"] == RFC7616_OPAQUE

    # The RFC's credentials reach the response check in verify(); the nonce is not one
    # of ours, so the right answer earns stale=true and never ok.
    rfc_credentials = (
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
        f"algorithm={algorithm}, nonce=\"{RFC7616_NONCE}\", nc=00000001, "
        f'cnonce="{RFC7616_CNONCE}", qop=auth, response="{expected}", '
        f'opaque="{RFC7616_OPAQUE}"'
    )
    a = DigestAuthenticator("http-auth@example.org", SECRET)
    req = Request("GET", "/dir/index.html", [("Authorization", rfc_credentials)])
    mufasa = {"Mufasa": Credential("Mufasa", password="Circle of Life")}
    result = a.verify(req, mufasa.get, T0)
    assert (result.ok, result.stale, result.reason) == (False, True, AuthReason.STALE_NONCE)
    assert result.needs_challenge and not result.bad_credentials

    wrong = {"Mufasa": Credential("Mufasa", password="Circle Of Life")}
    result = a.verify(req, wrong.get, T0)
    assert (result.ok, result.stale, result.reason) == (False, False, AuthReason.WRONG_RESPONSE)


def test_stored_ha1_instead_of_password() -> None:
    a = auth()
    md5 = compute_ha1("MD5", "kiosk-17", REALM, "s3cret")
    sha = compute_ha1("SHA-256", "kiosk-17", REALM, "s3cret")
    assert sha == hashlib.sha256(f"kiosk-17:{REALM}:s3cret".encode()).hexdigest()
    cred = Credential("kiosk-17", ha1={"md5": md5.upper(), "sha-256": sha})
    assert cred.ha1 == {"MD5": md5, "SHA-256": sha}
    for index in (0, 1):
        req = register(answer(a, T0, index=index))
        assert a.verify(req, {"kiosk-17": cred}.get, T0).ok


def test_credential_validation() -> None:
    with pytest.raises(ValueError):
        Credential("x")
    with pytest.raises(ValueError):
        Credential("x", ha1={"MD5": "abc"})
    with pytest.raises(ValueError):
        Credential("x", ha1={"SHA-256": "0" * 32})
    with pytest.raises(ValueError):
        Credential("x", ha1={"MD5-sess": "0" * 32})
    assert "s3cret" not in repr(Credential("x", password="s3cret"))


def test_authenticator_configuration() -> None:
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, b"")
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, SECRET, algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        DigestAuthenticator(REALM, SECRET, algorithms=())
    a = DigestAuthenticator(REALM, SECRET, algorithms=("md5", "sha-256", "MD5"))
    assert a.algorithms == ("MD5", "SHA-256")


# Challenges ---------------------------------------------------------------------------


def test_challenge_one_header_per_algorithm_sha256_first() -> None:
    a = auth()
    values = a.challenge(T0)
    assert len(values) == 2
    parsed = [parse_auth_header(v) for v in values]
    assert [p["algorithm"] for _, p in parsed] == ["SHA-256", "MD5"]
    for scheme, p in parsed:
        assert scheme == "Digest"
        assert p["realm"] == REALM and p["qop"] == "auth" and "stale" not in p
    assert parsed[0][1]["nonce"] == parsed[1][1]["nonce"]
    assert 'qop="auth"' in values[0] and "algorithm=SHA-256" in values[0]

    stale = [parse_auth_header(v)[1] for v in a.challenge(T0, stale=True)]
    assert all(p["stale"] == "true" for p in stale)
    assert a.challenge(T0 + 1)[0] != values[0]  # fresh nonce each time

    only = [parse_auth_header(v)[1]["algorithm"] for v in a.challenge(T0, algorithms=["MD5"])]
    assert only == ["MD5"]


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
def test_round_trip_every_algorithm(algorithm: str) -> None:
    a = auth(algorithms=(algorithm,))
    result = a.verify(register(answer(a, T0)), lookup, T0 + 1)
    assert result.ok and result.username == "kiosk-17" and result.algorithm == algorithm
    assert result.reason == AuthReason.OK


def test_no_credentials_and_foreign_schemes_ask_for_a_challenge() -> None:
    a = auth()
    for headers in (None, "NoOneKnowsThisScheme opaque-data=here", "Basic a2lvc2s6cw=="):
        result = a.verify(register(headers), lookup, T0)
        assert result.reason == AuthReason.NO_CREDENTIALS and result.needs_challenge


def test_credentials_for_another_realm_are_ignored() -> None:
    a = auth()
    other = DigestAuthenticator("other.example", SECRET)
    theirs = authorization_for(other.challenge(T0)[0], "REGISTER", "sip:gw.example.org",
                               "kiosk-17", "s3cret", "c", 1)
    assert a.verify(register(theirs), lookup, T0).reason == AuthReason.NO_CREDENTIALS
    # RFC 3261 22.3: several Authorization headers, one per realm.
    assert a.verify(register([theirs, answer(a, T0)]), lookup, T0).ok


# Nonces -------------------------------------------------------------------------------


def test_nonce_expires_into_stale() -> None:
    a = auth(nonce_ttl=300)
    header = answer(a, T0)
    assert a.verify(register(header), lookup, T0 + 299).ok
    result = a.verify(register(answer(a, T0, nc=2)), lookup, T0 + 301)
    assert (result.ok, result.stale, result.reason) == (False, True, AuthReason.STALE_NONCE)


def test_stale_only_with_the_right_password() -> None:
    a = auth(nonce_ttl=300)
    header = answer(a, T0, password="guess")
    result = a.verify(register(header), lookup, T0 + 1000)
    assert (result.stale, result.reason) == (False, AuthReason.WRONG_RESPONSE)
    assert result.bad_credentials


def test_nonce_from_the_future_is_refused() -> None:
    a = auth(clock_skew=30)
    header = answer(a, T0 + 100)
    result = a.verify(register(header), lookup, T0)
    assert result.stale and not result.ok
    assert a.verify(register(answer(a, T0 + 10)), lookup, T0).ok  # within the skew


def test_nodes_sharing_the_secret_accept_each_others_nonces() -> None:
    node1, node2 = auth(), auth()
    stranger = DigestAuthenticator(REALM, b"another secret, another gateway")
    header = answer(node1, T0)
    assert node2.verify(register(header), lookup, T0 + 5).ok
    result = stranger.verify(register(header), lookup, T0 + 5)
    assert result.stale and result.reason == AuthReason.STALE_NONCE


def test_tampered_nonce_is_not_valid() -> None:
    a = auth()
    _, p = parse_auth_header(a.challenge(T0)[0])
    nonce = p["nonce"]
    forged = ("A" if nonce[0] != "A" else "B") + nonce[1:]  # changes the timestamp
    assert a.nonce_state(nonce, T0) == "valid"
    assert a.nonce_state(forged, T0) == "invalid"
    assert a.nonce_state("short", T0) == "invalid"
    assert a.nonce_state("!" * 43, T0) == "invalid"
    assert a.nonce_state(nonce, T0 + 301) == "stale"


def test_nonce_count_increasing_is_accepted_and_replays_are_not() -> None:
    a = auth()
    challenge = a.challenge(T0)[0]
    for nc in (1, 2, 3, 10):
        assert a.verify(register(answer(a, T0, nc=nc, challenge=challenge)), lookup, T0).ok
    replay = a.verify(register(answer(a, T0, nc=3, challenge=challenge)), lookup, T0)
    assert (replay.ok, replay.stale, replay.reason) == (False, True, AuthReason.REPLAY)
    # Reordered requests (UDP) still pass once inside the window.
    assert a.verify(register(answer(a, T0, nc=7, challenge=challenge)), lookup, T0).ok
    assert not a.verify(register(answer(a, T0, nc=7, challenge=challenge)), lookup, T0).ok
    # Far behind the highest count: refused.
    assert a.verify(register(answer(a, T0, nc=100, challenge=challenge)), lookup, T0).ok
    assert not a.verify(register(answer(a, T0, nc=20, challenge=challenge)), lookup, T0).ok


def test_nonce_count_tracking_can_be_disabled_and_is_bounded() -> None:
    a = auth(track_nc=False)
    header = answer(a, T0)
    assert a.verify(register(header), lookup, T0).ok
    assert a.verify(register(header), lookup, T0).ok

    b = auth(max_tracked_nonces=50)
    for i in range(500):
        assert b.verify(register(answer(b, T0 + i * 0.01)), lookup, T0 + 5).ok
    assert b.tracked_nonces <= 50


# Refusals -----------------------------------------------------------------------------


def test_unknown_user_looks_like_a_wrong_password() -> None:
    a = auth()
    unknown = a.verify(register(answer(a, T0, user="nobody")), lookup, T0)
    wrong = a.verify(register(answer(a, T0, password="guess")), lookup, T0)
    assert unknown.reason == AuthReason.UNKNOWN_USER and unknown.username == "nobody"
    assert wrong.reason == AuthReason.WRONG_RESPONSE
    for r in (unknown, wrong):
        assert not r.ok and not r.stale and r.bad_credentials and not r.needs_challenge


def test_uri_must_match_the_request() -> None:
    a = auth()
    header = answer(a, T0, uri="sip:other.example.org")
    assert a.verify(register(header), lookup, T0).reason == AuthReason.URI_MISMATCH
    # Equal under RFC 3261 19.1.4 (host case) is fine.
    header = answer(a, T0, uri="sip:GW.example.org")
    assert a.verify(register(header), lookup, T0).ok


def test_same_uri() -> None:
    assert same_uri("sip:a@Example.COM;transport=udp", "sip:a@example.com;Transport=UDP")
    assert not same_uri("sip:a@example.com", "sip:A@example.com")
    assert not same_uri("sip:a@example.com", "sip:a@example.com:5060")
    assert not same_uri("sip:a@example.com", "sip:a@example.com;transport=tcp")
    assert same_uri("sip:a@example.com", "sip:a@example.com;foo=bar")
    assert not same_uri("sip:a@example.com", "sips:a@example.com")
    assert not same_uri("/dir/index.html", "/dir/index.htm")


def test_algorithm_and_qop_must_be_ones_we_offered() -> None:
    a = auth(algorithms=("SHA-256",))
    md5_only = DigestAuthenticator(REALM, SECRET, algorithms=("MD5",))
    header = answer(md5_only, T0)
    result = a.verify(register(header), lookup, T0)
    assert result.reason == AuthReason.UNSUPPORTED_ALGORITHM and result.needs_challenge

    b = auth()
    ch = b.challenge(T0)[1].replace('qop="auth"', 'qop="auth-int"')
    result = b.verify(register(answer(b, T0, challenge=ch)), lookup, T0)
    assert result.reason == AuthReason.BAD_QOP

    legacy = b.challenge(T0)[1].replace(', qop="auth"', "")
    header = answer(b, T0, challenge=legacy)
    assert "qop" not in parse_auth_header(header)[1]
    assert b.verify(register(header), lookup, T0).reason == AuthReason.BAD_QOP
    lenient = auth(require_qop=False)
    assert lenient.verify(register(header), lookup, T0).ok  # RFC 2069 client


def test_algorithm_absent_means_md5() -> None:
    a = auth()
    header = answer(a, T0, index=1).replace(", algorithm=MD5", "")
    assert "algorithm" not in header
    assert a.verify(register(header), lookup, T0).ok


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h: h.replace('response="', 'responsx="'),
        lambda h: h.replace("nc=00000001", "nc=1"),
        lambda h: h.replace("nc=00000001", "nc=00000000"),
        lambda h: h.replace('cnonce="0a4f113b"', 'cnonce=""'),
        lambda h: h.replace('username="kiosk-17"', 'username=""'),
        lambda h: h + ', userhash=true',
        lambda h: h.replace('uri="sip:gw.example.org"', 'uri="sip:gw.example.org'),
        lambda h: h + ', nc=00000002',
    ],
)
def test_malformed_credentials(mutate: object) -> None:
    a = auth()
    header = mutate(answer(a, T0))  # type: ignore[operator]
    assert a.verify(register(header), lookup, T0).reason == AuthReason.MALFORMED


def test_username_star_rfc7616() -> None:
    a = auth()
    users = {"kiosk-ü": Credential("kiosk-ü", password="s3cret")}
    header = answer(a, T0, user="kiosk-ü").replace(
        'username="kiosk-ü"', "username*=UTF-8''kiosk-%C3%BC"
    )
    result = a.verify(register(header), users.get, T0)
    assert result.ok and result.username == "kiosk-ü"


def test_user_without_hash_for_the_chosen_algorithm() -> None:
    a = auth()
    md5_only = {"kiosk-17": Credential("kiosk-17", ha1={
        "MD5": compute_ha1("MD5", "kiosk-17", REALM, "s3cret")})}
    result = a.verify(register(answer(a, T0, index=0)), md5_only.get, T0)
    assert result.reason == AuthReason.MISSING_HA1 and result.needs_challenge
    assert a.verify(register(answer(a, T0, index=1)), md5_only.get, T0).ok


# Parsing -------------------------------------------------------------------------------


def test_parse_auth_header() -> None:
    scheme, p = parse_auth_header(
        'Digest  Username="a\\"b", REALM = "x, y",\tnonce="n",qop=auth, nc=00000001 ,'
        ' uri="sip:a@b;c=d,e"'
    )
    assert scheme == "Digest"
    assert p == {"username": 'a"b', "realm": "x, y", "nonce": "n", "qop": "auth",
                 "nc": "00000001", "uri": "sip:a@b;c=d,e"}
    for bad in ('Digest realm="x", realm="y"', 'Digest realm="x', "Digest realm", "",
                'Digest realm="x" nonce="y"'):
        with pytest.raises(ValueError):
            parse_auth_header(bad)
    assert parse_auth_header("NoOneKnowsThisScheme opaque-data=here") == (
        "NoOneKnowsThisScheme", {"opaque-data": "here"})


def test_select_challenge_prefers_the_strongest() -> None:
    a = auth(algorithms=("MD5", "SHA-256"))
    values = ["Basic realm=x", *a.challenge(T0)]
    assert "SHA-256" in (select_challenge(values) or "")
    assert select_challenge(["Basic realm=x", 'Digest realm="r", nonce="n", algorithm=FOO']) is None


def test_client_refuses_what_it_cannot_answer() -> None:
    with pytest.raises(ValueError):
        authorization_for("Basic realm=x", "REGISTER", "sip:x", "u", "p", "c", 1)
    with pytest.raises(ValueError):
        authorization_for('Digest realm="r", nonce="n", algorithm=SHA-1', "REGISTER", "sip:x",
                          "u", "p", "c", 1)
    with pytest.raises(ValueError):
        authorization_for('Digest realm="r", nonce="n", qop="auth-conf"', "REGISTER", "sip:x",
                          "u", "p", "c", 1)


# Exchanges shaped as real clients send them ---------------------------------------------

REGISTER_TEMPLATE = (
    "REGISTER sip:gw.example.org SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK{branch};rport\r\n"
    "Contact: <sip:kiosk-17@192.168.1.50:5060;transport=udp>;expires=3600\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:kiosk-17@gw.example.org>\r\n"
    "From: <sip:kiosk-17@gw.example.org>;tag=9ae1dd2bc1b0b4ec\r\n"
    "Call-ID: 5cf9d5e8b06e8d4b\r\n"
    "CSeq: {cseq} REGISTER\r\n"
    "User-Agent: {ua}\r\n"
    "{auth}"
    "Content-Length: 0\r\n\r\n"
)


def _hex(alg: str, s: str) -> str:
    return hashlib.new({"MD5": "md5", "SHA-256": "sha256"}[alg], s.encode()).hexdigest()


def _expected_response(alg: str, nonce: str, cnonce: str, nc: str, uri: str) -> str:
    ha1 = _hex(alg, f"kiosk-17:{REALM}:s3cret")
    ha2 = _hex(alg, f"REGISTER:{uri}")
    return _hex(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


@pytest.mark.parametrize("client", ["baresip", "sipp"])
def test_register_401_register_exchange(client: str) -> None:
    a = auth()
    first = parse_datagram(
        REGISTER_TEMPLATE.format(branch="1a", cseq=1, ua=client, auth="").encode()
    )
    assert isinstance(first, Request)
    result = a.verify(first, lookup, T0)
    assert result.needs_challenge
    resp = make_response(first, 401, to_tag="x1",
                         extra=[("WWW-Authenticate", v) for v in a.challenge(T0, result.stale)])
    wire = parse_datagram(resp.to_bytes())
    challenges = wire.headers.get_all("WWW-Authenticate")
    assert len(challenges) == 2

    uri = "sip:gw.example.org"
    if client == "baresip":
        # libre answers the first challenge it supports, ", "-separated.
        _, p = parse_auth_header(challenges[0])
        assert p["algorithm"] == "SHA-256"
        cnonce, nc = "3c2f9a8e7d6b5a41", "00000001"
        header = (
            f'Digest username="kiosk-17", realm="{p["realm"]}", nonce="{p["nonce"]}", '
            f'uri="{uri}", response="{_expected_response("SHA-256", p["nonce"], cnonce, nc, uri)}"'
            f', cnonce="{cnonce}", qop=auth, nc={nc}, algorithm=SHA-256'
        )
    else:
        # SIPp's [authentication] keyword: MD5, no spaces after the commas.
        _, p = next(
            (s, q) for s, q in map(parse_auth_header, challenges) if q["algorithm"] == "MD5"
        )
        cnonce, nc = "6b8b4567", "00000001"
        header = (
            f'Digest username="kiosk-17",realm="{p["realm"]}",cnonce="{cnonce}",nc={nc},'
            f'qop=auth,uri="{uri}",nonce="{p["nonce"]}",'
            f'response="{_expected_response("MD5", p["nonce"], cnonce, nc, uri)}",algorithm=MD5'
        )
    second = parse_datagram(
        REGISTER_TEMPLATE.format(
            branch="2b", cseq=2, ua=client, auth=f"Authorization: {header}\r\n"
        ).encode()
    )
    assert isinstance(second, Request)
    result = a.verify(second, lookup, T0 + 0.2)
    assert result.ok and result.username == "kiosk-17"
    assert result.algorithm == ("SHA-256" if client == "baresip" else "MD5")

    # Our own client helper produces a header the server accepts too.
    ours = authorization_for(select_challenge(challenges) or "", "REGISTER", uri,
                             "kiosk-17", "s3cret", "abcdef", 2)
    third = parse_datagram(REGISTER_TEMPLATE.format(
        branch="3c", cseq=3, ua=client, auth=f"Authorization: {ours}\r\n").encode())
    assert isinstance(third, Request)
    assert a.verify(third, lookup, T0 + 0.4).ok


def test_qop_is_hashed_as_the_client_spelled_it() -> None:
    a = auth()
    _, ch = parse_auth_header(a.challenge(T0)[1])
    ha1 = compute_ha1("MD5", "kiosk-17", REALM, "s3cret")
    response = digest_response("MD5", ha1, ch["nonce"], "REGISTER", "sip:gw.example.org",
                               qop="AUTH", nc="0000000A", cnonce="x")
    header = (f'Digest username="kiosk-17", realm="{REALM}", nonce="{ch["nonce"]}", '
              f'uri="sip:gw.example.org", response="{response.upper()}", algorithm=md5, '
              f'qop=AUTH, nc=0000000A, cnonce="x"')
    result = a.verify(register(header), lookup, T0)
    assert result.ok and result.algorithm == "MD5"
