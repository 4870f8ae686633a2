"""Headless baresip 1.0 configurations for the interop tests (loopback only).

Adapted from the shared peers kit's ``mkconf.sh``: SIP, RTP and ctrl_tcp bind
127.0.0.1; no stun/turn/ice modules; DNS pinned to 127.0.0.1.  Audio comes from a
generated WAV (``aufile``; baresip hangs the call up when the file ends, so it is
made longer than any test call) and plays to ALSA's ``null`` device; video is
baresip's synthetic ``fakevideo`` source and display.
"""

from __future__ import annotations

import struct
import wave
from dataclasses import dataclass, field
from pathlib import Path

MODULES = (
    "g711.so", "opus.so", "avcodec.so", "vp8.so", "aufile.so", "alsa.so", "fakevideo.so",
    "rtcpsummary.so", "ctrl_tcp.so",
)
APP_MODULES = ("account.so", "contact.so", "menu.so")


def write_wav(path: Path, seconds: float = 120.0, rate: int = 8000) -> Path:
    """A mono 16-bit WAV (a quiet 400 Hz square wave) for ``aufile``.

    G.711 is 8 kHz mono, and aufile needs the file at the codec's rate.
    """
    if path.exists():
        return path
    period = rate // 400
    one = struct.pack("<h", 2000) * (period // 2) + struct.pack("<h", -2000) * (
        period - period // 2)
    second = one * (rate // period)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(second * int(seconds))
    return path


@dataclass
class BaresipConfig:
    """Everything one baresip instance needs; ``write`` makes its config directory."""

    name: str
    sip_port: int
    ctrl_port: int
    rtp_ports: tuple[int, int]
    wav: Path
    # The account line's address of record, e.g. "<sip:kiosk-1@127.0.0.1:5060>".
    aor: str
    password: str | None = None
    regint: int = 0
    video_codec: str = "VP8"
    audio_codecs: str = "PCMU/8000/1"
    answermode: str = "auto"
    cafile: Path | None = None
    extra_account_params: list[str] = field(default_factory=list)

    def config_text(self) -> str:
        lines = [
            ("poll_method", "epoll"),
            ("call_local_timeout", "30"),
            ("call_max_calls", "4"),
            ("module_path", "/usr/lib/baresip/modules"),
            ("sip_listen", f"127.0.0.1:{self.sip_port}"),
            ("net_interface", "127.0.0.1"),
            ("dns_server", "127.0.0.1:53"),
            ("audio_player", "alsa,null"),
            ("audio_alert", "alsa,null"),
            ("audio_source", f"aufile,{self.wav}"),
            ("audio_level", "no"),
            ("video_source", "fakevideo,nil"),
            ("video_display", "fakevideo,nil"),
            ("video_size", "320x240"),
            ("video_bitrate", "300000"),
            ("video_fps", "15.00"),
            ("video_fullscreen", "no"),
            ("rtp_ports", f"{self.rtp_ports[0]}-{self.rtp_ports[1]}"),
            ("rtp_stats", "yes"),
            ("rtp_timeout", "0"),
            ("jitter_buffer_delay", "5-10"),
            ("avcodec_h264enc", "libx264"),
            ("avcodec_h264dec", "h264"),
        ]
        if self.cafile is not None:
            lines.append(("sip_cafile", str(self.cafile)))
        lines += [("module", m) for m in MODULES]
        lines.append(("ctrl_tcp_listen", f"127.0.0.1:{self.ctrl_port}"))
        lines += [("module_app", m) for m in APP_MODULES]
        return "".join(f"{k}\t\t{v}\n" for k, v in lines)

    def account_line(self) -> str:
        params = [f"regint={self.regint}", f"answermode={self.answermode}",
                  f"audio_codecs={self.audio_codecs}", f"video_codecs={self.video_codec}"]
        if self.password is not None:
            params.append(f"auth_pass={self.password}")
        params += self.extra_account_params
        return self.aor + "".join(";" + p for p in params) + "\n"

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config").write_text(self.config_text())
        # The account is added over ctrl_tcp once connected (``uanew``), so that its
        # REGISTER_OK/REGISTER_FAIL events are not lost before the connection.
        (directory / "accounts").write_text("")
        (directory / "contacts").write_text("")
        return directory
