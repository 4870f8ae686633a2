"""Answers to browser offers: codec choice, BUNDLE, ICE/DTLS attributes, what is refused."""

from __future__ import annotations

import pytest

from gateway.sip import sdp
from gateway.webrtc.jsep import (
    LocalTransport,
    OfferError,
    build_answer,
    new_origin,
    read_offer,
)

# A Chrome 12x offer (audio, video, data channel), trimmed of nothing that matters here.
CHROME_OFFER = "\r\n".join([
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1 2",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS stream",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Wt8k",
    "a=ice-pwd:VmFA0BlhEWZP1M2H0GOjX9Wb",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 5C:3B:8F:2E:1D:9A:7C:6B:5A:4F:3E:2D:1C:0B:FA:E9:D8:C7:B6:A5:94:83:"
    "72:61:50:4F:3E:2D:1C:0B:FA:E9",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
    "a=sendrecv",
    "a=msid:stream audiotrack",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:13 CN/8000",
    "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc:1001 cname:chromecname",
    "a=ssrc:1001 msid:stream audiotrack",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 105 106 107 108 109 127 125 39 40 98 99",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:Wt8k",
    "a=ice-pwd:VmFA0BlhEWZP1M2H0GOjX9Wb",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 5C:3B:8F:2E:1D:9A:7C:6B:5A:4F:3E:2D:1C:0B:FA:E9:D8:C7:B6:A5:94:83:"
    "72:61:50:4F:3E:2D:1C:0B:FA:E9",
    "a=setup:actpass",
    "a=mid:1",
    "a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
    "a=extmap:13 urn:3gpp:video-orientation",
    "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
    "a=sendrecv",
    "a=msid:stream videotrack",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 transport-cc",
    "a=rtcp-fb:96 ccm fir",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=rtcp-fb:102 goog-remb",
    "a=rtcp-fb:102 transport-cc",
    "a=rtcp-fb:102 ccm fir",
    "a=rtcp-fb:102 nack",
    "a=rtcp-fb:102 nack pli",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "a=rtpmap:103 rtx/90000",
    "a=fmtp:103 apt=102",
    "a=rtpmap:104 H264/90000",
    "a=rtcp-fb:104 goog-remb",
    "a=rtcp-fb:104 transport-cc",
    "a=rtcp-fb:104 ccm fir",
    "a=rtcp-fb:104 nack",
    "a=rtcp-fb:104 nack pli",
    "a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f",
    "a=rtpmap:105 rtx/90000",
    "a=fmtp:105 apt=104",
    "a=rtpmap:106 H264/90000",
    "a=rtcp-fb:106 goog-remb",
    "a=rtcp-fb:106 transport-cc",
    "a=rtcp-fb:106 ccm fir",
    "a=rtcp-fb:106 nack",
    "a=rtcp-fb:106 nack pli",
    "a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:107 rtx/90000",
    "a=fmtp:107 apt=106",
    "a=rtpmap:108 H264/90000",
    "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
    "a=rtpmap:109 rtx/90000",
    "a=fmtp:109 apt=108",
    "a=rtpmap:127 VP9/90000",
    "a=fmtp:127 profile-id=0",
    "a=rtpmap:125 rtx/90000",
    "a=fmtp:125 apt=127",
    "a=rtpmap:39 AV1/90000",
    "a=rtpmap:40 rtx/90000",
    "a=fmtp:40 apt=39",
    "a=rtpmap:98 red/90000",
    "a=rtpmap:99 ulpfec/90000",
    "a=ssrc-group:FID 2001 2002",
    "a=ssrc:2001 cname:chromecname",
    "a=ssrc:2002 cname:chromecname",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:Wt8k",
    "a=ice-pwd:VmFA0BlhEWZP1M2H0GOjX9Wb",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 5C:3B:8F:2E:1D:9A:7C:6B:5A:4F:3E:2D:1C:0B:FA:E9:D8:C7:B6:A5:94:83:"
    "72:61:50:4F:3E:2D:1C:0B:FA:E9",
    "a=setup:actpass",
    "a=mid:2",
    "a=sctp-port:5000",
    "a=max-message-size:262144",
    "",
])

