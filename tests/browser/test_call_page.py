"""The family call page in headless Chromium against the real gateway process.

What the browser decoded comes from the page's own getStats (``window.gwCall.stats()``);
what the gateway counted comes from its leave log line
(``web: PEER left call CALL (REASON); media rx audio=N video=N tx ... packets; codecs ...``).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser.helpers import BrowserGateway, wait_until
from playwright.sync_api import Page, WebSocketRoute, expect


def join(page: Page, gw: BrowserGateway, token: str, codec: str | None = None) -> None:
    fragment = f"token={token}" + (f"&codec={codec}" if codec else "")
    page.goto(f"{gw.base_url}/#{fragment}")
    expect(page.locator("#status")).to_have_text("Ready to join.")
    page.get_by_role("button", name="Join the visit").click()


def state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.gwCall.state()")
    return result


def stats(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate("window.gwCall.stats()")
    return result


def decoded(page: Page) -> int:
    video = (stats(page) or {}).get("video") or {}
    return int(video.get("framesDecoded", 0))


def wait_decoding(page: Page, frames: int = 30, timeout: float = 15.0) -> dict[str, Any]:
    """Until the browser decoded ``frames`` video frames and played received audio."""
    def ok() -> dict[str, Any] | None:
        s = stats(page) or {}
        video, audio = s.get("video") or {}, s.get("audio") or {}
        if (video.get("framesDecoded", 0) > frames and audio.get("packetsReceived", 0) > 0
                and audio.get("totalSamplesReceived", 0) > 0):
            return s
        return None
    result: dict[str, Any] = wait_until(page, ok, f"{frames} decoded frames and audio",
                                        timeout)
    return result


def hang_up(page: Page) -> None:
    page.get_by_role("button", name="Hang up").click()
    expect(page.get_by_role("heading", name="The visit has ended")).to_be_visible()
    expect(page.locator("#ended-reason")).to_contain_text("You hung up.")
    s = state(page)
    assert s["phase"] == "ended" and s["connectionState"] == "none" and s["ws"] == -1


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_echo_call_decodes_video_and_audio_both_ways(
        page: Page, echo_gateway: BrowserGateway, codec: str, tmp_path: Path) -> None:
    call_id = f"echo-{codec.lower()}"
    join(page, echo_gateway, echo_gateway.token(call_id), codec)
    wait_until(page, lambda: state(page)["phase"] == "in-call", "the call to connect")
    s = wait_decoding(page)
    assert s["video"]["codec"] == f"video/{codec}"
    assert s["sentVideo"]["codec"] == f"video/{codec}"
    assert s["audio"]["codec"] == "audio/opus"
    assert s["video"]["frameWidth"] > 0
    expect(page.locator("#quality-text")).to_have_text(re.compile(r"Connection: (good|fair)"))
    expect(page.locator("#remote-wait")).to_be_hidden()
    if codec == "VP8":
        page.screenshot(path=str(tmp_path / "call.png"))
        # keyboard only: mute and camera off are toggle buttons with aria-pressed
        mute = page.get_by_role("button", name="Mute")
        mute.focus()
        page.keyboard.press("Space")
        expect(mute).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_role("status")).to_contain_text("microphone is off")
        camera = page.get_by_role("button", name="Camera off")
        camera.focus()
        page.keyboard.press("Enter")
        expect(camera).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#self-off")).to_be_visible()
        assert state(page)["micMuted"] and state(page)["camOff"]
        # the fake devices are listed by name once permission is granted
        page.get_by_text("Camera and microphone", exact=True).click()
        expect(page.get_by_label("Camera", exact=True)).not_to_have_text("")
        expect(page.get_by_label("Microphone", exact=True)).not_to_have_text("")
    hang_up(page)

    # The gateway saw the same media: RTP from the browser, per kind, and closed it.
    [left] = echo_gateway.left(call_id)
    assert left["reason"] == "hangup"
    assert left["rx_video"] > 30 and left["rx_audio"] > 10, left
    assert left["tx_video"] > 30 and left["tx_audio"] > 10, left  # echoed back
    assert left["codecs"] == {"audio": "opus/48000/2", "video": f"{codec}/90000"}
    echo_gateway.wait_for(f"{call_id}#")  # the media session's own lines ...
    assert echo_gateway.count(": closed") >= 1  # ... and its close


def test_test_pattern_is_decoded_on_a_phone_sized_page(
        browser: Any, pattern_gateway: BrowserGateway, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844},
                                  device_scale_factor=2, is_mobile=True, has_touch=True)
    page = context.new_page()
    try:
        join(page, pattern_gateway, pattern_gateway.token("pattern-1"))
        s = wait_decoding(page, frames=20)
        assert s["video"]["frameWidth"] > 0
        page.screenshot(path=str(tmp_path / "call-phone.png"))
        hang_up(page)
    finally:
        context.close()
    [left] = pattern_gateway.left("pattern-1")
    assert left["tx_video"] > 20 and left["tx_audio"] > 10, left  # the generated pattern
    assert left["rx_video"] > 0 and left["rx_audio"] > 0, left  # the browser still sends


def test_link_problems_are_shown_in_words(page: Page, echo_gateway: BrowserGateway) -> None:
    title = page.locator("#problem-title")
    # no token at all: the page says so before trying anything
    page.goto(f"{echo_gateway.base_url}/")
    expect(title).to_have_text("The visit link is incomplete")
    expect(page.get_by_role("button", name="Join the visit")).to_be_hidden()
    # a forged token: the gateway closes with 4401
    page.goto(f"{echo_gateway.base_url}/#token=not-a-real-token")
    page.reload()
    page.get_by_role("button", name="Join the visit").click()
    expect(title).to_have_text("This visit link is not valid")
    expect(title).to_be_focused()
    assert state(page)["problem"] == "4401"
    # an expired one: 4408
    token = echo_gateway.token("expired-1", ttl=1)
    time.sleep(1.2)
    page.goto(f"{echo_gateway.base_url}/#token={token}")
    page.reload()
    page.get_by_role("button", name="Join the visit").click()
    expect(title).to_have_text("This visit link has expired")
    # a token in the query moves to the fragment (kept out of logs and later requests)
    page.goto(f"{echo_gateway.base_url}/?token=abc.def")
    expect(page.locator("#status")).to_have_text("Ready to join.")
    assert page.url.endswith("/#token=abc.def"), page.url


def test_ice_restart_keeps_the_call(page: Page, echo_gateway: BrowserGateway) -> None:
    join(page, echo_gateway, echo_gateway.token("restart-1"))
    before = wait_decoding(page, frames=10)["video"]["framesDecoded"]
    page.evaluate("window.gwCall.restartIce()")
    echo_gateway.wait_for("restart-1#", 5)
    echo_gateway.wait_for("ICE restart complete", 10)
    wait_until(page, lambda: state(page)["phase"] == "in-call", "in-call after the restart")
    wait_until(page, lambda: decoded(page) > before + 30, "frames after the ICE restart")
    assert state(page)["iceRestarts"] == 1 and state(page)["rejoins"] == 0
    hang_up(page)


class SocketProxy:
    """Playwright sits between the page and the gateway's /ws and can inject or cut."""

    def __init__(self, page: Page) -> None:
        self.routes: list[WebSocketRoute] = []
        page.route_web_socket(re.compile(r"/ws$"), self._route)

    def _route(self, ws: WebSocketRoute) -> None:
        ws.connect_to_server()  # messages pass both ways unchanged
        self.routes.append(ws)

    def push(self, message: dict[str, Any]) -> None:
        self.routes[-1].send(json.dumps(message))


