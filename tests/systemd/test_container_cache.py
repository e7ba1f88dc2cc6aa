"""The container test's cache is shared by runs at once (two checkouts, CI beside a
developer): its builders take a lock, so one never deletes the root another is building."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

HOLDER = """
import sys, time
from pathlib import Path
import tests.systemd.test_container as tc
with tc.cache_lock():
    marker = Path(sys.argv[1])
    marker.write_text("building")
    print("locked", flush=True)
    time.sleep(1.0)
    marker.write_text("done")
"""


def test_a_second_builder_waits_for_the_first(tmp_path, monkeypatch):
    import tests.systemd.test_container as tc

    monkeypatch.setattr(tc, "CACHE", tmp_path / "cache")
    marker = tmp_path / "marker"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(marker)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={"EDGECAP_E2E_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with tc.cache_lock():
            seen = marker.read_text()
    finally:
        holder.wait(10)
    assert seen == "done", "the lock let a second builder in while the first was building"
