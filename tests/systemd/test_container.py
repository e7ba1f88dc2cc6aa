"""edgecap installed by `make install` and run by a real systemd 252, booted in a container
(debootstrap + systemd-nspawn, TESTBED.md §systemd).

The container root is built once and cached in /var/cache/edgecap-e2e (about a minute);
each run copies it, installs this checkout into the copy with `make install` (the wheels
that Debian does not package come from a local directory: the container has no network),
adds a test unit that exercises the service from inside (e2e/check.sh), boots it and reads
what the checks found: the unit becomes active with our STATUS text as the `edgecap` user,
reloads, is killed and restarted by the watchdog when the daemon hangs, reads its key
through LoadCredential=, logs our journal fields, and is not restarted after a config
error (exit 78).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

CACHE = Path(os.environ.get("EDGECAP_E2E_CACHE", "/var/cache/edgecap-e2e"))
E2E = Path(__file__).parent / "e2e"
PACKAGES = (
    "systemd,systemd-sysv,dbus,python3,python3-venv,python3-pip,python3-setuptools,"
    "python3-numpy,python3-pyaudio,python3-serial,python3-pil,python3-systemd,"
    "python3-websocket,make,alsa-utils,procps,libraqm0,fonts-dejavu-core,"
    "fonts-lohit-deva,fonts-lohit-beng-bengali,fonts-lohit-guru,fonts-lohit-gujr,"
    "fonts-lohit-orya,fonts-lohit-taml,fonts-lohit-telu,fonts-lohit-knda,fonts-lohit-mlym"
)
MIRROR = os.environ.get("EDGECAP_E2E_MIRROR", "http://deb.debian.org/debian")
# what Debian does not package (pocketsphinx: the offline engine, the embedded default)
WHEELS = (
    "webrtcvad-wheels",
    "websocket-client>=1.6",
    "Pillow>=10",
    "pocketsphinx>=5.0",
    # the caption page and /metrics ([web]): pure Python
    "h11>=0.14",
    "prometheus-client>=0.16",
    "segno>=1.6",
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("debootstrap") or not shutil.which("systemd-nspawn"),
    reason="needs root, debootstrap and systemd-nspawn (make deps installs them)",
)


def run(*cmd: str | Path, timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw
    )


@contextlib.contextmanager
def cache_lock() -> Iterator[None]:
    """Runs at once (two checkouts, two CI jobs) share the cache: one builds, the others
    wait for it instead of deleting each other's half-built root."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def base_root() -> Path:
    """The cached Debian root with systemd and Debian's Python packages."""
    with cache_lock():
        return _base_root()


def _base_root() -> Path:
    key = hashlib.sha256(f"{PACKAGES} {MIRROR}".encode()).hexdigest()[:12]
    root = CACHE / f"root-{key}"
    if (root / ".complete").exists():
        return root
    tmp = CACHE / f"root-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    proc = run(
        "debootstrap",
        "--variant=minbase",
        f"--include={PACKAGES}",
        "bookworm",
        tmp,
        MIRROR,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (tmp / ".complete").write_text("")
    tmp.rename(root)
    return root


def wheels() -> Path:
    with cache_lock():
        return _wheels()


def _wheels() -> Path:
    out = CACHE / f"wheels-{hashlib.sha256(' '.join(WHEELS).encode()).hexdigest()[:12]}"
    if not (out / ".complete").exists():
        out.mkdir(parents=True, exist_ok=True)
        proc = run(
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "-d",
            out,
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            *WHEELS,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        (out / ".complete").write_text("")
    return out


def nspawn(root: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    return run(
        "systemd-nspawn",
        "-q",
        "-D",
        root,
        "--register=no",
        "--keep-unit",
        *args,
        timeout=timeout,
    )


@pytest.mark.slow
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the wheel cache is for x86_64")
def test_the_installed_service_under_a_real_systemd(tmp_path):
    root = tmp_path / "e2eroot"
    try:
        check_in_container(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # half a gigabyte: not kept with tmp_path


def result_file(root: Path) -> Path:
    return root / "var/lib/edgecap-e2e/result"


def check_in_container(root: Path) -> None:
    proc = run("cp", "-a", base_root(), root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    src = root / "opt" / "src"
    files = run("git", "ls-files", "-z", cwd=REPO, timeout=60).stdout.split("\0")
    for name in filter(None, files):
        target = src / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    shutil.copytree(wheels(), root / "wheels")

    proc = nspawn(
        root,
        "--pipe",
        "--",
        "make",
        "-C",
        "/opt/src",
        "install",
        "PYTHON=python3",
        "PIP_FLAGS=--no-index --find-links /wheels --no-build-isolation",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / "etc/systemd/system/multi-user.target.wants/edgecap.service").is_symlink()

    lib = root / "usr/local/lib/edgecap-e2e"
    lib.mkdir(parents=True)
    shutil.copy(E2E / "check.sh", lib / "check.sh")
    units = root / "etc/systemd/system"
    shutil.copy(E2E / "edgecap-e2e.service", units / "edgecap-e2e.service")
    (units / "multi-user.target.wants/edgecap-e2e.service").symlink_to(
        "/etc/systemd/system/edgecap-e2e.service"
    )
    (units / "edgecap.service.d").mkdir()
    shutil.copy(E2E / "watchdog.conf", units / "edgecap.service.d/watchdog.conf")
    shutil.copy(E2E / "10-e2e.ini", root / "etc/edgecap/edgecap.ini.d/10-e2e.ini")

    try:
        boot = nspawn(root, "--private-network", "-b", "--console=pipe", timeout=240)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-3000:]
        found = result_file(root).read_text() if result_file(root).exists() else "(none)"
        pytest.fail(
            f"the container did not power off in time; checks so far: {found}; console: {out!r}"
        )
    result = result_file(root)
    assert result.exists(), boot.stdout[-3000:] + boot.stderr[-3000:]
    got = dict(line.split("=", 1) for line in result.read_text().splitlines() if "=" in line)
    # else the unit's last words say why
    assert got.get("active") == "active", got.get("journal", str(got)).replace("|", "\n")
    assert got.get("done") == "yes", got
    assert got["active"] == "active"
    assert got["status"] in ("Listening…", "Hearing speech")  # our STATUS= text
    assert got["user"] == "edgecap"
    assert got["socket"] == "edgecap:edgecap 660"
    assert got["after_reload"] == "active" and int(got["reload_logged"]) >= 1
    assert int(got["watchdog_restarts"]) == 1 and int(got["watchdog_logged"]) >= 1
    assert got["cred_active"] == "active"
    assert "Speech service unreachable" in got["cred_status"]  # the key was found: no exit 78
    assert int(got["field_retrying"]) >= 1  # EDGECAP_STATE / EDGECAP_SERVICE in the journal
    assert got["key_in_journal"] == "0"
    assert got["bad_active"] == "failed" and got["bad_exit"] == "78"
    assert got["bad_restarts"] == "0" and int(got["bad_logged"]) >= 1
