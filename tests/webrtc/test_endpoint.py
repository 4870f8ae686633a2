"""The endpoint against aiortc as the browser: media both ways, trickle, ICE restart, errors."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import aioice
import pytest
from webrtc.peer import (
    LOOPBACK,
    BrowserPeer,
    candidates_of,
    connect,
    ice_credentials,
    run,
    wait_for,
    without_candidates,
)

from gateway.webrtc import (
    Feedback,
    IceCandidate,
    OfferError,
    SessionState,
    WebRtcConfig,
    WebRtcEndpoint,
    WebRtcSession,
)

pytestmark = pytest.mark.usefixtures("loopback_peer")

FRAMES = 20  # decoded frames the browser must see: > 1 s of its own 30 fps video


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_echo_returns_the_browsers_video(codec: str) -> None:
    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-echo", "echo",
                                          codec_preferences={"video": [codec]})
        states: list[SessionState] = []
        session.on_state = states.append
        peer = BrowserPeer()
        try:
            answer = await connect(session, peer)
            assert f" {codec}/90000" in answer
            if codec == "H264":
                assert "packetization-mode=1" in answer and "42e01f" in answer
            await wait_for(lambda: peer.frames["video"] > FRAMES, what="echoed video frames")
            await wait_for(lambda: peer.frames["audio"] > 25, what="echoed audio frames")
            stats = session.stats()
            assert stats.packets_received["video"] > FRAMES
            assert stats.packets_received["audio"] > 25
            assert stats.packets_sent["video"] > FRAMES
            assert stats.codecs == {"audio": "opus/48000/2", "video": f"{codec}/90000"}
            assert stats.extra["srtp_errors"] == 0
            assert peer.decoded_sizes == {(320, 240)}
            assert states[:2] == ["connecting", "connected"]
        finally:
            await peer.close()
            await session.close()
        assert session.state == "closed" and states[-1] == "closed"
        assert "call-echo" not in endpoint.sessions

    run(body)


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_test_pattern_is_decoded_by_the_browser(codec: str) -> None:
    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-pattern", "test-pattern",
                                          codec_preferences={"video": [codec]})
        peer = BrowserPeer()
        try:
            await connect(session, peer)
            await wait_for(lambda: peer.frames["video"] >= 10, what="test pattern frames")
            await wait_for(lambda: peer.frames["audio"] >= 25, what="test tone frames")
            await wait_for(lambda: session.stats().packets_received.get("video", 0) > 10,
                           what="browser video counted")
            stats = session.stats()
            assert stats.extra["pattern_frames_sent"] >= 10
            assert peer.decoded_sizes == {(320, 240)}
            frame = peer.last_video
            assert frame is not None
            luma = bytes(frame.planes[0])
            assert len(set(luma)) > 50  # a gradient, not a blank picture
        finally:
            await peer.close()
            await session.close()

    run(body)


def test_trickle_ice_both_ways() -> None:
    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-trickle", "echo")
        session.answer_candidates = False
        ours: list[IceCandidate | None] = []
        session.on_local_candidate = ours.append
        peer = BrowserPeer()
        try:
            offer = await peer.offer()
            theirs = candidates_of(offer)
            assert theirs
            answer = await session.accept_offer(without_candidates(offer))
            assert "a=candidate" not in answer and "a=end-of-candidates" not in answer
            assert " 9 UDP/TLS/RTP/SAVPF" in answer and "c=IN IP4 0.0.0.0" in answer
            assert ours == []  # nothing before the answer has been handed over
            await peer.answer(answer)
            for line in theirs:
                await session.add_remote_candidate(IceCandidate(line, "0", 0))
            await session.add_remote_candidate(IceCandidate("", "0", 0))
            await wait_for(lambda: None in ours, what="our end-of-candidates")
            assert ours[-1] is None and len(ours) >= 2
            first = ours[0]
            assert first is not None and first.sdp_mid == "0" and first.sdp_mline_index == 0
            assert first.candidate.startswith("candidate:") and " 127.0.0.1 " in first.candidate
            for candidate in ours:
                await peer.add_candidate(candidate)
            await wait_for(lambda: peer.frames["video"] > FRAMES, what="video after trickle")
        finally:
            await peer.close()
            await session.close()

    run(body)


async def _restart_peer_ice(peer: BrowserPeer) -> tuple[aioice.Connection, aioice.Connection]:
    """Give the aiortc peer a fresh ICE agent, as a browser's restartIce() does.

    aiortc cannot restart ICE, so this swaps its transport's aioice connection (test-only
    use of aiortc internals, checked by test_canary).  The DTLS transport keeps reading
    the queue it was reading, now fed by the new agent.
    """
    ice_transport = peer.transceiver("audio").sender.transport.transport
    old: aioice.Connection = ice_transport._connection
    new = aioice.Connection(ice_controlling=True, components=1)
    await new.gather_candidates()
    new._queue = old._queue
    return old, new


def test_ice_restart_keeps_media_flowing() -> None:
    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-restart", "echo")
        states: list[SessionState] = []
        session.on_state = states.append
        peer = BrowserPeer()
        try:
            await connect(session, peer)
            await wait_for(lambda: peer.frames["video"] > 10, what="video before the restart")
            before = session.stats()
            old_pair = before.extra["selected_pair"]

            old, new = await _restart_peer_ice(peer)
            offer = peer.pc.localDescription.sdp
            old_ufrag, old_pwd = ice_credentials(offer)
            reoffer = without_candidates(offer).replace(
                f"a=ice-ufrag:{old_ufrag}", f"a=ice-ufrag:{new.local_username}"
            ).replace(f"a=ice-pwd:{old_pwd}", f"a=ice-pwd:{new.local_password}")
            answer = await session.accept_offer(reoffer)
            new_ufrag, new_pwd = ice_credentials(answer)
            old_answer_ufrag = ice_credentials(peer.pc.remoteDescription.sdp)[0]
            assert new_ufrag != old_answer_ufrag  # RFC 8445 9: new credentials in the answer
            for c in new.local_candidates:
                await session.add_remote_candidate(
                    IceCandidate("candidate:" + c.to_sdp(), "0", 0))
            await session.add_remote_candidate(None)
            new.remote_username, new.remote_password = new_ufrag, new_pwd
            for line in candidates_of(answer):
                await new.add_remote_candidate(aioice.Candidate.from_sdp(line[10:].split(
                    " ufrag ")[0]))
            await new.add_remote_candidate(None)
            await asyncio.wait_for(new.connect(), 10)

            ice_transport = peer.transceiver("audio").sender.transport.transport
            ice_transport._send, ice_transport._recv = new.send, new.recv
            ice_transport._connection = new
            old._queue = asyncio.Queue()  # the old agent's close must not end DTLS reads
            await old.close()  # from now on only the new path can carry media

            await wait_for(lambda: session.stats().extra["ice_restarts"] == 1,
                           what="the endpoint to switch to the restarted ICE")
            frames = peer.frames["video"]
            received = session.stats().packets_received["video"]
            await wait_for(lambda: peer.frames["video"] > frames + FRAMES,
                           what="video after the restart")
            after = session.stats()
            assert after.packets_received["video"] > received + FRAMES
            assert after.extra["selected_pair"] != old_pair
            assert after.extra["selected_pair"][1][1] == new.local_candidates[0].port
            assert "failed" not in states and session.state == "connected"
            await new.close()
        finally:
            await peer.close()
            await session.close()

    run(body)



class _RequestLog:
    """Times (loop clock) of the Binding requests a test peer's aioice agent receives."""

    def __init__(self, agent: aioice.Connection) -> None:
        self.times: list[float] = []
        received = agent.request_received

        def spy(message: Any, addr: tuple[str, int], protocol: Any) -> None:
            if message.message_method == aioice.stun.Method.BINDING:
                self.times.append(asyncio.get_running_loop().time())
            received(message, addr, protocol)

        agent.request_received = spy  # type: ignore[method-assign]