def test_gateway_events_are_shown(page: Page, echo_gateway: BrowserGateway) -> None:
    proxy = SocketProxy(page)
    join(page, echo_gateway, echo_gateway.token("events-1"))
    wait_decoding(page, frames=5)
    notice = page.get_by_role("alert")
    proxy.push({"type": "event", "kind": "warning-minutes-left", "minutes": 2})
    expect(notice).to_have_text("2 minutes left in this visit.")
    proxy.push({"type": "event", "kind": "balance-low"})
    expect(notice).to_contain_text("running low")
    proxy.push({"type": "event", "kind": "peer-joined", "peer": "0badc0de", "role": "family"})
    expect(page.locator("#status")).to_have_text("Someone joined the visit.")
    proxy.push({"type": "event", "kind": "ended", "reason": "time-limit"})
    expect(page.locator("#ended-reason")).to_contain_text("The time for this visit is up.")
    assert state(page)["endedReason"] == "time-limit"
    # the page closed its socket and its media: the gateway lets the browser go
    [left] = echo_gateway.left("events-1")
    assert left["rx_video"] > 0


def test_a_dropped_websocket_rejoins_with_the_same_token(
        page: Page, echo_gateway: BrowserGateway) -> None:
    proxy = SocketProxy(page)
    join(page, echo_gateway, echo_gateway.token("drop-1"))
    wait_decoding(page, frames=10)
    proxy.routes[-1].close(code=1012, reason="service restart")  # not a hangup: come back
    wait_until(page, lambda: len(proxy.routes) == 2, "a second WebSocket")
    wait_until(page, lambda: state(page)["rejoins"] == 1 and state(page)["phase"] == "in-call",
               "the re-join")
    wait_decoding(page, frames=10)  # a new peer connection, decoding again
    # The first session ended: its socket closed, or (if the gateway had not noticed the
    # drop yet) the page closed its old peer connection and DTLS with it.
    [first] = echo_gateway.left("drop-1")
    assert first["reason"] in ("disconnected", "media-closed") and first["rx_video"] > 0
    assert echo_gateway.count("joined call drop-1 as family") == 2
    hang_up(page)
    wait_until(page, lambda: len(echo_gateway.left("drop-1")) == 2, "the second leave line")
