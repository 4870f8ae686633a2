"""Tests for gateway.sip.sdp: parsing, serialization, helpers and RFC 3264 offer/answer."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.sdp import (
    Attribute,
    Capabilities,
    Codec,
    CodecCap,
    Crypto,
    Direction,
    H264ProfileLevelId,
    KeyParam,
    MediaCaps,
    MediaDescription,
    Origin,
    RtcpAttr,
    SdpError,
    SessionDescription,
    Ssrc,
    SsrcGroup,
    apply_answer,
    bump_version,
    create_offer,
    negotiate,
    parse,
    parse_fmtp,
)


def crlf(text: str) -> str:
    return text.replace("\n", "\r\n")


# --------------------------------------------------------------------------- samples

CHROME_OFFER = """\
v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 5f3d1a9e-2c4b-4f8e-9d7a-1b2c3d4e5f60
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Ab3x
a=ice-pwd:q0Vn1bG7s3kLm9pQr2tUv4wX
a=ice-options:trickle
a=fingerprint:sha-256 3C:4F:1A:9B:2E:7D:8C:0F:5A:6B:1C:2D:3E:4F:50:61:72:83:94:A5:B6:C7:D8:E9:FA:0B:1C:2D:3E:4F:50:61
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:5f3d1a9e-2c4b-4f8e-9d7a-1b2c3d4e5f60 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3735928559 cname:y2Vt0K3b9cQkLx8s
a=ssrc:3735928559 msid:5f3d1a9e-2c4b-4f8e-9d7a-1b2c3d4e5f60 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 45 46 98 99 112 113 116 117 118
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Ab3x
a=ice-pwd:q0Vn1bG7s3kLm9pQr2tUv4wX
a=ice-options:trickle
a=fingerprint:sha-256 3C:4F:1A:9B:2E:7D:8C:0F:5A:6B:1C:2D:3E:4F:50:61:72:83:94:A5:B6:C7:D8:E9:FA:0B:1C:2D:3E:4F:50:61
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendrecv
a=msid:5f3d1a9e-2c4b-4f8e-9d7a-1b2c3d4e5f60 7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 goog-remb
a=rtcp-fb:104 transport-cc
a=rtcp-fb:104 ccm fir
a=rtcp-fb:104 nack
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:105 rtx/90000
a=fmtp:105 apt=104
a=rtpmap:106 H264/90000
a=rtcp-fb:106 goog-remb
a=rtcp-fb:106 transport-cc
a=rtcp-fb:106 ccm fir
a=rtcp-fb:106 nack
a=rtcp-fb:106 nack pli
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=106
a=rtpmap:108 H264/90000
a=rtcp-fb:108 goog-remb
a=rtcp-fb:108 transport-cc
a=rtcp-fb:108 ccm fir
a=rtcp-fb:108 nack
a=rtcp-fb:108 nack pli
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
a=rtpmap:127 H264/90000
a=rtcp-fb:127 goog-remb
a=rtcp-fb:127 transport-cc
a=rtcp-fb:127 ccm fir
a=rtcp-fb:127 nack
a=rtcp-fb:127 nack pli
a=fmtp:127 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
a=rtpmap:125 rtx/90000
a=fmtp:125 apt=127
a=rtpmap:39 H264/90000
a=rtcp-fb:39 goog-remb
a=rtcp-fb:39 transport-cc
a=rtcp-fb:39 ccm fir
a=rtcp-fb:39 nack
a=rtcp-fb:39 nack pli
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f
a=rtpmap:40 rtx/90000
a=fmtp:40 apt=39
a=rtpmap:45 AV1/90000
a=rtcp-fb:45 goog-remb
a=rtcp-fb:45 transport-cc
a=rtcp-fb:45 ccm fir
a=rtcp-fb:45 nack
a=rtcp-fb:45 nack pli
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:112 H264/90000
a=rtcp-fb:112 goog-remb
a=rtcp-fb:112 transport-cc
a=rtcp-fb:112 ccm fir
a=rtcp-fb:112 nack
a=rtcp-fb:112 nack pli
a=fmtp:112 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f
a=rtpmap:113 rtx/90000
a=fmtp:113 apt=112
a=rtpmap:116 red/90000
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:118 ulpfec/90000
a=ssrc-group:FID 2882400001 2882400002
a=ssrc:2882400001 cname:y2Vt0K3b9cQkLx8s
a=ssrc:2882400001 msid:5f3d1a9e-2c4b-4f8e-9d7a-1b2c3d4e5f60 7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b
a=ssrc:2882400002 cname:y2Vt0K3b9cQkLx8s
a=ssrc:2882400002 msid:5f3d1a9e-2c4b-4f8e-9d7a-1b2c3d4e5f60 7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b
"""  # noqa: E501

BARESIP_OFFER = """\
v=0
o=- 1712403928 1712403928 IN IP4 192.168.1.20
s=-
c=IN IP4 192.168.1.20
t=0 0
a=tool:baresip 3.10.1
m=audio 10218 RTP/AVP 96 97 9 0 8 101
b=AS:128
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:97 G7221/16000
a=fmtp:97 bitrate=32000
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp-rsize
a=sendrecv
a=label:1
a=ssrc:1847263518 cname:c3a9b2d1-4e5f-4a6b-9c8d-7e6f5a4b3c2d
a=rtcp-mux
m=video 10220 RTP/AVPF 98 99
b=AS:1000
a=rtpmap:98 H264/90000
a=fmtp:98 packetization-mode=0;profile-level-id=42c01f
a=rtpmap:99 VP8/90000
a=fmtp:99 max-fs=3600;max-fr=30
a=rtcp-fb:* nack pli
a=rtcp-fb:* ccm fir
a=rtcp-rsize
a=sendrecv
a=label:2
a=content:main
a=ssrc:2039485716 cname:c3a9b2d1-4e5f-4a6b-9c8d-7e6f5a4b3c2d
a=rtcp-mux
"""

BARESIP_SRTP_OFFER = """\
v=0
o=- 1939281636 1939281637 IN IP4 10.0.0.21
s=-
c=IN IP4 10.0.0.21
t=0 0
a=tool:baresip 3.10.1
m=audio 7066 RTP/SAVP 96 9 0 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 stereo=1;sprop-stereo=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=rtcp-rsize
a=crypto:1 AEAD_AES_256_GCM inline:b3qFkJumsbzH0t3o8/4JFB8qNUBLVmFsd4KNmKOuucTP2uXw+wYRHCcyPUg=
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:JTA7RlFcZ3J9iJOeqbS/ytXg6/YBDBciLThDTllk
a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:SlVga3aBjJeirbjDztnk7/oFEBsmMTxHUl1oc36J
a=crypto:4 AEAD_AES_128_GCM inline:lJ+qtcDL1uHs9wINGCMuOURPWmVwe4aRnKeyvQ==
a=ssrc:592837465 cname:1d2e3f4a-5b6c-4d7e-8f90-a1b2c3d4e5f6
"""

POLYCOM_OFFER = """\
v=0
o=- 1618295745 1618295745 IN IP4 10.0.0.50
s=Polycom IP Phone
c=IN IP4 10.0.0.50
t=0 0
a=sendrecv
m=audio 2222 RTP/AVP 9 102 0 8 18 127
a=rtpmap:9 G722/8000
a=rtpmap:102 G7221/16000
a=fmtp:102 bitrate=32000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:127 telephone-event/8000
"""

CISCO_VIDEO_OFFER = """\
v=0
o=tandberg 7 3 IN IP4 198.51.100.30
s=-
c=IN IP4 198.51.100.30
b=AS:2048
t=0 0
m=audio 2336 RTP/AVP 108 9 0 8 101
b=TIAS:64000
a=rtpmap:108 MP4A-LATM/90000
a=fmtp:108 profile-level-id=24;object=23;bitrate=64000
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=rtcp:2337 IN IP4 198.51.100.30
m=video 2338 RTP/AVPF 97 126
b=TIAS:1920000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=428016;max-br=5000;max-mbps=245000;max-fs=9000;packetization-mode=1;sprop-parameter-sets=Z0IAH5WoFAFuQA==,aM48gA==
a=rtpmap:126 H264/90000
a=fmtp:126 profile-level-id=428016;max-br=5000;max-mbps=245000;max-fs=9000
a=rtcp-fb:* nack pli
a=rtcp-fb:* ccm fir
a=rtcp-fb:* ccm tmmbr
a=sendrecv
a=content:main
a=label:11
a=rtcp:2339 IN IP4 198.51.100.30
"""  # noqa: E501

SIPP_OFFER = """\
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