async def _restart_late(
    session: WebRtcSession, peer: BrowserPeer, apply_after: float
) -> tuple[aioice.Connection, _RequestLog, float, int]:
    """An ICE restart whose browser applies the answer ``apply_after`` s after it is sent.

    Returns the browser's new agent, the log of checks it received, when the answer left
    the gateway, and how many of our checks had arrived before the browser's first one.
    """
    old, new = await _restart_peer_ice(peer)
    checks = _RequestLog(new)
    offer = peer.pc.localDescription.sdp
    old_ufrag, old_pwd = ice_credentials(offer)
    reoffer = without_candidates(offer).replace(
        f"a=ice-ufrag:{old_ufrag}", f"a=ice-ufrag:{new.local_username}"
    ).replace(f"a=ice-pwd:{old_pwd}", f"a=ice-pwd:{new.local_password}")
    answer = await session.accept_offer(reoffer)
    answered_at = asyncio.get_running_loop().time()
    # The browser trickles its new candidates at once, so nothing but our waiting for its
    # first check stops our checks from starting now.
    for c in new.local_candidates:
        await session.add_remote_candidate(IceCandidate("candidate:" + c.to_sdp(), "0", 0))
    await session.add_remote_candidate(None)

    await asyncio.sleep(apply_after)  # the answer is still on its way / not yet applied
    new.remote_username, new.remote_password = ice_credentials(answer)
    for line in candidates_of(answer):
        await new.add_remote_candidate(aioice.Candidate.from_sdp(line[10:].split(" ufrag ")[0]))
    await new.add_remote_candidate(None)
    before_first_check = len(checks.times)
    await asyncio.wait_for(new.connect(), 10)  # sends the browser's first check at once

    ice_transport = peer.transceiver("audio").sender.transport.transport
    ice_transport._send, ice_transport._recv = new.send, new.recv
    ice_transport._connection = new
    old._queue = asyncio.Queue()
    await old.close()  # from now on only the new path can carry media
    return new, checks, answered_at, before_first_check