LOCAL = LocalTransport(
    ice_ufrag="GwUf",
    ice_pwd="abcdefghijklmnopqrstuvwx",
    fingerprint=("sha-256", "AA:BB:CC"),
    setup="active",
    candidates=["candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host"],
    end_of_candidates=True,
    address="127.0.0.1",
    port=40000,
    ssrcs={"audio": 11, "video": 22},
    cname="gwcname",
    stream_id="gw-stream",
)


def answer(offer: str = CHROME_OFFER, prefs: dict[str, list[str]] | None = None,
           local: LocalTransport = LOCAL) -> tuple[sdp.SessionDescription, list]:  # type: ignore[type-arg]
    parsed, remote = read_offer(offer)
    text, plans = build_answer(parsed, remote, local, prefs or {}, origin=new_origin())
    return sdp.parse(text), plans


def test_reads_the_bundle_transport_of_a_chrome_offer() -> None:
    _, remote = read_offer(CHROME_OFFER)
    assert remote.bundle_mids == ["0", "1", "2"] and remote.tag_mid == "0"
    assert (remote.ice_ufrag, remote.ice_pwd) == ("Wt8k", "VmFA0BlhEWZP1M2H0GOjX9Wb")
    assert remote.setup == "actpass" and remote.fingerprints[0][0] == "sha-256"
    assert remote.candidates == [] and not remote.end_of_candidates


def test_answer_to_chrome_defaults_to_opus_and_vp8() -> None:
    ans, plans = answer()
    audio, video, data = ans.media
    assert audio.formats == ["111", "110"]  # opus + telephone-event at its clock rate
    assert video.formats == ["96"]
    assert data.port == 0  # data channels are refused
    assert ans.get("group") == "BUNDLE 0 1"
    assert [p.kind for p in plans] == ["audio", "video"]
    assert plans[0].telephone_event is not None and plans[0].telephone_event.payload_type == 110
    assert plans[1].remote_ssrcs == [2001, 2002] and plans[0].remote_ssrcs == [1001]


def test_answer_carries_ice_dtls_and_our_streams() -> None:
    ans, _ = answer()
    for m in ans.media[:2]:
        assert m.port == 40000 and m.proto == "UDP/TLS/RTP/SAVPF"
        assert m.get("ice-ufrag") == "GwUf" and m.get("ice-pwd") == "abcdefghijklmnopqrstuvwx"
        assert m.get("ice-options") == "trickle"
        assert m.get("fingerprint") == "sha-256 AA:BB:CC"
        assert m.get("setup") == "active"
        assert m.rtcp_mux and m.direction() == sdp.Direction.SENDRECV
        assert not m.get_all("extmap")  # no header extensions: packets relay unchanged
    audio, video = ans.media[:2]
    assert [a.value for a in audio.get_all("candidate")] == [
        "1 1 udp 2130706431 127.0.0.1 40000 typ host"]
    assert audio.has("end-of-candidates") and not video.get_all("candidate")
    assert audio.get("msid") == "gw-stream gw-stream-audio"
    assert {s.ssrc for s in video.ssrcs()} == {22}
    assert any(s.attribute == "cname" and s.value == "gwcname" for s in video.ssrcs())


def test_video_feedback_is_what_the_endpoint_implements() -> None:
    _, plans = answer()
    video = plans[1]
    assert video.codec.rtcp_fb == ["goog-remb", "ccm fir", "nack", "nack pli"]
    assert "transport-cc" not in video.codec.rtcp_fb  # we send no transport-wide feedback
    assert video.fir and video.remb and video.nack
    assert plans[0].codec.rtcp_fb == []


def test_h264_preference_picks_constrained_baseline_packetization_mode_1() -> None:
    ans, plans = answer(prefs={"video": ["H264", "VP8"]})
    video = plans[1]
    assert video.codec.payload_type == 106
    assert video.codec.param("packetization-mode") == "1"
    assert ans.media[1].fmtp(106)["profile-level-id"] == "42e01f"