# Every session-level line type, multicast c= with TTL, repeated media-level c=.
FULL_SESSION = """\
v=0
o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1
s=Call to John Smith
i=SDP Offer #1
u=http://www.jdoe.example.com/home.html
e=Jane Doe <jane@jdoe.example.com>
e=john@example.com
p=+1 617 555-6011
c=IN IP4 198.51.100.1
b=AS:256
b=TIAS:256000
t=2873397496 2873404696
r=604800 3600 0 90000
r=7d 1h 0 25h
t=0 0
z=2882844526 -1h 2898848070 0
k=prompt
a=recvonly
a=x-vendor:some thing
a=tool
m=audio 49170 RTP/AVP 0
i=main audio
c=IN IP4 224.2.17.12/127
b=AS:64
b=TIAS:64000
k=prompt
a=x-first
a=ptime:20
a=x-second:
m=video 51372/2 RTP/AVP 99
c=IN IP6 ff15::101/3
c=IN IP6 ff15::105/3
a=rtpmap:99 h263-1998/90000
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
a=sctp-port:5000
"""

SAMPLES = {
    "chrome": CHROME_OFFER,
    "baresip": BARESIP_OFFER,
    "baresip-srtp": BARESIP_SRTP_OFFER,
    "polycom": POLYCOM_OFFER,
    "cisco": CISCO_VIDEO_OFFER,
    "sipp": SIPP_OFFER,
    "full": FULL_SESSION,
}

GW = "192.0.2.10"
ORIGIN = Origin("gateway", "42", 1, "IN", "IP4", GW)


def counting_bytes(n: int) -> bytes:
    return bytes(range(n))


KEY30 = base64.b64encode(bytes(range(30))).decode()
KEY28 = base64.b64encode(bytes(range(28))).decode()


def ports(index: int, kind: str) -> int:
    return 40000 + 2 * index


def audio_caps(**kw: object) -> MediaCaps:
    caps = MediaCaps(
        [
            CodecCap("G722", 8000),
            CodecCap("PCMU", 8000),
            CodecCap("PCMA", 8000),
            CodecCap("telephone-event", 8000),
        ]
    )
    for k, v in kw.items():
        setattr(caps, k, v)
    return caps


def h264(pli: str = "42e01f", mode: str = "1", **extra: str) -> CodecCap:
    return CodecCap(
        "H264", 90000, fmtp={"profile-level-id": pli, "packetization-mode": mode, **extra}
    )


def answer_to(offer: str | SessionDescription, caps: Capabilities, **kw: object) -> str:
    sdp = parse(offer) if isinstance(offer, str) else offer
    return str(negotiate(sdp, caps, origin=ORIGIN, address=GW, ports=ports, **kw))  # type: ignore[arg-type]


def offer_from(*media: str, session: str = "") -> SessionDescription:
    head = f"v=0\no=- 1 1 IN IP4 203.0.113.5\ns=-\nc=IN IP4 203.0.113.5\nt=0 0\n{session}"
    return parse(head + "".join(media))


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_round_trip_exact(name: str) -> None:
    text = crlf(SAMPLES[name])
    assert str(parse(text)) == text
    assert parse(text).encode() == text.encode()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_lf_and_crlf_and_bytes_agree(name: str) -> None:
    lf = SAMPLES[name]
    assert parse(lf) == parse(crlf(lf)) == parse(crlf(lf).encode())
    assert str(parse(lf)) == crlf(lf)


def test_session_level_fields() -> None:
    sdp = parse(FULL_SESSION)
    assert sdp.origin == Origin("jdoe", "3724394400", 3724394405, "IN", "IP4", "198.51.100.1")
    assert sdp.session_name == "Call to John Smith"
    assert sdp.information == "SDP Offer #1"
    assert sdp.uri == "http://www.jdoe.example.com/home.html"
    assert sdp.emails == ["Jane Doe <jane@jdoe.example.com>", "john@example.com"]
    assert sdp.phones == ["+1 617 555-6011"]
    assert sdp.bandwidth("AS") == 256
    assert sdp.bandwidth("TIAS") == 256000
    assert [(t.start, t.stop, t.repeats) for t in sdp.times] == [
        (2873397496, 2873404696, ["604800 3600 0 90000", "7d 1h 0 25h"]),
        (0, 0, []),
    ]
    assert sdp.zone == "2882844526 -1h 2898848070 0"
    assert sdp.key == "prompt"
    assert sdp.direction is Direction.RECVONLY
    assert sdp.attributes == [
        Attribute("recvonly"), Attribute("x-vendor", "some thing"), Attribute("tool")
    ]


def test_media_level_fields_and_connection_override() -> None:
    sdp = parse(FULL_SESSION)
    audio, video, app = sdp.media
    assert (audio.kind, audio.port, audio.port_count, audio.proto, audio.formats) == (
        "audio", 49170, None, "RTP/AVP", ["0"]
    )
    assert audio.title == "main audio"
    assert audio.key == "prompt"
    assert audio.bandwidth("AS") == 64 and audio.bandwidth("tias") == 64000
    # Unknown attributes keep their order and the difference between "a=x" and "a=x:".
    assert audio.attributes == [
        Attribute("x-first"), Attribute("ptime", "20"), Attribute("x-second", "")
    ]
    conn = sdp.connection_for(audio)
    assert conn is not None and conn.address == "224.2.17.12/127" and conn.host == "224.2.17.12"
    assert (video.port, video.port_count) == (51372, 2)
    assert [c.address for c in video.connections] == ["ff15::101/3", "ff15::105/3"]
    assert sdp.connection_for(app) == sdp.connection
    assert app.proto == "UDP/DTLS/SCTP" and app.formats == ["webrtc-datachannel"]
    assert sdp.media_direction(audio) is Direction.RECVONLY  # session-level default


def test_tolerated_deviations() -> None:
    # Blank lines, a missing t=, trailing spaces in structured lines, out-of-order lines.
    sdp = parse("v=0\n\no=- 1 2 IN IP4 h \na=x\ns=-\nc=IN IP4  10.0.0.1\nm=audio 5 RTP/AVP 0 \n")
    assert sdp.times == [] and sdp.connection is not None
    assert sdp.connection.address == "10.0.0.1"
    assert sdp.media[0].formats == ["0"]
    assert parse(str(sdp)) == sdp


# --------------------------------------------------------------------------- errors

BAD = [
    ("", None, "empty description"),
    ("\r\n\r\n", None, "empty description"),
    ("o=- 1 1 IN IP4 h\n", 1, "must start with v=0"),
    ("v=1\n", 1, "unsupported SDP version"),
    ("v=0\nv=0\n", 2, "repeated v="),
    ("v=0\ns=-\n", None, "missing o="),
    ("v=0\no=- 1 1 IN IP4 h\n", None, "missing s="),
    ("v=0\no=- 1 1 IN IP4\ns=-\n", 2, "o= needs"),
    ("v=0\no=- 1 x IN IP4 h\ns=-\n", 2, "sess-version must be a decimal number"),
    ("v=0\no=- 1 1 IN IP4 h\no=- 1 1 IN IP4 h\ns=-\n", 3, "repeated o="),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\ns=x\n", 4, "repeated s="),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nx=foo\n", 4, "unknown line type x="),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nfoo\n", 4, "expected '<letter>=<value>'"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nA=foo\n", 4, "expected '<letter>=<value>'"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\na =foo\n", 4, "expected '<letter>=<value>'"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nc=IN IP4\n", 4, "c= needs"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nb=AS\n", 4, "b= must be"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nb=AS:fast\n", 4, "bandwidth must be a decimal number"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nt=0\n", 4, "t= needs"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nr=1 2 3\n", 4, "r= must follow a t="),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\na=\n", 4, "without an attribute name"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\na=:x\n", 4, "without an attribute name"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1\n", 4, "m= needs"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 70000 RTP/AVP 0\n", 4, "out of range"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1/0 RTP/AVP 0\n", 4, "port count"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio \u0661\u0662 RTP/AVP 0\n", 4, "decimal number"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1_0 RTP/AVP 0\n", 4, "decimal number"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\no=- 1 1 IN IP4 h\n", 5, "not allowed"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\nt=0 0\n", 5, "not allowed in a media"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\ni=a\ni=b\n", 6, "repeated i="),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nm=audio 1 RTP/AVP 0\nk=a\nk=b\n", 6, "repeated k="),
    ("v=0\ro=- 1 1 IN IP4 h\ns=-\n", 1, "stray CR"),
    ("v=0\no=- 1 1 IN IP4 h\ns=\x00\n", 3, "NUL"),
    ("v=0\no=- 1 1 IN IP4 h\ns=-\nt=1 " + "9" * 30 + "\n", 4, "decimal number"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), BAD)
