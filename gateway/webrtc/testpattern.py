"""The ``test-pattern`` mode's media: a moving picture and a tone, encoded with PyAV.

Lets a family check camera-less that video and sound reach their browser, before a visit,
without a kiosk.  Frames are drawn from precomputed rows (no numpy, a few hundred slices a
frame), encoded with libvpx or libx264 and packetized here (RFC 7741 VP8, RFC 6184 H.264
packetization-mode 1); the tone is Opus, PCMU or PCMA, whichever the browser agreed to.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import math
import random
import struct
from collections.abc import Callable, Iterator

import av

from .jsep import MediaPlan

__all__ = ["TestPattern", "packetize_h264", "packetize_vp8", "split_annexb"]

log = logging.getLogger(__name__)

MAX_PAYLOAD = 1200
_RTP = struct.Struct("!BBHII")


def packetize_vp8(frame: bytes, picture_id: int, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """RFC 7741 payloads: descriptor with a 15-bit PictureID, S bit on the first."""
    out: list[bytes] = []
    pid = bytes([0x80 | ((picture_id >> 8) & 0x7F), picture_id & 0xFF])
    room = max_payload - 4
    for pos in range(0, len(frame), room):
        first = 0x90 if pos == 0 else 0x80  # X=1, S=1 on the first packet of the frame
        out.append(bytes([first, 0x80]) + pid + frame[pos : pos + room])
    return out


def split_annexb(data: bytes) -> Iterator[bytes]:
    """NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    starts: list[tuple[int, int]] = []  # (start code position, payload position)
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        begin = i - 1 if i > 0 and data[i - 1] == 0 else i
        starts.append((begin, i + 3))
        i = data.find(b"\x00\x00\x01", i + 3)
    for n, (_, payload) in enumerate(starts):
        end = starts[n + 1][0] if n + 1 < len(starts) else len(data)
        nal = data[payload:end]
        if nal:
            yield nal


def packetize_h264(access_unit: bytes, max_payload: int = MAX_PAYLOAD) -> list[bytes]:
    """RFC 6184 packetization-mode 1: single NAL units, FU-A for the big ones."""
    out: list[bytes] = []
    for nal in split_annexb(access_unit):
        nal_type = nal[0] & 0x1F
        if nal_type == 9:  # access unit delimiter: carries nothing over RTP
            continue
        if len(nal) <= max_payload:
            out.append(nal)
            continue
        indicator = (nal[0] & 0xE0) | 28
        body = nal[1:]
        room = max_payload - 2
        for pos in range(0, len(body), room):
            header = nal_type
            if pos == 0:
                header |= 0x80
            if pos + room >= len(body):
                header |= 0x40
            out.append(bytes([indicator, header]) + body[pos : pos + room])
    return out