def test_preferences_are_also_the_allowed_set() -> None:
    # A kiosk with only PCMU: the browser must send PCMU, whatever it prefers.
    _, plans = answer(prefs={"audio": ["PCMU"], "video": ["H264"]})
    assert plans[0].codec.name == "PCMU" and plans[0].codec.payload_type == 0
    assert plans[0].telephone_event is not None
    assert plans[0].telephone_event.payload_type == 126  # the 8 kHz one
    # Nothing in common for video: the m-line is refused, audio still goes.
    ans, plans = answer(prefs={"video": ["H264"]},
                        offer=CHROME_OFFER.replace("packetization-mode=1", "packetization-mode=0"))
    assert [p.kind for p in plans] == ["audio"] and ans.media[1].port == 0
    assert ans.get("group") == "BUNDLE 0"


def test_trickle_only_answer_has_no_candidates_and_the_discard_port() -> None:
    local = LocalTransport(**{**LOCAL.__dict__, "candidates": [], "end_of_candidates": False,
                              "address": "0.0.0.0", "port": 9})
    ans, _ = answer(local=local)
    assert ans.connection is not None and ans.connection.address == "0.0.0.0"
    assert all(m.port == 9 for m in ans.media[:2])
    assert not any(m.get_all("candidate") or m.has("end-of-candidates") for m in ans.media)


def test_a_recvonly_browser_gets_sendonly_and_no_ssrc_from_a_receiver() -> None:
    offer = CHROME_OFFER.replace("a=sendrecv", "a=recvonly", 1)
    ans, plans = answer(offer=offer)
    assert ans.media[0].direction() == sdp.Direction.SENDONLY
    offer = CHROME_OFFER.replace("a=sendrecv", "a=sendonly", 1)
    ans, plans = answer(offer=offer)
    assert ans.media[0].direction() == sdp.Direction.RECVONLY
    assert not ans.media[0].get_all("ssrc") and not plans[0].direction.sends


def test_m_lines_outside_bundle_and_without_rtcp_mux_are_refused() -> None:
    offer = CHROME_OFFER.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 2")
    ans, plans = answer(offer=offer)
    assert [p.kind for p in plans] == ["audio"] and ans.media[1].port == 0
    lines = CHROME_OFFER.split("\r\n")
    first_mux = lines.index("a=rtcp-mux")
    offer = "\r\n".join(lines[:first_mux] + lines[first_mux + 1:])
    _, plans = answer(offer=offer)
    assert [p.kind for p in plans] == ["video"]


@pytest.mark.parametrize(("mutation", "message"), [
    (lambda o: "garbage", "not valid SDP"),
    (lambda o: "   ", "empty"),
    (lambda o: o.split("m=audio")[0], "no media"),
    (lambda o: o.replace("a=ice-ufrag:Wt8k\r\n", ""), "no a=ice-ufrag"),
    (lambda o: o.replace("a=ice-pwd:VmFA0BlhEWZP1M2H0GOjX9Wb\r\n", ""), "no a=ice-pwd"),
    (lambda o: o.replace("a=ice-pwd:VmFA0BlhEWZP1M2H0GOjX9Wb", "a=ice-pwd:short"), "ice-pwd"),
    (lambda o: "\r\n".join(x for x in o.split("\r\n") if not x.startswith("a=fingerprint")),
     "no a=fingerprint"),
    (lambda o: o.replace("a=fingerprint:sha-256", "a=fingerprint:md5"), "supported hash"),
    (lambda o: o.replace("a=fingerprint:sha-256 5C", "a=fingerprint:sha-256 ZZ"), "malformed"),
    (lambda o: o.replace("a=setup:actpass", "a=setup:holdconn"), "a=setup"),
    (lambda o: o.replace("UDP/TLS/RTP/SAVPF", "RTP/AVP"), "no audio or video"),
    (lambda o: o.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 7"), "BUNDLE"),
])
def test_bad_offers_raise_offer_error(mutation: object, message: str) -> None:
    assert callable(mutation)
    with pytest.raises(OfferError, match=message):
        parsed, remote = read_offer(mutation(CHROME_OFFER))
        build_answer(parsed, remote, LOCAL, {}, origin=new_origin())
    assert issubclass(OfferError, ValueError)