def test_bad_sdp_raises_sdp_error(text: str, line: int | None, fragment: str) -> None:
    with pytest.raises(SdpError) as info:
        parse(text)
    assert fragment in str(info.value)
    assert info.value.line == line
    if line is not None:
        assert str(info.value).startswith(f"line {line}: ")
    assert isinstance(info.value, ValueError)


def test_bad_encoding_and_type() -> None:
    with pytest.raises(SdpError, match="not UTF-8"):
        parse(b"v=0\r\ns=\xff\r\n")
    with pytest.raises(SdpError, match="UTF-8"):
        parse("v=0\ns=\ud800\n")
    with pytest.raises(SdpError, match="expected str or bytes"):
        parse(42)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- helpers


def test_codecs_rtpmap_and_static_payload_types() -> None:
    sdp = offer_from("m=audio 5000 RTP/AVP 0 8 9 18 3 96 101 99\n"
                     "a=rtpmap:96 opus/48000/2\n"
                     "a=rtpmap:101 telephone-event/8000\n"
                     "a=fmtp:101 0-16\n")
    m = sdp.media[0]
    assert [(c.payload_type, c.name, c.clock_rate, c.channels) for c in m.codecs()] == [
        (0, "PCMU", 8000, 1),
        (8, "PCMA", 8000, 1),
        (9, "G722", 8000, 1),
        (18, "G729", 8000, 1),
        (3, "GSM", 8000, 1),
        (96, "opus", 48000, 2),
        (101, "telephone-event", 8000, 1),
    ]  # 99 has no rtpmap and is not static: skipped
    assert m.payload_types() == [0, 8, 9, 18, 3, 96, 101, 99]
    rtpmap = m.rtpmap(96)
    assert rtpmap is not None and (rtpmap.encoding, rtpmap.clock_rate, rtpmap.channels) == (
        "opus", 48000, 2
    )
    static = m.rtpmap(0)
    assert static is not None and str(static) == "0 PCMU/8000"
    assert m.rtpmap(99) is None
    assert m.fmtp(101) == {"0-16": ""}
    assert m.fmtp_raw(101) == "0-16"
    te = m.codec(101)
    assert te is not None and te.is_associated


def test_fmtp_h264_parameters() -> None:
    sdp = parse(CISCO_VIDEO_OFFER)
    params = sdp.media[1].fmtp(97)
    assert list(params) == [
        "profile-level-id", "max-br", "max-mbps", "max-fs", "packetization-mode",
        "sprop-parameter-sets",
    ]
    assert params["sprop-parameter-sets"] == "Z0IAH5WoFAFuQA==,aM48gA=="
    assert params["packetization-mode"] == "1"
    codec = sdp.media[1].codec(97)
    assert codec is not None and codec.param("Profile-Level-Id") == "428016"
    assert parse_fmtp(" a=1 ; b ;;c=x=y ") == {"a": "1", "b": "", "c": "x=y"}


def test_rtcp_fb_with_wildcard() -> None:
    m = parse(CISCO_VIDEO_OFFER).media[1]
    assert m.rtcp_fb(97) == ["nack pli", "ccm fir", "ccm tmmbr"]
    chrome = parse(CHROME_OFFER).media[1]
    assert chrome.rtcp_fb(96) == ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
    assert chrome.rtcp_fb(97) == []
    mixed = offer_from("m=video 1 RTP/AVPF 96 97\na=rtcp-fb:*  nack\na=rtcp-fb:96 ccm   fir\n")
    assert mixed.media[0].rtcp_fb(96) == ["nack", "ccm fir"]
    assert mixed.media[0].rtcp_fb(97) == ["nack"]


def test_direction_rtcp_mux_mid() -> None:
    chrome = parse(CHROME_OFFER)
    audio = chrome.media[0]
    assert audio.direction() is Direction.SENDRECV
    assert audio.rtcp == RtcpAttr(9, "IN", "IP4", "0.0.0.0")
    assert audio.rtcp_mux and audio.mid == "0"
    sdp = offer_from("m=audio 1 RTP/AVP 0\na=rtcp:53020\nm=audio 3 RTP/AVP 0\na=inactive\n",
                     session="a=sendonly\n")
    first, second = sdp.media
    assert first.rtcp == RtcpAttr(53020) and str(first.rtcp) == "53020"
    assert not first.rtcp_mux and first.mid is None
    assert first.direction() is Direction.SENDRECV
    assert sdp.media_direction(first) is Direction.SENDONLY
    assert sdp.media_direction(second) is Direction.INACTIVE
    second.set_direction(Direction.RECVONLY)
    assert [a.name for a in second.attributes] == ["recvonly"]
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.SENDRECV & Direction.RECVONLY is Direction.RECVONLY


def test_ssrc_lines() -> None:
    video = parse(CHROME_OFFER).media[1]
    assert video.ssrc_groups() == [SsrcGroup("FID", (2882400001, 2882400002))]
    ssrcs = video.ssrcs()
    assert ssrcs[0] == Ssrc(2882400001, "cname", "y2Vt0K3b9cQkLx8s")
    assert ssrcs[1].value == (
        "5f3d1a9e-2c4b-4f8e-9d7a-1b2c3d4e5f60 7e8f9a0b-1c2d-4e3f-8a5b-6c7d8e9f0a1b"
    )
    assert len(ssrcs) == 4


def test_crypto_lines() -> None:
    m = parse(BARESIP_SRTP_OFFER).media[0]
    cryptos = m.crypto()
    assert [(c.tag, c.suite) for c in cryptos] == [
        (1, "AEAD_AES_256_GCM"),
        (2, "AES_CM_128_HMAC_SHA1_32"),
        (3, "AES_CM_128_HMAC_SHA1_80"),
        (4, "AEAD_AES_128_GCM"),
    ]
    assert len(cryptos[2].key_params[0].key_bytes()) == 30
    assert len(cryptos[3].key_params[0].key_bytes()) == 28
    line = (
        "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^20|1:4;inline:" + KEY30 + "|1:4"
        " KDR=1 UNENCRYPTED_SRTCP"
    )
    c = Crypto.parse(line)
    assert c.key_params == [
        KeyParam("inline", KEY30, "2^20", "1:4"), KeyParam("inline", KEY30, None, "1:4")
    ]
    assert c.session_params == ["KDR=1", "UNENCRYPTED_SRTCP"]
    assert str(c) == line
    assert str(Crypto.parse("7 F8_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^31")) == (
        "7 F8_128_HMAC_SHA1_80 inline:" + KEY30 + "|2^31"
    )


