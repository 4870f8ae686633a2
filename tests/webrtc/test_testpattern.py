"""Packetizers of the test pattern, checked against aiortc's depacketizers."""

from __future__ import annotations

from aiortc.codecs.h264 import H264PayloadDescriptor
from aiortc.codecs.vpx import VpxPayloadDescriptor

from gateway.webrtc.testpattern import packetize_h264, packetize_vp8, split_annexb


def test_vp8_payloads_reassemble() -> None:
    frame = bytes(range(256)) * 20  # 5120 bytes: several packets
    payloads = packetize_vp8(frame, picture_id=0x1234, max_payload=1200)
    assert len(payloads) == 5 and all(len(p) <= 1200 for p in payloads)
    out = b""
    for i, payload in enumerate(payloads):
        descriptor, data = VpxPayloadDescriptor.parse(payload)
        assert descriptor.partition_start == (1 if i == 0 else 0)
        assert descriptor.picture_id == 0x1234
        out += data
    assert out == frame


def test_h264_single_nal_and_fu_a_reassemble() -> None:
    sps, pps = b"\x67\x42\xc0\x1f\x01", b"\x68\xce\x3c\x80"
    idr = b"\x65" + bytes(range(256)) * 12
    stream = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x00\x01" + idr
    assert list(split_annexb(stream)) == [sps, pps, idr]
    payloads = packetize_h264(stream, max_payload=1000)
    assert payloads[0] == sps and payloads[1] == pps
    assert all(p[0] & 0x1F == 28 for p in payloads[2:]) and len(payloads) == 6
    rebuilt = b""
    for payload in payloads:
        rebuilt += H264PayloadDescriptor.parse(payload)[1]
    assert rebuilt == b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + (
        b"\x00\x00\x00\x01" + idr)
