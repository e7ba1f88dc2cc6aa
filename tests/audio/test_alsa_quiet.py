from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecap.audio import alsa_quiet
from edgecap.audio.alsa_quiet import install_handlers, new_pyaudio, stderr_silenced
from tests.audio.conftest import AlsaTestbed

REPO = Path(__file__).resolve().parents[2]


def run_child(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))  # no test devices: default probes
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, env=env
    )


def test_new_pyaudio_is_silent_where_plain_pyaudio_is_not(tmp_path: Path) -> None:
    noisy = run_child("import pyaudio; pyaudio.PyAudio().terminate()", tmp_path)
    quiet = run_child(
        "from edgecap.audio.alsa_quiet import new_pyaudio; new_pyaudio().terminate()", tmp_path
    )
    assert noisy.returncode == 0 and quiet.returncode == 0, quiet.stderr
    # Without the hooks, ALSA and JACK print their probe noise (on this machine ~65 lines).
    assert "ALSA lib" in noisy.stderr or "jack" in noisy.stderr.lower()
    assert quiet.stderr == ""


def test_stderr_silenced_restores_fd2_even_on_error(capfd: pytest.CaptureFixture[str]) -> None:
    os.write(2, b"before\n")
    with stderr_silenced():
        os.write(2, b"hidden\n")
    with pytest.raises(RuntimeError), stderr_silenced():
        os.write(2, b"hidden too\n")
        raise RuntimeError("boom")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_alsa_messages_go_to_debug_log(
    alsa: AlsaTestbed, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    alsa.write('pcm.broken { type file slave.pcm "no_such_pcm" }\n')
    alsa_ok, _ = install_handlers()
    assert alsa_ok
    gc.collect()  # the C callback must survive a collection (module-level reference)
    assert alsa_quiet._alsa_handler is not None
    with caplog.at_level(logging.DEBUG, logger="edgecap.audio.alsa_lib"):
        pa = new_pyaudio()
        pa.get_device_count()
        pa.terminate()
    assert any(r.name == "edgecap.audio.alsa_lib" and "ALSA" in r.message for r in caplog.records)
    assert "ALSA lib" not in capfd.readouterr().err
    assert os.environ.get("JACK_NO_START_SERVER") == "1"