@pytest.mark.parametrize(
    ("attr", "call", "fragment"),
    [
        ("rtpmap:96 opus", lambda m: m.codecs(), "a=rtpmap must be"),
        ("rtpmap:300 x/8000", lambda m: m.rtpmaps(), "out of range"),
        ("rtpmap:96 x/0", lambda m: m.rtpmaps(), "clock rate"),
        ("rtpmap:96 x/8000/0", lambda m: m.rtpmaps(), "channels"),
        ("fmtp:", lambda m: m.fmtp(96), "needs a format"),
        ("rtcp-fb:96", lambda m: m.rtcp_fb(96), "a=rtcp-fb needs"),
        ("rtcp:x", lambda m: m.rtcp, "rtcp port"),
        ("rtcp:9 IN IP4", lambda m: m.rtcp, "a=rtcp must be"),
        ("ssrc:abc cname:x", lambda m: m.ssrcs(), "ssrc must be"),
        ("ssrc:1", lambda m: m.ssrcs(), "a=ssrc needs"),
        ("ssrc-group:FID 1 x", lambda m: m.ssrc_groups(), "ssrc must be"),
        ("crypto:1 AES_CM_128_HMAC_SHA1_80", lambda m: m.crypto(), "a=crypto needs"),
        ("crypto:x AES_CM_128_HMAC_SHA1_80 inline:a", lambda m: m.crypto(), "crypto tag"),
        ("crypto:1 AES_CM_128_HMAC_SHA1_80 inline", lambda m: m.crypto(), "method:info"),
        ("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:k|1|2|3", lambda m: m.crypto(), "bad inline"),
        ("crypto:1 AES_CM_128_HMAC_SHA1_80 inline:k|2^20|x:y", lambda m: m.crypto(), "MKI"),
    ],
)
def test_bad_attribute_values_raise_with_line(
    attr: str, call: Callable[[MediaDescription], object], fragment: str
) -> None:
    sdp = offer_from("m=video 1 RTP/AVP 96\n", f"a={attr}\n")
    with pytest.raises(SdpError, match=fragment) as info:
        call(sdp.media[0])
    assert info.value.line == 7


def test_bad_payload_type_in_m_line() -> None:
    sdp = offer_from("m=audio 1 RTP/AVP 0 x\n")
    with pytest.raises(SdpError, match="line 6: payload type"):
        sdp.media[0].payload_types()
    with pytest.raises(SdpError, match="not valid base64"):
        KeyParam("inline", "!!!!").key_bytes()


@pytest.mark.parametrize(
    ("proto", "rtp", "sdes", "feedback"),
    [
        ("RTP/AVP", True, False, False),
        ("RTP/AVPF", True, False, True),
        ("RTP/SAVP", True, True, False),
        ("RTP/SAVPF", True, True, True),
        ("UDP/TLS/RTP/SAVPF", True, False, True),
        ("udp", False, False, False),
    ],
)
def test_transports(proto: str, rtp: bool, sdes: bool, feedback: bool) -> None:
    m = MediaDescription("audio", 1, proto, ["0"])
    assert (m.is_rtp, m.is_sdes, m.uses_feedback) == (rtp, sdes, feedback)
    assert parse(str(offer_from(str(m)))).media[0].proto == proto


def test_h264_profile_level_id() -> None:
    p = H264ProfileLevelId.parse
    assert p("42e01f").profile == p("42c01f").profile == p("4d801f").profile
    assert p("42e01f").profile == "constrained-baseline"
    assert p("42001f").profile == p("428016").profile == "baseline"
    assert p("4d001f").profile == "main"
    assert p("64001f").profile == "high"
    assert p("640c1f").profile == "constrained-high"
    assert p("f4001f").profile == "f400"
    assert p(None) == p("420010")
    assert p("42f00b").is_level_1b and not p("42e00b").is_level_1b and p("640009").is_level_1b
    assert p("42e00a").level_rank < p("42f00b").level_rank < p("42e00b").level_rank
    assert str(p("64001f").with_level_of(p("42f00b"))) == "640009"
    assert str(p("42e01f").with_level_of(p("640009"))) == "42f00b"
    assert str(p("42f00b").with_level_of(p("42e00c"))) == "42e00c"
    with pytest.raises(SdpError, match="6 hex digits"):
        p("42e01")


def test_bump_version() -> None:
    sdp = parse(SIPP_OFFER)
    bumped = bump_version(sdp)
    assert bumped.origin.sess_version == 2353687638
    assert sdp.origin.sess_version == 2353687637
    assert str(bumped).replace("2353687638", "2353687637") == str(sdp)


def test_build_by_hand() -> None:
    m = MediaDescription("audio", 4000, "RTP/AVP", ["0"])
    m.add("rtpmap", "0 PCMU/8000")
    m.add("ptime", "20")
    m.set_direction(Direction.SENDONLY)
    m.set_bandwidth("AS", 80)
    sdp = SessionDescription(Origin.for_address("2001:db8::1", "7"), times=[], media=[m])
    assert str(sdp) == crlf(
        "v=0\no=- 7 1 IN IP6 2001:db8::1\ns=-\nm=audio 4000 RTP/AVP 0\nb=AS:80\n"
        "a=rtpmap:0 PCMU/8000\na=ptime:20\na=sendonly\n"
    )
    assert m.remove("ptime") == 1 and not m.has("ptime") and m.get("rtpmap") == "0 PCMU/8000"


# --------------------------------------------------------------------------- negotiation


def test_answer_polycom() -> None:
    caps = Capabilities({"audio": audio_caps()})
    assert answer_to(POLYCOM_OFFER, caps) == crlf(
        """\
v=0
o=gateway 42 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/AVP 9 0 8 127
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:127 telephone-event/8000
a=sendrecv
"""
    )


def test_answer_sipp_and_local_order_and_max_codecs() -> None:
    caps = Capabilities({"audio": audio_caps()})
    assert "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n" in answer_to(
        SIPP_OFFER, caps
    )
    offer = offer_from("m=audio 1 RTP/AVP 8 0 9 101\na=rtpmap:101 telephone-event/8000\n")
    assert "RTP/AVP 8 0 9 101\r\n" in answer_to(offer, caps)
    caps.media["audio"].prefer_local_order = True
    assert "RTP/AVP 9 0 8 101\r\n" in answer_to(offer, caps)
    caps.media["audio"].max_codecs = 1
    assert "RTP/AVP 9 101\r\n" in answer_to(offer, caps)


def test_answer_keeps_offerer_payload_types() -> None:
    offer = offer_from(
        "m=audio 1 RTP/AVP 120 121\na=rtpmap:120 opus/48000/2\na=rtpmap:121 telephone-event/48000\n"
        "a=fmtp:121 0-16\n"
    )
    caps = Capabilities({"audio": MediaCaps([
        CodecCap("opus", 48000, 2, fmtp={"useinbandfec": "1"}, payload_type=111),
        CodecCap("telephone-event", 48000),
    ])})
    answer = answer_to(offer, caps)
    assert "m=audio 40000 RTP/AVP 120 121\r\n" in answer
    assert "a=rtpmap:120 opus/48000/2\r\na=fmtp:120 useinbandfec=1\r\n" in answer
    assert "a=rtpmap:121 telephone-event/48000\r\na=fmtp:121 0-16\r\n" in answer


def test_no_common_codec_rejects_with_port_zero() -> None:
    caps = Capabilities({"audio": MediaCaps([CodecCap("opus", 48000, 2)])})
    answer = answer_to(POLYCOM_OFFER, caps)
    assert "m=audio 0 RTP/AVP 9\r\n" in answer
    assert "a=rtpmap" not in answer


def test_channels_and_clock_rate_must_match() -> None:
    offer = offer_from(
        "m=audio 1 RTP/AVP 96 97\na=rtpmap:96 opus/48000/2\na=rtpmap:97 G722/16000\n"
    )
    mono = Capabilities({"audio": MediaCaps([CodecCap("opus", 48000), CodecCap("G722", 8000)])})
    assert "m=audio 0 RTP/AVP 96" in answer_to(offer, mono)
    stereo = Capabilities({"audio": MediaCaps([CodecCap("OPUS", 48000, 2)])})
    assert "m=audio 40000 RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n" in answer_to(offer, stereo)


def test_unknown_kinds_and_protos_rejected() -> None:
    offer = offer_from(
        "m=image 5000 udptl t38\na=T38FaxVersion:0\n",
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\na=mid:data\n",
        "m=audio 6000 TCP/RTP/AVP 0\n",
        "m=audio 7000 RTP/AVP 0\n",
    )
    answer = negotiate(offer, Capabilities({"audio": audio_caps()}), origin=ORIGIN, address=GW,
                       ports=ports)
    assert [str(m).splitlines()[0] for m in answer.media] == [
        "m=image 0 udptl t38",
        "m=application 0 UDP/DTLS/SCTP webrtc-datachannel",
        "m=audio 0 TCP/RTP/AVP 0",
        "m=audio 40006 RTP/AVP 0",
    ]
    assert answer.media[1].mid == "data"


