"""aiortc's RTCPeerConnection standing in for a family's browser, plus test helpers.

In-process, no STUN (``iceServers=[]``), 127.0.0.1 only (the ``loopback_peer`` fixture).
The peer sends a small synthetic video (aiortc's own VP8/H.264 encoder) and a tone, and
counts the frames it decodes from what the gateway sends back.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from aiortc.sdp import candidate_from_sdp

from gateway.webrtc import IceCandidate, WebRtcConfig, WebRtcEndpoint, WebRtcSession

LOOPBACK = WebRtcConfig(host_addresses=["127.0.0.1"])


class MovingVideo(VideoStreamTrack):
    """320x240 frames whose brightness and a bar move, so every frame differs."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(320, 240, "yuv420p")
        y = frame.planes[0]
        row = bytes(((x + 3 * self.n) & 0xFF) for x in range(y.line_size))
        y.update(row * y.height)
        for plane in frame.planes[1:]:
            plane.update(bytes([(128 + self.n) & 0xFF]) * plane.buffer_size)
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


class Tone(AudioStreamTrack):
    """A 400 Hz tone instead of silence, so Opus has something to encode."""

    def __init__(self) -> None:
        super().__init__()
        self.samples = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        assert isinstance(frame, av.AudioFrame)
        count = frame.samples
        pcm = b"".join(
            int(3000 * math.sin(2 * math.pi * 400 * (self.samples + i) / 48000)).to_bytes(
                2, "little", signed=True) for i in range(count))
        frame.planes[0].update(pcm)
        self.samples += count
        return frame


class BrowserPeer:
    """The offering side, as a browser would be."""

    def __init__(self, *, video_codec: str | None = None, audio: bool = True,
                 video: bool = True) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames: dict[str, int] = {"audio": 0, "video": 0}
        self.decoded_sizes: set[tuple[int, int]] = set()
        self.last_video: av.VideoFrame | None = None
        self._tasks: list[asyncio.Task[None]] = []
        if audio:
            self.pc.addTrack(Tone())
        if video:
            self.pc.addTrack(MovingVideo())
        if video_codec is not None:
            caps = RTCRtpSender.getCapabilities("video")
            chosen = [c for c in caps.codecs if c.mimeType.lower() == f"video/{video_codec}".lower()
                      and (video_codec != "H264" or
                           c.parameters.get("profile-level-id") == "42e01f")]
            assert chosen, video_codec
            for t in self.pc.getTransceivers():
                if t.kind == "video":
                    t.setCodecPreferences(chosen)

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._tasks.append(asyncio.ensure_future(self._pump(track)))

    async def _pump(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames[track.kind] += 1
                if track.kind == "video":
                    self.decoded_sizes.add((frame.width, frame.height))
                    self.last_video = frame
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def add_candidate(self, candidate: IceCandidate | None) -> None:
        if candidate is None:
            await self.pc.addIceCandidate(None)
            return
        c = candidate_from_sdp(candidate.candidate.split(":", 1)[1])
        c.sdpMid, c.sdpMLineIndex = candidate.sdp_mid, candidate.sdp_mline_index
        await self.pc.addIceCandidate(c)

    def transceiver(self, kind: str) -> Any:
        return next(t for t in self.pc.getTransceivers() if t.kind == kind)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()


def candidates_of(sdp: str) -> list[str]:
    """The candidate lines of the first m-line (the BUNDLE transport), without 'a='."""
    first = sdp.split("\r\nm=")[1]
    return [line[2:] for line in first.split("\r\n") if line.startswith("a=candidate:")]


def without_candidates(sdp: str) -> str:
    return "".join(line + "\r\n" for line in sdp.split("\r\n") if line and not (
        line.startswith("a=candidate:") or line == "a=end-of-candidates"))


def ice_credentials(sdp: str) -> tuple[str, str]:
    ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp)
    pwd = re.search(r"a=ice-pwd:(\S+)", sdp)
    assert ufrag and pwd
    return ufrag.group(1), pwd.group(1)


async def wait_for(condition: Callable[[], bool], timeout: float = 15.0,
                   what: str = "condition") -> None:
    """Poll (every 20 ms) until ``condition()``; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def run(coro_fn: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    """Run one async test body on a fresh loop with an overall bound."""

    async def bounded() -> None:
        await asyncio.wait_for(coro_fn(), timeout)

    asyncio.run(bounded())


async def connect(
    session: WebRtcSession, peer: BrowserPeer
) -> str:
    """Offer/answer with everything in the SDP; returns the answer."""
    answer = await session.accept_offer(await peer.offer())
    await peer.answer(answer)
    return answer


__all__ = [
    "LOOPBACK",
    "BrowserPeer",
    "WebRtcEndpoint",
    "candidates_of",
    "connect",
    "ice_credentials",
    "run",
    "wait_for",
    "without_candidates",
]
