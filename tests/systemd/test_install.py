"""`make install` / `make uninstall`, staged with DESTDIR (no root, no systemctl): the tree
a Pi gets, its permissions, and that an owner's config and keys survive a reinstall."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")


def make(target: str, dest, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", target, f"DESTDIR={dest}", "PIP_FLAGS=--no-deps", *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_install_reinstall_uninstall(tmp_path):
    dest = tmp_path / "root"
    proc = make("install", dest)
    assert proc.returncode == 0, proc.stderr
    unit = dest / "etc/systemd/system/edgecap.service"
    assert unit.read_text() == (REPO / "systemd/edgecap.service").read_text()
    ini = dest / "etc/edgecap/edgecap.ini"
    assert ini.read_text() == (REPO / "config/edgecap.ini").read_text()
    creds = dest / "etc/edgecap/credentials"
    assert mode(creds) == 0o700
    assert sorted(p.name for p in creds.iterdir()) == [
        "azure_speech_key",
        "sarvam_api_key",
        "soniox_api_key",
    ]
    assert all(mode(p) == 0o600 for p in creds.iterdir())
    exe = dest / "opt/edgecap/venv/bin/edgecap"
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.startswith("edgecap ")
    link = dest / "usr/local/bin/edgecap"
    assert link.is_symlink() and str(link.readlink()) == "/opt/edgecap/venv/bin/edgecap"
    cfg = (dest / "opt/edgecap/venv/pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg

    # the owner configures it; a reinstall keeps that
    ini.write_text("[daemon]\nservice = soniox\n")
    (creds / "soniox_api_key").write_text("the owner's key\n")
    proc = make("install", dest)
    assert proc.returncode == 0, proc.stderr
    assert ini.read_text() == "[daemon]\nservice = soniox\n"
    assert (creds / "soniox_api_key").read_text() == "the owner's key\n"

    proc = make("uninstall", dest)
    assert proc.returncode == 0, proc.stderr
    assert not unit.exists() and not (dest / "opt/edgecap").exists()
    assert not link.is_symlink()
    assert ini.exists() and (creds / "soniox_api_key").exists()
