"""Capture device listing and matching of the configured device spec.

A spec is resolved against the current list *before* anything is opened: PortAudio does not
range-check ``input_device_index`` and an index past the end crashes the interpreter
(segfault), and a device listed with 0 input channels fails with a confusing error.

Spec forms, tried in this order:
- ``""`` or ``"default"``: the system's default input device;
- a decimal integer: the PortAudio device index (positions change when devices come and go;
  names are the stable choice);
- an exact device name, then the same ignoring case;
- a case-insensitive substring of one device name, e.g. ``"USB"`` or ``"hw:1,0"``
  (PortAudio's ALSA names look like ``"USB PnP Sound Device: Audio (hw:1,0)"``).

No match raises ``SourceUnavailable`` (the microphone may be plugged in later); a substring
that matches several devices raises ``SourceConfigError`` naming the candidates.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import pyaudio

from edgecap.audio.alsa_quiet import new_pyaudio, terminate_quietly
from edgecap.audio.source import SourceConfigError, SourceUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    index: int
    name: str
    max_input_channels: int
    default_rate: int
    is_default: bool

    def __str__(self) -> str:
        return f"[{self.index}] {self.name!r}"


def list_capture_devices(pa: pyaudio.PyAudio | None = None) -> list[DeviceInfo]:
    """Input-capable devices as PortAudio lists them now.

    With ``pa=None`` a fresh quiet PyAudio instance is made and terminated, so the list is
    current (see ``alsa_quiet.new_pyaudio`` for why an instance must not be kept).
    """
    own = pa is None
    if pa is None:
        pa = new_pyaudio()
    try:
        try:
            default_index = int(pa.get_default_input_device_info()["index"])
        except (OSError, KeyError, ValueError):
            default_index = -1  # "No Default Input Device Available"
        devices = []
        for i in range(pa.get_device_count()):
            try:
                info = pa.get_device_info_by_index(i)
            except (OSError, ValueError):
                continue
            channels = int(info.get("maxInputChannels", 0))
            if channels <= 0:
                continue
            devices.append(
                DeviceInfo(
                    index=i,
                    name=str(info.get("name", f"device {i}")),
                    max_input_channels=channels,
                    default_rate=round(float(info.get("defaultSampleRate", 0))),
                    is_default=i == default_index,
                )
            )
        return devices
    finally:
        if own:
            terminate_quietly(pa)


def describe_devices(devices: Sequence[DeviceInfo]) -> str:
    """One-line list for error messages."""
    if not devices:
        return "none"
    return ", ".join(f"{d}{' (default)' if d.is_default else ''}" for d in devices)


def resolve_device(spec: str, devices: Sequence[DeviceInfo]) -> DeviceInfo:
    """Pick the device ``spec`` names from ``devices`` (see the module docstring)."""
    wanted = spec.strip()
    available = describe_devices(devices)

    def missing() -> SourceUnavailable:
        return SourceUnavailable(
            f"no capture device matches {wanted!r}; available: {available}",
            state="device_missing",
        )

    if wanted == "" or wanted.lower() == "default":
        for d in devices:
            if d.is_default:
                return d
        for d in devices:  # no default flagged: an ALSA device literally named "default"
            if d.name == "default":
                return d
        raise SourceUnavailable(
            f"no default capture device; available: {available}", state="device_missing"
        )

    if wanted.lstrip("-").isdigit():
        index = int(wanted)
        for d in devices:
            if d.index == index:
                return d
        raise missing()

    for candidates in (
        [d for d in devices if d.name == wanted],
        [d for d in devices if d.name.casefold() == wanted.casefold()],
        [d for d in devices if wanted.casefold() in d.name.casefold()],
    ):
        if len(candidates) == 1:
            return candidates[0]
        if len(candidates) > 1:
            raise SourceConfigError(
                f"capture device {wanted!r} is ambiguous: it matches "
                f"{describe_devices(candidates)}; give a longer part of the name or an index"
            )
    raise missing()
