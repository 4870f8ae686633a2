"""WebSocket signalling against a fake media endpoint, over real sockets on loopback."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
from web.fakes import ANSWER, FakeMediaEndpoint, FakeMediaSession
from web.helpers import browser, issue, run, running, web_config, ws_url

from gateway.web import protocol
from gateway.web.media import MediaUnavailable
from gateway.web.server import WebServer
from gateway.webrtc.api import IceCandidate

OFFER = "v=0\r\no=- 2 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
CAND = "candidate:1 1 udp 2122260223 192.0.2.10 54400 typ host"


def test_full_flow_offer_answer_trickle_events_hangup(tmp_path: Path) -> None:
    media = FakeMediaEndpoint()

    async def main() -> None:
        async with running(web_config(tmp_path), media) as srv, \
                browser(ws_url(srv)) as b:
            joined = await b.join(issue(srv, "visit-7"))
            assert joined["call_id"] == "visit-7" and joined["role"] == "family"
            session = media.sessions[0]
            assert (session.call_id, session.mode) == ("visit-7", "echo")

            await b.send({"type": "offer", "sdp": OFFER})
            assert (await b.expect("answer"))["sdp"] == ANSWER
            assert session.offers == [OFFER]

            # trickle, browser -> gateway, ending with a null candidate
            await b.send({"type": "candidate", "candidate": CAND, "sdpMid": "0",
                          "sdpMLineIndex": 0})
            await b.send({"type": "candidate", "candidate": None})
            await b.send({"type": "ping", "id": 1})  # a round trip: both were handled
            assert await b.expect("pong") == {"type": "pong", "id": 1}
            assert session.remote == [IceCandidate(CAND, "0", 0), None]

            # trickle, gateway -> browser
            session.emit_candidate(IceCandidate("candidate:2 1 udp 1 198.51.100.1 9 typ host",
                                                "0", 0))
            session.emit_candidate(None)
            assert await b.expect("candidate") == {
                "type": "candidate", "candidate": "candidate:2 1 udp 1 198.51.100.1 9 typ host",
                "sdpMid": "0", "sdpMLineIndex": 0}
            assert await b.expect("candidate") == {"type": "candidate", "candidate": None}

            # media state and server-pushed events
            session.set_state("connecting")
            session.set_state("connected")
            assert await b.expect("event") == {"type": "event", "kind": "connected"}
            assert srv.hub.broadcast("visit-7", {"kind": "warning-minutes-left",
                                                 "minutes": 2}) == 1
            assert srv.hub.broadcast("visit-7", {"kind": "balance-low"}) == 1
            assert srv.hub.broadcast("another-call", {"kind": "balance-low"}) == 0
            assert (await b.expect("event"))["minutes"] == 2
            assert (await b.expect("event"))["kind"] == "balance-low"
            assert srv.hub.participants("visit-7") == {joined["peer"]: "family"}

            await b.send({"type": "hangup"})
            assert await b.expect("event") == {"type": "event", "kind": "ended",
                                               "reason": "hangup"}
            assert await b.closed() == (1000, "hangup")
            await _until(lambda: session.closed and not srv.hub.calls())

    run(main())


async def _until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def test_two_browsers_see_each_other_join_and_leave(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(web_config(tmp_path)) as srv, \
                browser(ws_url(srv)) as a:
            first = await a.join(issue(srv, "c"))
            async with browser(ws_url(srv)) as b:
                second = await b.join(issue(srv, "c"))
                seen = await b.expect("event")  # b learns a is there
                assert seen == {"type": "event", "kind": "peer-joined",
                                "peer": first["peer"], "role": "family"}
                assert (await a.expect("event"))["peer"] == second["peer"]
            left = await a.expect("event")
            assert left == {"type": "event", "kind": "peer-left", "peer": second["peer"],
                            "role": "family", "reason": "disconnected"}

    run(main())


def test_ended_event_closes_every_browser_in_the_call(tmp_path: Path) -> None:
    media = FakeMediaEndpoint()

    async def main() -> None:
        async with running(web_config(tmp_path), media) as srv, \
                browser(ws_url(srv)) as a, browser(ws_url(srv)) as b:
            await a.join(issue(srv, "c"))
            await b.join(issue(srv, "c"))
            await a.expect("event")  # peer-joined
            await b.expect("event")
            assert srv.hub.end_call("c", "time-limit") == 2
            for x in (a, b):
                assert await x.expect("event") == {"type": "event", "kind": "ended",
                                                   "reason": "time-limit"}
                assert await x.closed() == (1000, "call ended")
            await _until(lambda: all(s.closed for s in media.sessions))

    run(main())


def test_media_closing_ends_the_call_for_that_browser(tmp_path: Path) -> None:
    media = FakeMediaEndpoint()

    async def main() -> None:
        async with running(web_config(tmp_path), media) as srv, \
                browser(ws_url(srv)) as b:
            await b.join(issue(srv))
            media.sessions[0].set_state("failed")  # not the end: ICE may restart
            media.sessions[0].set_state("closed")
            assert (await b.expect("event"))["reason"] == "media-closed"
            assert (await b.closed())[0] == 1000

    run(main())


@pytest.mark.parametrize(("token_of", "extra", "code", "reason"), [
    (lambda srv: "garbage", {}, 4401, "not BODY.SIGNATURE"),
    (lambda srv: issue(srv)[:-2] + "xx", {}, 4401, "signature"),
    (lambda srv: issue(srv, ttl=60, now=time.time() - 61), {}, 4408, "expired"),
    (lambda srv: issue(srv, "call-1"), {"call_id": "call-2"}, 4403, "another call"),
])
def test_bad_tokens_close_with_clear_codes(tmp_path: Path, token_of: object,
                                           extra: dict[str, str], code: int,
                                           reason: str) -> None:
    media = FakeMediaEndpoint()

    async def main() -> None:
        async with running(web_config(tmp_path), media) as srv, \
                browser(ws_url(srv)) as b:
            await b.send({"type": "join", "token": token_of(srv), **extra})  # type: ignore[operator]
            got_code, got_reason = await b.closed()
            assert got_code == code and reason in got_reason
            assert media.sessions == []

    run(main())


def test_messages_before_join_get_errors_and_join_still_works(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(web_config(tmp_path)) as srv, browser(ws_url(srv)) as b:
            await b.send({"type": "offer", "sdp": OFFER})
            assert (await b.expect("error"))["code"] == "join_required"
            await b.send({"type": "join"})
            err = await b.expect("error")
            assert (err["code"], err["field"]) == ("invalid_message", "token")
            await b.join(issue(srv))

    run(main())


def test_no_join_in_time_closes_4401(tmp_path: Path) -> None:
    async def main() -> None:
        async with running(web_config(tmp_path)) as srv:
            srv.context.join_timeout = 0.2
            async with browser(ws_url(srv)) as b:
                assert await b.closed() == (4401, "join required")

    run(main())


def test_malformed_and_unknown_messages_keep_the_connection_usable(tmp_path: Path) -> None:
    media = FakeMediaEndpoint()

    async def main() -> None:
        async with running(web_config(tmp_path), media) as srv, browser(ws_url(srv)) as b:
            await b.join(issue(srv))
            cases: list[tuple[str | bytes, str, str | None]] = [
                ("{not json", "invalid_json", None),
                ("[1, 2]", "invalid_message", None),
                ('{"no": "type"}', "invalid_message", "type"),
                ('{"type": "dance"}', "unknown_type", "type"),
                ('{"type": "offer"}', "invalid_message", "sdp"),
                ('{"type": "offer", "sdp": 5}', "invalid_message", "sdp"),
                ('{"type": "candidate", "candidate": "nope", "sdpMid": "0"}',
                 "invalid_message", "candidate"),
                (json.dumps({"type": "candidate", "candidate": CAND}), "invalid_message",
                 "sdpMid"),
                (json.dumps({"type": "candidate", "candidate": CAND, "sdpMLineIndex": -1}),
                 "invalid_message", "sdpMLineIndex"),
                (json.dumps({"type": "join", "token": issue(srv)}), "already_joined", "type"),
                (b"\x00binary", "invalid_message", None),
            ]
            for frame, code, field in cases:
                await b.ws.send(frame)
                err = await b.expect("error")
                assert err["code"] == code, (frame, err)
                assert err.get("field") == field, (frame, err)
                assert err["message"]
            await b.send({"type": "offer", "sdp": OFFER})
            assert (await b.expect("answer"))["sdp"] == ANSWER

    run(main())


def test_invalid_sdp_or_candidate_gets_an_error_and_the_connection_stays(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with running(web_config(tmp_path)) as srv, browser(ws_url(srv)) as b:
            await b.join(issue(srv))
            await b.send({"type": "offer", "sdp": "this is not sdp"})
            err = await b.expect("error")
            assert (err["code"], err["field"]) == ("invalid_sdp", "sdp")
            assert "v=0" in err["message"]
            await b.send({"type": "candidate", "candidate": "candidate:bogus", "sdpMid": "0"})
            assert (await b.expect("error"))["code"] == "invalid_candidate"
            await b.send({"type": "offer", "sdp": OFFER})
            await b.expect("answer")

    run(main())


def test_a_media_crash_is_logged_and_closes_1011(tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    media = FakeMediaEndpoint()

    def crashing(call_id: str, mode: str) -> FakeMediaSession:
        session = FakeMediaSession(call_id, mode)  # type: ignore[arg-type]
        session.fail_with = RuntimeError("boom in the media endpoint")
        return session

    media.session_factory = crashing  # type: ignore[assignment]

    async def main() -> None:
        async with running(web_config(tmp_path), media) as srv, browser(ws_url(srv)) as b:
            await b.join(issue(srv))
            await b.send({"type": "offer", "sdp": OFFER})
            assert (await b.expect("error"))["code"] == "media_error"
            assert (await b.closed())[0] == 1011
            await _until(lambda: media.sessions[0].closed)

    run(main())
    assert "boom in the media endpoint" in caplog.text


def test_oversized_message_closes_1009(tmp_path: Path) -> None:
    async def main() -> None:
        config = web_config(tmp_path, "max_message_bytes = 4096\n")
        async with running(config) as srv, browser(ws_url(srv)) as b:
            await b.join(issue(srv))
            await b.send({"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 1000})
            assert (await b.closed())[0] == 1009
            await _until(lambda: not srv.hub.calls())

    run(main())


def test_foreign_origin_is_refused_4403_and_listed_or_same_origin_allowed(
        tmp_path: Path) -> None:
    async def main() -> None:
        config = web_config(tmp_path, 'allowed_origins = ["https://visits.example.org"]\n')
        async with running(config) as srv:
            url = ws_url(srv)
            own = url.replace("ws://", "http://").removesuffix("/ws")
            for origin in ("https://evil.example", "null", own.replace("http:", "https:")):
                async with browser(url, origin=origin) as b:
                    assert await b.closed() == (4403, "origin not allowed"), origin
            for good in ("https://visits.example.org", own, None):
                async with browser(url, origin=good) as b:
                    await b.join(issue(srv))

    run(main())


def test_repeated_failed_joins_block_the_source(tmp_path: Path) -> None:
    async def main() -> None:
        config = web_config(tmp_path, "join_failure_limit = 2\n")
        async with running(config) as srv:
            for _ in range(2):
                async with browser(ws_url(srv)) as b:
                    await b.send({"type": "join", "token": "bad"})
                    assert (await b.closed())[0] == 4401
            async with browser(ws_url(srv)) as b:
                assert (await b.closed())[0] == 4429

    run(main())


def test_broadcast_refuses_events_outside_the_protocol(tmp_path: Path) -> None:
    from gateway.web.signalling import SignallingHub

    hub = SignallingHub()
    with pytest.raises(ValueError, match="unknown event kind"):
        hub.broadcast("c", {"kind": "party"})
    with pytest.raises(ValueError, match="minutes"):
        hub.broadcast("c", {"kind": "warning-minutes-left"})
    with pytest.raises(ValueError, match="reason"):
        hub.broadcast("c", {"kind": "ended"})
    assert hub.broadcast("c", {"kind": "ended", "reason": "x"}) == 0


def test_stop_closes_sockets_1001_releases_ports_and_leaves_signals_alone(
        tmp_path: Path) -> None:
    media = FakeMediaEndpoint()

    async def main() -> None:
        before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        server = WebServer(web_config(tmp_path), media)
        server.start(asyncio.get_running_loop())
        port = server.bound[0].port
        async with browser(ws_url(server)) as b:
            await b.join(issue(server))
            during = {sig: signal.getsignal(sig) for sig in before}
            assert during == before  # uvicorn installed no handlers: Twisted's stay
            started = time.monotonic()
            stopping = asyncio.ensure_future(server.stop())
            assert await b.closed() == (protocol.CLOSE_GOING_AWAY, "gateway shutting down")
            await stopping
            assert time.monotonic() - started < 3
        assert media.sessions[0].closed
        import socket
        with socket.socket() as s:  # the port is free again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))

    run(main())


@pytest.mark.parametrize(("error", "code", "message"), [
    (MediaUnavailable("all media ports busy"), 1013, "media_unavailable"),
    (RuntimeError("endpoint bug"), 1011, None),
])
def test_a_failed_create_session_closes_cleanly(tmp_path: Path, error: Exception, code: int,
                                                message: str | None) -> None:
    media = FakeMediaEndpoint()

    def failing(call_id: str, mode: str) -> FakeMediaSession:
        raise error

    media.session_factory = failing  # type: ignore[assignment]

    async def main() -> None:
        async with running(web_config(tmp_path), media) as srv, browser(ws_url(srv)) as b:
            await b.send({"type": "join", "token": issue(srv)})
            if message is not None:
                assert (await b.expect("error"))["code"] == message
            assert (await b.closed())[0] == code
            await _until(lambda: len(srv.hub) == 0)

    run(main())
