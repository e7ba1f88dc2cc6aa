"""Start-up pays only for what the config uses: the daemon module imports no output,
engine or link module (and so no Pillow, numpy, pocketsphinx or websocket) until the
config asks for it."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("PIL", "numpy", "pocketsphinx", "vosk", "websocket", "serial", "pyaudio")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return {name.split(".")[0] for name in out.stdout.split()}


def test_importing_the_daemon_loads_no_heavy_module():
    loaded = _modules_after("import edgecap.daemon.supervisor")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_a_cloud_config_without_a_screen_never_loads_pillow(tmp_path):
    code = f"""
from pathlib import Path
from edgecap.config.loader import load
from edgecap.daemon.supervisor import Daemon
loaded = load(overrides=["daemon.service=soniox", "stdout.enabled=no",
                         "socket.path={tmp_path / "s.sock"}", "audio.source=raw"],
              etc_dir=Path({str(tmp_path)!r}), env={{"SONIOX_API_KEY": "k"}})
Daemon(loaded)
"""
    loaded = _modules_after(code)
    assert "PIL" not in loaded and "pocketsphinx" not in loaded
    assert "websocket" in loaded  # the link is what it uses
