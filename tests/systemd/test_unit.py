"""The systemd unit, checked offline by systemd's own tools (TESTBED.md §systemd):
`systemd-analyze verify` must print nothing (it exits 0 on unknown keys and bad values,
only warning), and `systemd-analyze security` must rate the hardening 2.0 or better."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

UNIT = REPO / "systemd" / "edgecap.service"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A staged root: the unit where `make install` puts it, the programs it names, and
    the distribution's own units (targets it is ordered after)."""
    root = tmp_path_factory.mktemp("root")
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/edgecap.service")
    exe = root / "opt/edgecap/venv/bin/edgecap"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "bin").mkdir()
    shutil.copy("/bin/kill", root / "bin/kill")
    for units in (Path("/lib/systemd/system"), Path("/usr/lib/systemd/system")):
        if units.is_dir():
            shutil.copytree(units, root / units.relative_to("/"), symlinks=True, dirs_exist_ok=True)
            break
    return root


def test_unit_verifies_without_a_single_warning(root):
    proc = subprocess.run(
        [ANALYZE, "verify", "--man=no", f"--root={root}", "/etc/systemd/system/edgecap.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stderr


def test_hardening_scores_2_or_better(root):
    proc = subprocess.run(
        [
            ANALYZE,
            "security",
            "--offline=true",
            f"--root={root}",
            "--threshold=20",
            "edgecap.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for edgecap.service: (\d+\.\d)", proc.stdout)
    assert score is not None, proc.stdout[-500:] + proc.stderr
    assert float(score.group(1)) <= 2.0
    assert proc.returncode == 0


def test_unit_carries_the_contract():
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "RestartPreventExitStatus=78",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RuntimeDirectory=edgecap",
        "StateDirectory=edgecap",
        "LoadCredential=soniox_api_key:/etc/edgecap/credentials/soniox_api_key",
    ):
        assert line in text.splitlines(), line
    watchdog = re.search(r"^WatchdogSec=(\d+)s$", text, re.M)
    assert watchdog and int(watchdog.group(1)) >= 10