def test_offered_port_zero_stays_rejected_and_local_port_zero_rejects() -> None:
    offer = offer_from("m=audio 0 RTP/AVP 0\n", "m=audio 1 RTP/AVP 8\n")
    caps = Capabilities({"audio": audio_caps()})
    answer = negotiate(offer, caps, origin=ORIGIN, address=GW, ports=ports)
    assert [(m.port, m.formats) for m in answer.media] == [(0, ["0"]), (40002, ["8"])]
    answer = negotiate(offer, caps, origin=ORIGIN, address=GW, ports={0: 1000, 1: 0})
    assert [m.port for m in answer.media] == [0, 0]
    with pytest.raises(ValueError, match="no local port"):
        negotiate(offer, caps, origin=ORIGIN, address=GW, ports={})


def test_duplicate_media_kind() -> None:
    offer = offer_from("m=audio 1 RTP/AVP 0\n", "m=audio 3 RTP/AVP 0\n", "m=video 5 RTP/AVP 96\n"
                       "a=rtpmap:96 VP8/90000\n")
    caps = Capabilities({"audio": audio_caps(), "video": MediaCaps([CodecCap("VP8", 90000)])})
    answer = negotiate(offer, caps, origin=ORIGIN, address=GW, ports=ports)
    assert [m.port for m in answer.media] == [40000, 0, 40004]
    caps.media["audio"].max_streams = 2
    answer = negotiate(offer, caps, origin=ORIGIN, address=GW, ports=ports)
    assert [m.port for m in answer.media] == [40000, 40002, 40004]
    # The first acceptable one wins: a rejected first m-line does not use up the slot.
    offer = offer_from("m=audio 1 RTP/AVP 3\n", "m=audio 3 RTP/AVP 0\n")
    caps.media["audio"].max_streams = 1
    answer = negotiate(offer, caps, origin=ORIGIN, address=GW, ports=ports)
    assert [m.port for m in answer.media] == [0, 40002]


@pytest.mark.parametrize(
    ("offered", "local", "expected"),
    [
        ("sendrecv", Direction.SENDRECV, "sendrecv"),
        ("sendonly", Direction.SENDRECV, "recvonly"),
        ("recvonly", Direction.SENDRECV, "sendonly"),
        ("inactive", Direction.SENDRECV, "inactive"),
        (None, Direction.SENDRECV, "sendrecv"),
        ("sendrecv", Direction.SENDONLY, "sendonly"),
        ("sendrecv", Direction.RECVONLY, "recvonly"),
        ("sendonly", Direction.SENDONLY, "inactive"),
        ("recvonly", Direction.INACTIVE, "inactive"),
    ],
)
def test_direction_answer(offered: str | None, local: Direction, expected: str) -> None:
    line = f"a={offered}\n" if offered else ""
    offer = offer_from("m=audio 1 RTP/AVP 0\n" + line)
    answer = negotiate(offer, Capabilities({"audio": audio_caps(direction=local)}),
                       origin=ORIGIN, address=GW, ports=ports)
    assert answer.media[0].direction() is Direction(expected)
    assert [a.name for a in answer.media[0].attributes if a.name == expected] == [expected]


def test_session_level_direction_in_offer() -> None:
    offer = offer_from("m=audio 1 RTP/AVP 0\n", "m=audio 2 RTP/AVP 0\na=sendrecv\n",
                       session="a=sendonly\n")
    caps = Capabilities({"audio": audio_caps(max_streams=2)})
    answer = negotiate(offer, caps, origin=ORIGIN, address=GW, ports=ports)
    assert [m.direction() for m in answer.media] == [Direction.RECVONLY, Direction.SENDRECV]


@pytest.mark.parametrize(
    ("offered", "supported", "echoed"),
    [(True, True, True), (True, False, False), (False, True, False)],
)
def test_rtcp_mux(offered: bool, supported: bool, echoed: bool) -> None:
    offer = offer_from("m=audio 1 RTP/AVP 0\n" + ("a=rtcp-mux\n" if offered else ""))
    caps = Capabilities({"audio": audio_caps(rtcp_mux=supported)})
    answer = negotiate(offer, caps, origin=ORIGIN, address=GW, ports=ports)
    assert answer.media[0].rtcp_mux is echoed


def test_bandwidth_and_extra_attributes_from_caps() -> None:
    caps = Capabilities(
        {"audio": audio_caps(bandwidth={"AS": 80, "TIAS": 64000},
                             attributes=[Attribute("ptime", "20")])},
        bandwidth={"AS": 2000},
        attributes=[Attribute("tool", "gateway")],
        session_name="visit",
    )
    assert answer_to(SIPP_OFFER, caps) == crlf(
        """\
v=0
o=gateway 42 1 IN IP4 192.0.2.10
s=visit
c=IN IP4 192.0.2.10
b=AS:2000
t=0 0
a=tool:gateway
m=audio 40000 RTP/AVP 0
b=AS:80
b=TIAS:64000
a=rtpmap:0 PCMU/8000
a=sendrecv
a=ptime:20
"""
    )


def test_telephone_event_needs_offer_and_matching_rate() -> None:
    caps = Capabilities({"audio": MediaCaps([
        CodecCap("opus", 48000, 2), CodecCap("PCMU", 8000),
        CodecCap("telephone-event", 48000), CodecCap("telephone-event", 8000),
    ])})
    # Opus chosen alone: only the 48 kHz telephone-event rides along.
    offer = offer_from("m=audio 1 RTP/AVP 111 126 110\na=rtpmap:111 opus/48000/2\n"
                       "a=rtpmap:126 telephone-event/8000\na=rtpmap:110 telephone-event/48000\n")
    assert "RTP/AVP 111 110\r\n" in answer_to(offer, caps)
    # PCMU with only a 48 kHz telephone-event offered: dropped.
    offer = offer_from("m=audio 1 RTP/AVP 0 110\na=rtpmap:110 telephone-event/48000\n")
    assert "RTP/AVP 0\r\n" in answer_to(offer, caps)
    # Not offered: not answered, even though we support it.
    assert "telephone-event" not in answer_to(SIPP_OFFER, caps)
    # Offered, but we do not take it.
    assert "telephone-event" not in answer_to(
        POLYCOM_OFFER, Capabilities({"audio": MediaCaps([CodecCap("PCMU", 8000)])})
    )
    # telephone-event alone is no reason to accept a stream.
    offer = offer_from("m=audio 1 RTP/AVP 101\na=rtpmap:101 telephone-event/8000\n")
    assert "m=audio 0 RTP/AVP 101" in answer_to(offer, caps)


def test_required_fmtp_and_custom_match() -> None:
    offer = offer_from("m=audio 1 RTP/AVP 18 97\na=fmtp:18 annexb=no\na=rtpmap:97 iLBC/8000\n"
                       "a=fmtp:97 mode=20\n")
    caps = Capabilities({"audio": MediaCaps([
        CodecCap("iLBC", 8000, required_fmtp={"mode": "30"}),
        CodecCap("G729", 8000, required_fmtp={"AnnexB": "No"}, fmtp={"annexb": "no"}),
    ])})
    assert "RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n" in answer_to(
        offer, caps
    )
    caps.media["audio"].codecs[0].required_fmtp = {"mode": "20"}
    caps.media["audio"].codecs[1].match = lambda c: False
    assert "RTP/AVP 97\r\n" in answer_to(offer, caps)


H264_OFFER = """\
m=video 5000 RTP/AVPF 100 101 102
a=rtpmap:100 H264/90000
a=fmtp:100 profile-level-id=64001f;packetization-mode=1
a=rtpmap:101 H264/90000
a=fmtp:101 profile-level-id={pli};packetization-mode={mode}{extra}
a=rtpmap:102 H264/90000
a=fmtp:102 profile-level-id=42e01f
a=rtcp-fb:* nack
a=rtcp-fb:* nack pli
a=rtcp-fb:101 goog-remb
"""


def h264_answer(cap: CodecCap, pli: str = "42e01f", mode: str = "1", extra: str = "") -> str:
    offer = offer_from(H264_OFFER.format(pli=pli, mode=mode, extra=extra))
    caps = Capabilities({"video": MediaCaps([cap], rtcp_fb=["nack pli", "ccm fir"])})
    return answer_to(offer, caps)


