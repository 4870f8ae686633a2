"""RTP/RTCP helpers, checked against aiortc's independent RTCP implementation."""

from __future__ import annotations

import pytest
from aiortc import rtp as aiortc_rtp

from gateway.webrtc import rtp


def test_rtp_header_and_ssrc_rewrite() -> None:
    packet = bytes([0x80, 0x80 | 96, 0x01, 0x02]) + (1234).to_bytes(4, "big") + (
        0xDEADBEEF).to_bytes(4, "big") + b"payload"
    header = rtp.parse_rtp_header(packet)
    assert header == rtp.RtpHeader(96, True, 0x0102, 1234, 0xDEADBEEF)
    rewritten = rtp.with_ssrc(packet, 42)
    assert rtp.parse_rtp_header(rewritten) == rtp.RtpHeader(96, True, 0x0102, 1234, 42)
    assert rewritten[12:] == b"payload" and len(rewritten) == len(packet)
    assert rtp.parse_rtp_header(b"\x00" * 12) is None
    assert rtp.is_rtcp(rtp.build_pli(1, 2)) and not rtp.is_rtcp(packet)


def test_report_round_trip_matches_aiortc() -> None:
    block = rtp.ReportBlock(0x11111111, 25, -3, 70000, 123, 0xABCD1234, 65536)
    data = (rtp.build_sr(7, rtp.ntp_now(1_700_000_000.5), 9000, 10, 1000, [block])
            + rtp.build_sdes(7, "cname-x") + rtp.build_rr(8, [block]))
    ours = rtp.parse_rtcp(data)
    sr, sdes, rr = ours
    assert isinstance(sr, rtp.SenderReport) and sr.reports == (block,)
    assert sr.ntp >> 32 == 1_700_000_000 + 2208988800 and sr.packet_count == 10
    assert isinstance(sdes, rtp.OtherRtcp) and sdes.packet_type == rtp.RTCP_SDES
    assert isinstance(rr, rtp.ReceiverReport) and rr.reports == (block,)
    theirs = aiortc_rtp.RtcpPacket.parse(data)
    assert isinstance(theirs[0], aiortc_rtp.RtcpSrPacket)
    assert theirs[0].sender_info.rtp_timestamp == 9000
    report = theirs[0].reports[0]
    assert (report.ssrc, report.fraction_lost, report.packets_lost, report.highest_sequence,
            report.jitter, report.lsr, report.dlsr) == (
        0x11111111, 25, -3, 70000, 123, 0xABCD1234, 65536)
    assert theirs[1].chunks[0].items == [(1, b"cname-x")]


def test_feedback_round_trip_matches_aiortc() -> None:
    data = (rtp.build_pli(1, 2) + rtp.build_fir(1, 2, 7) + rtp.build_nack(1, 2, [100, 101, 117,
                                                                               500])
            + rtp.build_remb(1, 1_500_000, [2, 3]) + rtp.build_bye([1]))
    pli, fir, nack, remb, bye = rtp.parse_rtcp(data)
    assert pli == rtp.Pli(1, 2)
    assert fir == rtp.Fir(1, ((2, 7),))
    assert nack == rtp.Nack(1, 2, (100, 101, 117, 500))
    assert isinstance(remb, rtp.Remb) and remb.ssrcs == (2, 3)
    assert abs(remb.bitrate - 1_500_000) < 1_500_000 / 2**17
    assert bye == rtp.Bye((1,))
    theirs = aiortc_rtp.RtcpPacket.parse(data)
    assert theirs[0].fmt == aiortc_rtp.RTCP_PSFB_PLI and theirs[0].media_ssrc == 2
    assert sorted(theirs[2].lost) == [100, 101, 117, 500]
    bitrate, ssrcs = aiortc_rtp.unpack_remb_fci(theirs[3].fci)
    assert ssrcs == [2, 3] and bitrate == remb.bitrate
    assert theirs[4].sources == [1]


def test_aiortc_feedback_parses_here() -> None:
    pli = aiortc_rtp.RtcpPsfbPacket(fmt=aiortc_rtp.RTCP_PSFB_PLI, ssrc=5, media_ssrc=6)
    nack = aiortc_rtp.RtcpRtpfbPacket(fmt=aiortc_rtp.RTCP_RTPFB_NACK, ssrc=5, media_ssrc=6)
    nack.lost = [10, 12, 40]
    remb = aiortc_rtp.RtcpPsfbPacket(fmt=aiortc_rtp.RTCP_PSFB_APP, ssrc=5, media_ssrc=0,
                                     fci=aiortc_rtp.pack_remb_fci(300_000, [6]))
    items = rtp.parse_rtcp(bytes(pli) + bytes(nack) + bytes(remb))
    assert items[0] == rtp.Pli(5, 6)
    assert items[1] == rtp.Nack(5, 6, (10, 12, 40))
    assert items[2] == rtp.Remb(5, 300_000, (6,))


@pytest.mark.parametrize("data", [b"\x80", b"\x80\xc8\x00\x10", b"\x40\xc9\x00\x00"])
def test_broken_rtcp_raises(data: bytes) -> None:
    with pytest.raises(rtp.RtcpError):
        rtp.parse_rtcp(data)


def test_receive_stats_loss_wrap_jitter_and_lsr() -> None:
    st = rtp.ReceiveStats(ssrc=9, clock_rate=8000)
    now = 100.0
    seqs = [65530, 65531, 65533, 65534, 65535, 0, 1, 3]  # 65532 and 2 lost, one wrap
    for i, seq in enumerate(seqs):
        st.update(seq, 1000 + 160 * i, 172, now + 0.02 * i)
    assert st.extended_max == 65536 + 3 and st.lost == 2
    st.sender_report(rtp.ntp_now(1_000.0), now)
    block = st.report_block(now + 0.5)
    assert block.ssrc == 9 and block.cumulative_lost == 2
    assert block.fraction_lost == (2 << 8) // 10
    assert block.highest_sequence == 65539
    assert block.lsr == rtp.ntp_middle(rtp.ntp_now(1_000.0))
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s
    # Timestamps advanced in step with arrival: jitter stays near zero.
    assert block.jitter < 5
    again = st.report_block(now + 1.0)
    assert again.fraction_lost == 0  # nothing new lost since the last report
