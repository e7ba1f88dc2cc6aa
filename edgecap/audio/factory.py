"""Builds the configured audio source."""

from __future__ import annotations

from edgecap.audio.source import AudioSource
from edgecap.config.schema import AudioConfig


def make_source(audio: AudioConfig) -> AudioSource:
    if audio.source == "alsa":
        from edgecap.audio.alsa import AlsaSource

        return AlsaSource(
            audio.device,
            audio.frame_ms,
            rate=audio.rate or None,
            channel=audio.channel,
            stall_timeout=audio.stall_timeout,
        )
    if audio.source == "wav":
        from edgecap.audio.wav import WavSource

        return WavSource(
            audio.file,
            audio.frame_ms,
            realtime=audio.realtime,
            loop=audio.loop,
            channel=audio.channel,
        )
    from edgecap.audio.raw import RawSource

    return RawSource("-" if str(audio.raw_input) == "-" else audio.raw_input, audio.frame_ms)