def test_h264_packetization_mode_must_match() -> None:
    # PT 102 has no packetization-mode: mode 0 by default.
    assert "RTP/AVPF 102\r\n" in h264_answer(h264(mode="0"), mode="1")
    assert "RTP/AVPF 101\r\n" in h264_answer(h264(mode="1"), mode="1")
    assert "m=video 0 " in h264_answer(h264(mode="2"), mode="1")


def test_h264_profile_must_match() -> None:
    # 42c0 and 42e0 are both Constrained Baseline; High (100) is not.
    answer = h264_answer(h264("42c01f"), pli="42e01f")
    assert "RTP/AVPF 101\r\n" in answer
    assert "a=fmtp:101 profile-level-id=42e01f;packetization-mode=1\r\n" in answer
    assert "a=rtcp-fb:101 nack pli\r\n" in answer and "goog-remb" not in answer
    assert "RTP/AVPF 100\r\n" in h264_answer(h264("640028"), pli="4d001f")
    assert "m=video 0 " in h264_answer(h264("4d001f"), pli="42001f")


def test_h264_level_answer() -> None:
    # No level asymmetry: the lower level, with the offerer's profile bytes.
    assert "profile-level-id=42e01f;" in h264_answer(h264("42c028"), pli="42e01f")
    assert "profile-level-id=42e01f;" in h264_answer(h264("42e01f"), pli="42e028")
    assert "profile-level-id=42e00a;" in h264_answer(h264("42e00a"), pli="42e01f")
    # Asymmetry allowed on one side only: still the lower level.
    assert "profile-level-id=42e01f;" in h264_answer(
        h264("42e028", **{"level-asymmetry-allowed": "1"}), pli="42e01f"
    )
    assert "profile-level-id=42e01f;" in h264_answer(
        h264("42e028"), pli="42e01f", extra=";level-asymmetry-allowed=1"
    )
    # Asymmetry allowed by both: we state the level we can receive.
    answer = h264_answer(
        h264("42e028", **{"level-asymmetry-allowed": "1"}), pli="42e01f",
        extra=";level-asymmetry-allowed=1",
    )
    assert (
        "a=fmtp:101 profile-level-id=42e028;packetization-mode=1;level-asymmetry-allowed=1\r\n"
        in answer
    )
    # Level 1b is below 1.1.
    assert "profile-level-id=42f00b;" in h264_answer(h264("42e00b"), pli="42f00b")


def test_h264_malformed_profile_level_id_is_sdp_error() -> None:
    with pytest.raises(SdpError, match="line 10: profile-level-id must be 6 hex digits"):
        h264_answer(h264(), pli="xyz")


def test_answer_cisco_video() -> None:
    ours = h264("42801f", **{"sprop-parameter-sets": "Z0KAH5WoFAFuQA==,aM48gA=="})
    caps = Capabilities({
        "audio": audio_caps(),
        "video": MediaCaps(
            [ours, CodecCap("VP8", 90000)],
            rtcp_fb=["nack pli", "ccm fir"],
            bandwidth={"TIAS": 1000000},
        ),
    })
    # PT 97 is Baseline (428016, constraint_set0) mode 1 like ours: answered at the lower
    # level (2.2); PT 126 is mode 0 and is dropped.
    assert answer_to(CISCO_VIDEO_OFFER, caps) == crlf(
        """\
v=0
o=gateway 42 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/AVP 9 0 8 101
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
m=video 40002 RTP/AVPF 97
b=TIAS:1000000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=428016;packetization-mode=1;sprop-parameter-sets=Z0KAH5WoFAFuQA==,aM48gA==
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 ccm fir
a=sendrecv
"""  # noqa: E501
    )


def webrtc_caps() -> Capabilities:
    protos = ("UDP/TLS/RTP/SAVPF",)
    return Capabilities({
        "audio": MediaCaps(
            [CodecCap("opus", 48000, 2, fmtp={"minptime": "10", "useinbandfec": "1"}),
             CodecCap("PCMU", 8000), CodecCap("telephone-event", 48000),
             CodecCap("telephone-event", 8000)],
            rtcp_fb=["transport-cc"], protos=protos,
        ),
        "video": MediaCaps(
            [h264("42e01f", **{"level-asymmetry-allowed": "1"}), CodecCap("VP8", 90000),
             CodecCap("rtx", 90000)],
            rtcp_fb=["nack", "nack pli", "ccm fir"], protos=protos,
        ),
    })


def test_answer_chrome() -> None:
    offer = parse(CHROME_OFFER)
    answer = negotiate(offer, webrtc_caps(), origin=ORIGIN, address=GW, ports=ports)
    audio, video = answer.media
    assert audio.formats == ["111", "0", "110", "126"]
    assert audio.mid == "0" and audio.rtcp_mux
    assert audio.rtcp_fb(111) == ["transport-cc"] and audio.fmtp(111) == {
        "minptime": "10", "useinbandfec": "1"
    }
    # VP8 + its rtx, constrained-baseline H.264 mode 1 + its rtx; baseline/main/high, VP9,
    # AV1, red, ulpfec and the rtx of codecs not chosen are dropped.
    assert video.formats == ["96", "97", "106", "107"]
    assert video.fmtp(97) == {"apt": "96"} and video.fmtp(107) == {"apt": "106"}
    assert video.fmtp(106) == {
        "profile-level-id": "42e01f", "packetization-mode": "1", "level-asymmetry-allowed": "1"
    }
    assert video.rtcp_fb(106) == ["ccm fir", "nack", "nack pli"]  # offer order, ours only
    assert video.rtcp_fb(97) == []
    agreed = apply_answer(offer, answer, local="answerer")
    assert [c.name for c in agreed[1].codecs] == ["VP8", "rtx", "H264", "rtx"]
    assert agreed[0].telephone_event is not None
    assert agreed[0].telephone_event.clock_rate == 48000


def test_sdes_crypto_answer() -> None:
    caps = Capabilities({"audio": MediaCaps([CodecCap("G722", 8000), CodecCap("PCMU", 8000),
                                             CodecCap("telephone-event", 8000)])})
    # Tag 1 (AES-256-GCM) is not ours; tag 2 is the first we support.
    assert answer_to(BARESIP_SRTP_OFFER, caps, random_bytes=counting_bytes) == crlf(
        f"""\
v=0
o=gateway 42 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/SAVP 9 0 101
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}
"""
    )
    caps.crypto_suites = ("AEAD_AES_128_GCM",)
    assert f"a=crypto:4 AEAD_AES_128_GCM inline:{KEY28}\r\n" in answer_to(
        BARESIP_SRTP_OFFER, caps, random_bytes=counting_bytes
    )
    caps.crypto_suites = ("AES_192_CM_HMAC_SHA1_80",)
    assert "m=audio 0 RTP/SAVP 96\r\n" in answer_to(
        BARESIP_SRTP_OFFER, caps, random_bytes=counting_bytes
    )


@pytest.mark.parametrize(
    "crypto_lines",
    [
        "",  # SAVP without SDES
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\n",  # key too short
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30} UNENCRYPTED_SRTP\n",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 FOO:{KEY30}\n",
    ],
)
def test_sdes_offer_without_usable_crypto_rejected(crypto_lines: str) -> None:
    offer = offer_from("m=audio 1 RTP/SAVPF 0\n" + crypto_lines)
    answer = answer_to(offer, Capabilities({"audio": audio_caps()}), random_bytes=counting_bytes)
    assert "m=audio 0 RTP/SAVPF 0\r\n" in answer and "a=crypto" not in answer


def test_crypto_in_avp_offer_is_ignored() -> None:
    offer = offer_from(f"m=audio 1 RTP/AVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\n")
    answer = answer_to(offer, Capabilities({"audio": audio_caps()}), random_bytes=counting_bytes)
    assert "m=audio 40000 RTP/AVP 0\r\n" in answer and "a=crypto" not in answer


def test_srtp_only_via_protos() -> None:
    caps = Capabilities({"audio": audio_caps(protos=("RTP/SAVP",))})
    assert "m=audio 0 RTP/AVP 0" in answer_to(SIPP_OFFER, caps)


def test_random_bytes_must_have_the_right_length() -> None:
    with pytest.raises(ValueError, match="returned 3 bytes"):
        answer_to(BARESIP_SRTP_OFFER, Capabilities({"audio": audio_caps()}),
                  random_bytes=lambda n: b"abc")