class _Picture:
    """A diagonal gradient that scrolls, a bright square that moves, colours that cycle."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._base = bytes(i & 0xFF for i in range(width + 512))

    def frame(self, n: int) -> av.VideoFrame:
        w, h = self.width, self.height
        frame = av.VideoFrame(w, h, "yuv420p")
        y_plane = frame.planes[0]
        stride = y_plane.line_size
        pad = b"\x00" * (stride - w)
        shift = (4 * n) & 0xFF
        rows = [self._base[(y + shift) & 0xFF : ((y + shift) & 0xFF) + w] + pad for y in range(h)]
        luma = bytearray(b"".join(rows))
        size = max(8, h // 6)
        bx = int((w - size) * (0.5 + 0.5 * math.sin(n / 15.0)))
        by = int((h - size) * (0.5 + 0.5 * math.cos(n / 23.0)))
        white = b"\xeb" * size
        for y in range(by, by + size):
            luma[y * stride + bx : y * stride + bx + size] = white
        y_plane.update(bytes(luma))
        u = 128 + int(60 * math.sin(n / 40.0))
        v = 128 + int(60 * math.cos(n / 40.0))
        for plane, value in ((frame.planes[1], u), (frame.planes[2], v)):
            plane.update(bytes([value]) * plane.buffer_size)
        return frame


class _VideoEncoder:
    def __init__(self, codec: str, width: int, height: int, fps: int, bitrate: int) -> None:
        self.codec = codec
        if codec == "vp8":
            ctx = av.CodecContext.create("libvpx", "w")
            ctx.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                           "error-resilient": "1"}
        else:
            ctx = av.CodecContext.create("libx264", "w")
            ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "profile": "baseline",
                           "level": "31"}
        assert isinstance(ctx, av.VideoCodecContext)
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = fractions.Fraction(1, fps)
        ctx.framerate = fractions.Fraction(fps, 1)
        ctx.bit_rate = bitrate
        ctx.gop_size = fps * 4  # a keyframe every few seconds even without PLI
        self.ctx = ctx

    def encode(self, frame: av.VideoFrame, pts: int, keyframe: bool) -> bytes:
        frame.pts = pts
        frame.pict_type = av.video.frame.PictureType.I if keyframe else (
            av.video.frame.PictureType.NONE)
        return b"".join(bytes(p) for p in self.ctx.encode(frame))


class TestPattern:
    """Sends the pattern through ``send(kind, rtp_packet)`` until stopped.

    ``send`` rewrites the SSRC, so packets are built with SSRC 0; sequence numbers and
    timestamps start at random values, as RFC 3550 asks.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        send: Callable[[str, bytes], bool],
        video: MediaPlan | None,
        audio: MediaPlan | None,
        *,
        width: int = 320,
        height: int = 240,
        fps: int = 15,
        video_bitrate: int = 300_000,
    ) -> None:
        self.send = send
        self.video = video if video is not None and video.direction.sends else None
        self.audio = audio if audio is not None and audio.direction.sends else None
        self.width, self.height, self.fps = width, height, fps
        self.video_bitrate = video_bitrate
        self.frames_sent = 0
        self.audio_frames_sent = 0
        self._keyframe = True
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._tasks:
            return
        if self.video is not None:
            self._tasks.append(asyncio.create_task(self._run_video(self.video)))
        if self.audio is not None:
            self._tasks.append(asyncio.create_task(self._run_audio(self.audio)))

    def request_keyframe(self) -> None:
        self._keyframe = True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _packet(self, pt: int, marker: bool, seq: int, ts: int, payload: bytes) -> bytes:
        return _RTP.pack(0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF,
                         0) + payload

    async def _run_video(self, plan: MediaPlan) -> None:
        name = plan.codec.name.lower()
        if name not in ("vp8", "h264"):
            log.warning("test-pattern: cannot encode %s video", plan.codec.name)
            return
        loop = asyncio.get_running_loop()
        encoder = _VideoEncoder(name, self.width, self.height, self.fps, self.video_bitrate)
        picture = _Picture(self.width, self.height)
        pt = plan.codec.payload_type
        seq = random.getrandbits(16)
        ts0 = random.getrandbits(32)
        picture_id = random.getrandbits(15)
        start = loop.time()
        n = 0
        while True:
            keyframe, self._keyframe = self._keyframe, False
            frame = picture.frame(n)
            data = await loop.run_in_executor(None, encoder.encode, frame, n, keyframe)
            if data:
                if name == "vp8":
                    payloads = packetize_vp8(data, picture_id)
                    picture_id = (picture_id + 1) & 0x7FFF
                else:
                    payloads = packetize_h264(data)
                ts = ts0 + n * 90000 // self.fps
                for i, payload in enumerate(payloads):
                    self.send("video", self._packet(pt, i == len(payloads) - 1, seq, ts, payload))
                    seq += 1
                self.frames_sent += 1
            n += 1
            await asyncio.sleep(max(0.0, start + n / self.fps - loop.time()))

    async def _run_audio(self, plan: MediaPlan) -> None:
        name = plan.codec.name.lower()
        if name == "opus":
            ctx = av.CodecContext.create("libopus", "w")
            rate, layout, samples = 48000, "stereo", 960
            ctx.bit_rate = 32000
        elif name in ("pcmu", "pcma"):
            ctx = av.CodecContext.create("pcm_mulaw" if name == "pcmu" else "pcm_alaw", "w")
            rate, layout, samples = 8000, "mono", 160
        else:
            log.warning("test-pattern: cannot encode %s audio", plan.codec.name)
            return
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = rate
        ctx.layout = layout
        ctx.format = "s16"
        channels = 2 if layout == "stereo" else 1
        # 500 Hz: a whole number of periods in 20 ms at 8 and 48 kHz, so every frame is equal.
        period = rate // 500
        one = b"".join(
            struct.pack("<h", int(6000 * math.sin(2 * math.pi * i / period))) * channels
            for i in range(period)
        )
        pcm = one * (samples // period)
        loop = asyncio.get_running_loop()
        pt = plan.codec.payload_type
        seq = random.getrandbits(16)
        ts0 = random.getrandbits(32)
        start = loop.time()
        n = 0
        while True:
            frame = av.AudioFrame(format="s16", layout=layout, samples=samples)
            frame.sample_rate = rate
            frame.pts = n * samples
            frame.planes[0].update(pcm)
            for packet in ctx.encode(frame):
                self.send("audio", self._packet(pt, n == 0, seq, ts0 + n * samples,
                                                bytes(packet)))
                seq += 1
            self.audio_frames_sent += 1
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.020 - loop.time()))