def test_ice_restart_checks_wait_for_the_browsers_first_check() -> None:
    """Our checks start only once the browser has shown it applied the answer."""
    import gateway.webrtc.endpoint as endpoint_module

    apply_after = 0.5
    assert apply_after < endpoint_module.CHECKS_FALLBACK  # else the fallback would fire

    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-late-answer", "echo")
        states: list[SessionState] = []
        session.on_state = states.append
        peer = BrowserPeer()
        try:
            await connect(session, peer)
            await wait_for(lambda: peer.frames["video"] > 10, what="video before the restart")
            new, checks, _, before_first_check = await _restart_late(session, peer,
                                                                     apply_after)
            assert before_first_check == 0, "we checked before the browser had our answer"
            await wait_for(lambda: session.stats().extra["ice_restarts"] == 1,
                           what="the endpoint to switch to the restarted ICE")
            assert checks.times, "we never checked the browser's new candidates"
            frames = peer.frames["video"]
            await wait_for(lambda: peer.frames["video"] > frames + FRAMES,
                           what="video after the restart")
            assert session.stats().extra["selected_pair"][1][1] == new.local_candidates[0].port
            assert "failed" not in states and session.state == "connected"
            await new.close()
        finally:
            await peer.close()
            await session.close()

    run(body)


def test_ice_restart_checks_start_after_the_fallback_without_browser_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A browser that does not check gets our checks after CHECKS_FALLBACK all the same."""
    import gateway.webrtc.endpoint as endpoint_module

    monkeypatch.setattr(endpoint_module, "CHECKS_FALLBACK", 0.3)

    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-silent-browser", "echo")
        peer = BrowserPeer()
        try:
            await connect(session, peer)
            await wait_for(lambda: peer.frames["video"] > 10, what="video before the restart")
            new, checks, answered_at, before_first_check = await _restart_late(
                session, peer, 1.0)
            assert before_first_check > 0, "the fallback did not start our checks"
            assert 0.3 <= checks.times[0] - answered_at < 1.0
            await wait_for(lambda: session.stats().extra["ice_restarts"] == 1,
                           what="the endpoint to switch to the restarted ICE")
            assert session.stats().extra["selected_pair"][1][1] == new.local_candidates[0].port
            # Media both ways on the new path (the browser's old agent is closed).  Audio,
            # not decoded video: aiortc's video decoding sometimes stalls after a restart
            # this late in the call, with or without the gateway's waiting for checks.
            frames = peer.frames["audio"]
            received = session.stats().packets_received["video"]
            await wait_for(lambda: peer.frames["audio"] > frames + FRAMES,
                           what="audio after the restart")
            assert session.stats().packets_received["video"] > received + FRAMES
            assert session.state == "connected"
            await new.close()
        finally:
            await peer.close()
            await session.close()

    run(body)


BAD_OFFERS = {
    "garbage": "this is not SDP at all",
    "empty": "",
    "no media": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
    "no fingerprint": None,
    "no ice-ufrag": None,
}


@pytest.mark.parametrize("case", list(BAD_OFFERS))
def test_bad_offer_raises_a_value_error_and_the_session_stays_closable(case: str) -> None:
    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-bad", "echo")
        states: list[SessionState] = []
        session.on_state = states.append
        peer = BrowserPeer()
        try:
            good = await peer.offer()
            offer = BAD_OFFERS[case]
            if case == "no fingerprint":
                offer = "".join(line + "\r\n" for line in good.split("\r\n")
                                if line and not line.startswith("a=fingerprint:"))
            elif case == "no ice-ufrag":
                offer = "".join(line + "\r\n" for line in good.split("\r\n")
                                if line and not line.startswith("a=ice-ufrag:"))
            assert offer is not None
            with pytest.raises(OfferError) as info:
                await session.accept_offer(offer)
            assert isinstance(info.value, ValueError)
            assert {"garbage": "not valid SDP", "empty": "empty", "no media": "no media",
                    "no fingerprint": "fingerprint", "no ice-ufrag": "ice-ufrag"}[case] in str(
                        info.value)
            assert session.state == "new" and states == []
            # The session is untouched: a good offer still works afterwards.
            if case == "garbage":
                await peer.answer(await session.accept_offer(good))
                await wait_for(lambda: session.state == "connected", what="connected")
        finally:
            await peer.close()
            await session.close()
        assert session.state == "closed"

    run(body)


def test_keyframe_requests_and_nacks_cross_between_browser_and_endpoint() -> None:
    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-pli", "bridge")
        events: list[Feedback] = []
        session.on_feedback = events.append
        seqs: list[int] = []
        session.on_rtp = lambda kind, pkt: seqs.append(int.from_bytes(pkt[2:4], "big")) if (
            kind == "video") else None
        rtcp: list[bytes] = []
        session.on_rtcp = rtcp.append
        peer = BrowserPeer()
        keyframes = 0

        def count_keyframe() -> None:
            nonlocal keyframes
            keyframes += 1

        try:
            await connect(session, peer)
            await wait_for(lambda: len(seqs) > 10, what="browser video at the endpoint")
            video = peer.transceiver("video")
            video.sender._send_keyframe = count_keyframe

            # Endpoint -> browser: PLI reaches the browser's video sender.
            assert session.request_keyframe("video")
            await wait_for(lambda: keyframes >= 1, what="the browser's sender to get PLI")
            assert not session.request_keyframe("audio")

            # Browser -> endpoint: PLI about our video SSRC becomes an event.
            ours = session.local_ssrcs["video"]
            await video.receiver._send_rtcp_pli(ours)
            await wait_for(lambda: any(e.type == "pli" for e in events), what="PLI event")
            pli = next(e for e in events if e.type == "pli")
            assert pli.kind == "video" and pli.media_ssrc == ours

            # A packet we sent, NACKed by the browser, is retransmitted from the history.
            packet = bytes([0x80, 100, 0x12, 0x34]) + bytes(8) + b"payload"
            assert session.send_rtp("video", packet)
            await video.receiver._send_rtcp_nack(ours, [0x1234])
            await wait_for(lambda: any(e.type == "nack" for e in events), what="NACK event")
            nack = next(e for e in events if e.type == "nack")
            assert nack.lost == (0x1234,) and nack.kind == "video"
            assert session.stats().extra["retransmitted"] == 1
            await wait_for(lambda: bool(rtcp), what="the browser's RTCP at on_rtcp")
        finally:
            await peer.close()
            await session.close()

    run(body)


def test_echo_forwards_the_browsers_pli_to_its_own_sender() -> None:
    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-echo-pli", "echo")
        peer = BrowserPeer()
        keyframes = 0

        def count_keyframe() -> None:
            nonlocal keyframes
            keyframes += 1

        try:
            await connect(session, peer)
            await wait_for(lambda: peer.frames["video"] > 5, what="echoed video")
            video = peer.transceiver("video")
            video.sender._send_keyframe = count_keyframe
            await video.receiver._send_rtcp_pli(session.local_ssrcs["video"])
            await wait_for(lambda: keyframes >= 1, what="the PLI to come back as our PLI")
            assert session.stats().extra["keyframes_requested"] >= 1
        finally:
            await peer.close()
            await session.close()

    run(body)


def test_browser_closing_closes_the_session() -> None:
    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-bye", "echo")
        peer = BrowserPeer()
        try:
            await connect(session, peer)
            await wait_for(lambda: session.state == "connected", what="connected")
        finally:
            await peer.close()  # aiortc sends DTLS close_notify
        await wait_for(lambda: session.state == "closed", what="the session to close")
        assert "call-bye" not in endpoint.sessions

    run(body)


def test_sessions_are_separate_and_modes_checked() -> None:
    endpoint = WebRtcEndpoint(WebRtcConfig())
    endpoint.create_session("a", "echo")
    with pytest.raises(ValueError, match="already open"):
        endpoint.create_session("a", "echo")
    with pytest.raises(ValueError, match="unknown media mode"):
        endpoint.create_session("b", "karaoke")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown video codec"):
        endpoint.create_session("c", "bridge", codec_preferences={"video": ["AV1"]})
    session = endpoint.sessions["a"]
    assert session.send_rtp("video", bytes(20)) is False  # not connected: nothing to send on
    assert session.request_keyframe() is False


def test_silence_means_disconnected_and_media_means_connected_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import gateway.webrtc.endpoint as endpoint_module

    monkeypatch.setattr(endpoint_module, "RTCP_INTERVAL", 0.05)
    monkeypatch.setattr(endpoint_module, "DISCONNECTED_AFTER", 0.3)

    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-quiet", "echo")
        states: list[SessionState] = []
        session.on_state = states.append
        peer = BrowserPeer()
        try:
            await connect(session, peer)
            await wait_for(lambda: session.state == "connected", what="connected")
            ice_transport = peer.transceiver("audio").sender.transport.transport
            send = ice_transport._send

            async def nothing(data: bytes) -> None:
                return None

            ice_transport._send = nothing  # the browser's network goes quiet
            await wait_for(lambda: session.state == "disconnected", what="disconnected")
            ice_transport._send = send
            await wait_for(lambda: session.state == "connected", what="connected again")
            assert states == ["connecting", "connected", "disconnected", "connected"]
        finally:
            await peer.close()
            await session.close()

    run(body)


def test_ice_that_never_connects_fails_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.webrtc.endpoint as endpoint_module

    monkeypatch.setattr(endpoint_module, "ICE_DEADLINE", 0.5)

    async def body() -> None:
        endpoint = WebRtcEndpoint(LOOPBACK)
        session = endpoint.create_session("call-noice", "echo")
        peer = BrowserPeer()
        try:
            offer = without_candidates(await peer.offer())
            # Only an mDNS candidate, which the gateway cannot resolve: it waits for the
            # browser's own checks, which never come because the answer is not applied.
            await session.accept_offer(offer)
            await session.add_remote_candidate(IceCandidate(
                "candidate:1 1 udp 2130706431 4b3c2a1d.local 50000 typ host", "0", 0))
            await session.add_remote_candidate(None)
            await wait_for(lambda: session.state == "failed", timeout=5, what="failed")
            assert "ICE failed" in (session.failure or "")
            assert session.stats().extra["failure"] == session.failure
        finally:
            await peer.close()
            await session.close()
        assert session.state == "closed"

    run(body)


class _StunServer(asyncio.DatagramProtocol):
    """A Binding-only STUN server on 127.0.0.1, to exercise server-reflexive gathering."""

    def __init__(self) -> None:
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        from aioice import stun

        request = stun.parse_message(data)
        self.requests += 1
        response = stun.Message(message_method=stun.Method.BINDING,
                                message_class=stun.Class.RESPONSE,
                                transaction_id=request.transaction_id)
        response.attributes["XOR-MAPPED-ADDRESS"] = addr
        self.transport.sendto(bytes(response), addr)


def test_configured_stun_server_gives_a_trickled_srflx_candidate() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        transport, server = await loop.create_datagram_endpoint(
            _StunServer, local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        endpoint = WebRtcEndpoint(WebRtcConfig(host_addresses=["127.0.0.1"],
                                               stun_servers=[f"stun:127.0.0.1:{port}"]))
        session = endpoint.create_session("call-stun", "echo")
        ours: list[IceCandidate | None] = []
        session.on_local_candidate = ours.append
        peer = BrowserPeer()
        try:
            answer = await connect(session, peer)
            assert "typ host" in answer and "a=end-of-candidates" not in answer
            await wait_for(lambda: None in ours, what="end of our trickled candidates")
            assert server.requests >= 1
            srflx = [c for c in ours if c is not None and " typ srflx " in c.candidate]
            assert len(srflx) == 1 and "raddr 127.0.0.1" in srflx[0].candidate
            for candidate in ours:
                await peer.add_candidate(candidate)
            await wait_for(lambda: peer.frames["video"] > FRAMES, what="echoed video")
        finally:
            await peer.close()
            await session.close()
            transport.close()

    run(body)