def test_rtx_kept_only_for_chosen_codecs() -> None:
    offer = offer_from("m=video 1 RTP/AVPF 96 97 98 99 100\na=rtpmap:96 VP8/90000\n"
                       "a=rtpmap:97 rtx/90000\na=fmtp:97 apt=96;rtx-time=3000\n"
                       "a=rtpmap:98 VP9/90000\na=rtpmap:99 rtx/90000\na=fmtp:99 apt=98\n"
                       "a=rtpmap:100 rtx/90000\n")
    caps = Capabilities({"video": MediaCaps([CodecCap("VP8", 90000), CodecCap("VP9", 90000),
                                             CodecCap("rtx", 90000)], max_codecs=1)})
    answer = negotiate(offer, caps, origin=ORIGIN, address=GW, ports=ports)
    assert answer.media[0].formats == ["96", "97"]
    assert answer.media[0].fmtp_raw(97) == "apt=96"


def test_answer_baresip_both_media() -> None:
    caps = Capabilities({
        "audio": MediaCaps([CodecCap("opus", 48000, 2), CodecCap("telephone-event", 8000)],
                           rtcp_mux=False),
        "video": MediaCaps([h264("42e01f", mode="0"), CodecCap("VP8", 90000)],
                           rtcp_fb=["nack", "nack pli", "ccm fir"]),
    })
    answer = negotiate(parse(BARESIP_OFFER), caps, origin=ORIGIN, address=GW, ports=ports)
    audio, video = answer.media
    # telephone-event/8000 is offered, but only opus (48 kHz) was chosen.
    assert audio.formats == ["96"] and not audio.rtcp_mux
    assert video.formats == ["98", "99"] and video.rtcp_mux
    assert video.rtcp_fb(98) == ["nack pli", "ccm fir"]
    assert video.fmtp(98)["profile-level-id"] == "42c01f"


# --------------------------------------------------------------------------- offers


def test_create_offer() -> None:
    caps = Capabilities({
        "audio": MediaCaps(
            [CodecCap("opus", 48000, 2, fmtp={"useinbandfec": "1"}), CodecCap("G722", 8000),
             CodecCap("PCMU", 8000), CodecCap("telephone-event", 8000, fmtp={"0-16": ""},
                                              payload_type=101)],
            offer_proto="RTP/SAVP", rtcp_mux=False, attributes=[Attribute("ptime", "20")],
        ),
        "video": MediaCaps(
            [h264("42e01f"), CodecCap("VP8", 90000), CodecCap("rtx", 90000)],
            rtcp_fb=["nack pli"], offer_proto="RTP/AVPF", bandwidth={"AS": 1024},
            direction=Direction.SENDONLY,
        ),
    })
    offer = create_offer(caps, origin=ORIGIN, address=GW, ports=ports,
                         random_bytes=counting_bytes)
    assert str(offer) == crlf(
        f"""\
v=0
o=gateway 42 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 40000 RTP/SAVP 96 9 0 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=sendrecv
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}
a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}
a=ptime:20
m=video 40002 RTP/AVPF 96 97 98 99
b=AS:1024
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:98 VP8/90000
a=rtcp-fb:98 nack pli
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=sendonly
a=rtcp-mux
"""
    )
    only_video = create_offer(caps, origin=ORIGIN, address=GW, ports={0: 5000},
                              kinds=["video"], random_bytes=counting_bytes)
    assert [m.kind for m in only_video.media] == ["video"]


def test_offer_answer_between_two_gateways() -> None:
    ours = Capabilities({
        "audio": MediaCaps([CodecCap("opus", 48000, 2), CodecCap("PCMU", 8000),
                            CodecCap("telephone-event", 8000)], offer_proto="RTP/SAVP"),
        "video": MediaCaps([h264("42e01f"), CodecCap("VP8", 90000)], rtcp_fb=["nack pli"],
                           offer_proto="RTP/AVPF"),
    })
    theirs = Capabilities({
        "audio": MediaCaps([CodecCap("PCMU", 8000), CodecCap("telephone-event", 8000)],
                           direction=Direction.RECVONLY),
        "video": MediaCaps([CodecCap("VP8", 90000)], rtcp_fb=["nack pli", "goog-remb"]),
    })
    offer = create_offer(ours, origin=ORIGIN, address=GW, ports=ports,
                         random_bytes=counting_bytes)
    answer = negotiate(parse(str(offer)), theirs, origin=Origin.for_address("2001:db8::9", "5"),
                       address="2001:db8::9", ports=lambda i, k: 50000 + 2 * i,
                       random_bytes=lambda n: bytes(n))
    audio, video = apply_answer(offer, parse(str(answer)))
    assert not audio.rejected and audio.codec is not None and audio.codec.name == "PCMU"
    assert [c.name for c in audio.codecs] == ["PCMU", "telephone-event"]
    assert audio.direction is Direction.SENDONLY  # they only receive
    assert (audio.remote_address, audio.remote_port) == ("2001:db8::9", 50000)
    assert audio.rtcp_mux and audio.remote_rtcp_port == 50000
    assert audio.local_crypto is not None and audio.remote_crypto is not None
    assert audio.local_crypto.tag == audio.remote_crypto.tag == 1
    assert audio.local_crypto.key_params[0].key_bytes() == bytes(range(30))
    assert audio.remote_crypto.key_params[0].key_bytes() == bytes(30)
    assert video.codec is not None and video.codec.name == "VP8"
    assert video.codec.payload_type == 97 and video.codec.rtcp_fb == ["nack pli"]
    # Seen from their side.
    their_view = apply_answer(offer, answer, local="answerer")
    assert their_view[0].direction is Direction.RECVONLY
    assert their_view[0].remote_port == 40000
    assert their_view[0].local_crypto == audio.remote_crypto


# --------------------------------------------------------------------------- apply_answer


def test_apply_answer_rtcp_port_and_rejection() -> None:
    offer = offer_from("m=audio 1 RTP/AVP 0 8\n", "m=video 3 RTP/AVP 31\n")
    answer = parse(
        "v=0\no=- 2 2 IN IP4 198.51.100.7\ns=-\nc=IN IP4 198.51.100.7\nt=0 0\n"
        "m=audio 7000 RTP/AVP 8\na=rtcp:7005 IN IP4 198.51.100.8\nm=video 0 RTP/AVP 31\n"
    )
    audio, video = apply_answer(offer, answer)
    assert [c.name for c in audio.codecs] == ["PCMA"]
    assert (audio.remote_address, audio.remote_port) == ("198.51.100.7", 7000)
    assert (audio.remote_rtcp_address, audio.remote_rtcp_port) == ("198.51.100.8", 7005)
    assert not audio.rtcp_mux and audio.direction is Direction.SENDRECV
    assert video.rejected and video.codecs == [] and video.direction is Direction.INACTIVE
    answer.media[0].remove("rtcp")
    assert apply_answer(offer, answer)[0].remote_rtcp_port == 7001


ANSWER_HEAD = "v=0\no=- 2 2 IN IP4 198.51.100.7\ns=-\nc=IN IP4 198.51.100.7\nt=0 0\n"


