from __future__ import annotations

import pytest

from edgecap.audio.devices import DeviceInfo, list_capture_devices, resolve_device
from edgecap.audio.source import SourceConfigError, SourceUnavailable
from tests.audio.conftest import MIC, AlsaTestbed, file_pcm

DEVICES = [
    DeviceInfo(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", 2, 44100, False),
    DeviceInfo(3, "USB PnP Sound Device: Audio (hw:1,0)", 1, 48000, False),
    DeviceInfo(5, "default", 32, 44100, True),
    DeviceInfo(6, "USB Camera: Audio (hw:2,0)", 2, 16000, False),
]


@pytest.mark.parametrize(
    ("spec", "index"),
    [
        ("", 5),
        ("default", 5),
        ("  DEFAULT ", 5),
        ("3", 3),
        ("USB PnP Sound Device: Audio (hw:1,0)", 3),
        ("usb pnp sound device: audio (hw:1,0)", 3),
        ("PnP", 3),
        ("hw:2,0", 6),
        ("camera", 6),
    ],
)
def test_resolve(spec: str, index: int) -> None:
    assert resolve_device(spec, DEVICES).index == index


def test_exact_name_beats_substring() -> None:
    devices = [DeviceInfo(1, "mic", 1, 16000, False), DeviceInfo(2, "mic two", 1, 16000, False)]
    assert resolve_device("mic", devices).index == 1


def test_ambiguous_substring_lists_candidates() -> None:
    with pytest.raises(SourceConfigError) as e:
        resolve_device("usb", DEVICES)
    msg = str(e.value)
    assert "ambiguous" in msg and "[3] 'USB PnP" in msg and "[6] 'USB Camera" in msg
    assert "HDA" not in msg


@pytest.mark.parametrize("spec", ["7", "1", "-1", "99999999999", "Blue Yeti"])
def test_no_match_is_unavailable_and_lists_devices(spec: str) -> None:
    with pytest.raises(SourceUnavailable) as e:
        resolve_device(spec, DEVICES)
    assert e.value.state == "device_missing"
    assert f"no capture device matches {spec!r}; available: [0] 'HDA" in str(e.value)
    assert "[5] 'default' (default)" in str(e.value)


def test_default_without_any_device() -> None:
    with pytest.raises(SourceUnavailable, match="no default capture device; available: none"):
        resolve_device("default", [])
    # No device flagged default, but ALSA's "default" PCM is listed: use it.
    devices = [DeviceInfo(0, "hw dev", 2, 48000, False), DeviceInfo(1, "default", 2, 48000, False)]
    assert resolve_device("", devices).index == 1


def test_lists_real_alsa_devices_input_only(alsa: AlsaTestbed) -> None:
    alsa.write(
        file_pcm(MIC, "/dev/zero", description="edgecap test mic"),
        file_pcm("edgecap_dead_mic", alsa.root / "missing.raw"),  # listed with 0 inputs
    )
    devices = list_capture_devices()
    names = [d.name for d in devices]
    assert MIC in names
    assert "edgecap_dead_mic" not in names
    mic = devices[names.index(MIC)]
    assert mic.max_input_channels > 0 and mic.default_rate > 0
