"""`edgecap devices` lists capture devices (here an ALSA file-plugin device) and serial
ports (here a real pty is not a port pyserial lists; the section must still be there)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.audio.conftest import file_pcm
from tests.conftest import REPO


def test_devices_lists_capture_devices_and_serial_ports(alsa):
    alsa.write(file_pcm("edgecap_cli_mic", "/dev/zero", description="edgecap cli mic"))
    proc = subprocess.run(
        [sys.executable, "-m", "edgecap", "devices"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    capture, _, serial_part = proc.stdout.partition("Serial ports ([serial] device):")
    assert "Framebuffers ([hdmi] device):" in capture
    assert "edgecap_cli_mic" in capture
    assert serial_part, "no serial section"
    assert "ALSA lib" not in proc.stderr  # ALSA's own noise is silenced