@pytest.mark.parametrize(
    ("offer_media", "answer_media", "fragment"),
    [
        ("m=audio 1 RTP/AVP 0\n", "", "answer has 0 m-lines but the offer has 1"),
        ("m=audio 1 RTP/AVP 0\n", "m=video 2 RTP/AVP 0\n", "is 'video' but the offer has"),
        ("m=audio 1 RTP/AVP 0\n", "m=audio 2 RTP/SAVP 0\n", "proto RTP/SAVP differs"),
        ("m=audio 0 RTP/AVP 0\n", "m=audio 2 RTP/AVP 0\n", "accepts a stream the offer rejected"),
        ("m=audio 1 RTP/AVP 0\n", "m=audio 2 RTP/AVP 8\n", "payload type 8, which the offer"),
        ("m=audio 1 RTP/AVP 0\n", "m=audio 2 RTP/AVP\n", "has no formats"),
        ("m=audio 1 RTP/AVP 96\na=rtpmap:96 opus/48000/2\n",
         "m=audio 2 RTP/AVP 96\na=rtpmap:96 speex/16000\n", "maps payload type 96 to speex"),
        ("m=audio 1 RTP/AVP 0\na=sendonly\n", "m=audio 2 RTP/AVP 0\na=sendrecv\n",
         "direction sendrecv is not allowed for an offered sendonly"),
        ("m=audio 1 RTP/AVP 0\na=recvonly\n", "m=audio 2 RTP/AVP 0\na=recvonly\n",
         "direction recvonly is not allowed"),
        (f"m=audio 1 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\n",
         "m=audio 2 RTP/SAVP 0\n", "exactly one a=crypto, has 0"),
        (f"m=audio 1 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\n",
         f"m=audio 2 RTP/SAVP 0\na=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\n",
         "tag 2 was not offered"),
        (f"m=audio 1 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}\n",
         f"m=audio 2 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:{KEY30}\n",
         "is AES_CM_128_HMAC_SHA1_32, offered as AES_CM_128_HMAC_SHA1_80"),
    ],
)
def test_apply_answer_rejects_invalid_answers(
    offer_media: str, answer_media: str, fragment: str
) -> None:
    offer = offer_from(offer_media)
    answer = parse(ANSWER_HEAD + answer_media)
    with pytest.raises(SdpError, match=fragment):
        apply_answer(offer, answer)


def test_apply_answer_uses_remote_fmtp_and_static_types() -> None:
    offer = offer_from("m=video 1 RTP/AVPF 96\na=rtpmap:96 H264/90000\n"
                       "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1\n"
                       "a=rtcp-fb:96 nack\na=rtcp-fb:96 nack pli\n")
    answer = parse(ANSWER_HEAD + "m=video 9 RTP/AVPF 96\n"
                   "a=fmtp:96 profile-level-id=42e00d;packetization-mode=1\na=rtcp-fb:96 nack\n")
    (video,) = apply_answer(offer, answer)
    assert video.codec == Codec(96, "H264", 90000, 1,
                                {"profile-level-id": "42e00d", "packetization-mode": "1"},
                                ["nack"])
    (theirs,) = apply_answer(offer, answer, local="answerer")
    assert theirs.codec is not None and theirs.codec.fmtp["profile-level-id"] == "42e01f"


# --------------------------------------------------------------------------- properties

ALPHABET = "vosiuepcbtrzkam= :/;*0123456789ABCDEFINP4\r\n\t.-_|^"
LINE_TYPES = "vosiuepcbtrzkamx"


def exercise(sdp: SessionDescription) -> None:
    """Every helper, on every m-line: each may raise SdpError, nothing else."""
    helpers: list[Callable[[MediaDescription], object]] = [
        lambda m: m.codecs(), lambda m: m.payload_types(), lambda m: m.rtpmaps(),
        lambda m: m.rtcp, lambda m: m.ssrcs(), lambda m: m.ssrc_groups(),
        lambda m: m.crypto(), lambda m: [k.key_bytes() for c in m.crypto() for k in c.key_params],
        lambda m: m.fmtp(96), lambda m: m.rtcp_fb(96), lambda m: m.mid,
        lambda m: sdp.media_direction(m), lambda m: sdp.connection_for(m),
        lambda m: [H264ProfileLevelId.parse(c.param("profile-level-id")).profile
                   for c in m.codecs() if c.is_named("H264")],
    ]
    for m in sdp.media:
        for helper in helpers:
            try:
                helper(m)
            except SdpError:
                pass


FUZZ_CAPS = Capabilities({
    "audio": MediaCaps(
        [CodecCap("opus", 48000, 2), CodecCap("G722", 8000), CodecCap("PCMU", 8000),
         CodecCap("telephone-event", 8000), CodecCap("telephone-event", 48000)],
        protos=("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF"),
        max_streams=2,
    ),
    "video": MediaCaps(
        [h264("42e01f", **{"level-asymmetry-allowed": "1"}), h264("42e01f", mode="0"),
         CodecCap("VP8", 90000), CodecCap("rtx", 90000)],
        rtcp_fb=["nack", "nack pli", "ccm fir"],
        protos=("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF"),
    ),
})


def check_properties(data: str | bytes) -> None:
    try:
        sdp = parse(data)
    except SdpError:
        return
    again = parse(str(sdp))
    assert again == sdp
    assert str(again) == str(sdp)
    exercise(sdp)
    try:
        answer = negotiate(sdp, FUZZ_CAPS, origin=ORIGIN, address=GW, ports=ports,
                           random_bytes=counting_bytes)
    except SdpError:
        return
    # Whatever we answer must itself be a valid answer to the offer.
    apply_answer(sdp, parse(str(answer)), local="answerer")


def mutate(text: str, ops: list[tuple[int, int, str]]) -> str:
    lines = text.split("\n")
    for op, pos, junk in ops:
        if not lines:
            break
        i = pos % len(lines)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[(i * 7) % len(lines)])
        elif op == 2:
            line = lines[i]
            cut = pos % (len(line) + 1)
            lines[i] = line[:cut] + junk + line[cut:]
        elif op == 3:
            line = lines[i]
            cut = pos % (len(line) + 1)
            lines[i] = line[:cut] + line[cut + 1 + len(junk):]
        elif op == 4:
            lines[i], lines[-1 - i] = lines[-1 - i], lines[i]
        else:
            lines[i] = lines[i][:2] + junk
    return "\n".join(lines)


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text())
def test_fuzz_random_text(text: str) -> None:
    check_properties(text)
    check_properties("v=0\n" + text)


@FUZZ
@given(st.binary())
def test_fuzz_random_bytes(data: bytes) -> None:
    check_properties(data)
    check_properties(b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\n" + data)


@FUZZ
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 10_000),
                  st.text(alphabet=ALPHABET, max_size=12) | st.text(max_size=4)),
        max_size=6,
    ),
)
def test_fuzz_mutated_samples(name: str, ops: list[tuple[int, int, str]]) -> None:
    check_properties(mutate(SAMPLES[name], ops))
    check_properties(mutate(crlf(SAMPLES[name]), ops))


_value = st.text(alphabet=ALPHABET.replace("\r", "").replace("\n", ""), max_size=30)
_attr = st.sampled_from([
    "rtpmap:", "fmtp:", "rtcp-fb:", "rtcp:", "ssrc:", "ssrc-group:", "crypto:", "mid:",
    "sendonly", "recvonly", "inactive", "sendrecv", "rtcp-mux", "x:",
]).flatmap(lambda name: _value.map(lambda v: name + v if name.endswith(":") else name))


@st.composite
def sdp_like(draw: st.DrawFn) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0"]
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["audio", "video", "application", "Audio"]))
        port = draw(st.sampled_from(["0", "5000", "5000/2", "65535"]))
        proto = draw(st.sampled_from(
            ["RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "udp"]
        ))
        fmts = draw(st.lists(st.sampled_from(["0", "8", "9", "13", "18", "96", "97", "101",
                                              "111", "126", "127", "x"]), max_size=5))
        lines.append(" ".join([f"m={kind}", port, proto, *fmts]))
        for _ in range(draw(st.integers(0, 8))):
            lines.append("a=" + draw(st.one_of(
                _attr,
                st.sampled_from([
                    "rtpmap:96 opus/48000/2", "rtpmap:97 H264/90000", "rtpmap:96 VP8/90000",
                    "rtpmap:101 telephone-event/8000", "rtpmap:126 telephone-event/48000",
                    "rtpmap:97 rtx/90000", "fmtp:97 apt=96", "fmtp:97 profile-level-id=42e01f",
                    "fmtp:97 packetization-mode=1;profile-level-id=42001f",
                    "fmtp:96 apt=97", "rtcp-fb:* nack", "rtcp-fb:96 nack pli",
                    f"crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY30}",
                    f"crypto:2 AEAD_AES_128_GCM inline:{KEY28}",
                ]),
            )))
        if draw(st.booleans()):
            lines.append(draw(st.sampled_from(LINE_TYPES)) + "=" + draw(_value))
    return "\r\n".join(lines) + "\r\n"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sdp_like())
def test_fuzz_structured(text: str) -> None:
    check_properties(text)


@FUZZ
@given(st.sampled_from(sorted(SAMPLES)))
def test_samples_satisfy_properties(name: str) -> None:
    check_properties(SAMPLES[name])
