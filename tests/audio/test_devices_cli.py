"""`edgecap devices` lists capture devices (here an ALSA file-plugin device) and serial
ports (here a real pty is not a port pyserial lists; the section must still be there)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.audio.conftest import file_pcm
from tests.conftest import REPO


def devices() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgecap", "devices"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        timeout=60,
    )


def test_devices_lists_capture_devices_and_serial_ports(alsa):
    alsa.write(file_pcm("edgecap_cli_mic", "/dev/zero", description="edgecap cli mic"))
    proc = devices()
    assert proc.returncode == 0, proc.stderr
    capture, _, serial_part = proc.stdout.partition("Serial ports ([serial] device):")
    assert "Framebuffers ([hdmi] device):" in capture
    assert "edgecap_cli_mic" in capture
    assert serial_part, "no serial section"
    assert "ALSA lib" not in proc.stderr  # ALSA's own noise is silenced


def test_devices_says_whether_complex_scripts_are_shaped():
    """`make deps` installs libraqm0: shaping must be there (a bare Debian lacked it and drew
    Devanagari letter by letter)."""
    proc = devices()
    assert proc.returncode == 0, proc.stderr
    _, _, shaping = proc.stdout.partition("Text shaping (Devanagari, Arabic … on the screen):")
    assert shaping.strip().startswith("available (libraqm "), proc.stdout


def test_check_warns_when_the_screen_cannot_shape(tmp_path, monkeypatch, capsys):
    """Without libraqm (cannot be uninstalled here: Pillow's feature check is replaced)."""
    from PIL import features

    from edgecap import cli

    ini = tmp_path / "edgecap.ini"
    ini.write_text("[hdmi]\nenabled = yes\n")
    real = features.check
    monkeypatch.setattr(features, "check", lambda name: False if name == "raqm" else real(name))
    assert cli.main(["check", "-c", str(ini)]) == 0
    err = capsys.readouterr().err
    assert "text shaping NOT available" in err and "libraqm0" in err
    ini.write_text("[hdmi]\nenabled = no\n")
    assert cli.main(["check", "-c", str(ini)]) == 0
    assert "shaping" not in capsys.readouterr().err
