"""`systemctl reload edgecap` (SIGHUP) on a real daemon process: a new service and new
outputs are applied without dropping the microphone; a broken config is refused and the
running one kept."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest

from tests.daemon.test_daemon import edgecap
from tests.daemon.test_daemon_soniox import DEMO
from tests.emulators.soniox import SonioxEmulator


def write(ini: Path, sections: dict[str, dict[str, str]]) -> None:
    ini.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
            for name, keys in sections.items()
        )
    )


def base(tmp_path: Path) -> dict[str, dict[str, str]]:
    return {
        "daemon": {"service": "local"},
        "audio": {"source": "wav", "file": str(DEMO), "realtime": "yes", "loop": "yes"},
        "socket": {"path": str(tmp_path / "a.sock")},
        "stdout": {"enabled": "yes", "format": "json"},
    }


def wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def emu(tmp_path):
    with SonioxEmulator(tmp_path / "emu", api_key="the-key", lag_ms=300) as emulator:
        yield emulator


def test_reload_switches_service_and_socket_without_reopening_the_microphone(tmp_path, emu):
    ini = tmp_path / "edgecap.ini"
    cfg = base(tmp_path)
    write(ini, cfg)
    proc = edgecap("run", "-c", str(ini), env={"SONIOX_API_KEY": "the-key"}, own_socket=True)
    try:
        assert wait(lambda: (tmp_path / "a.sock").exists())
        cfg["daemon"]["service"] = "soniox"
        cfg["soniox"] = {"url": emu.url, "api_key": "env:SONIOX_API_KEY"}
        cfg["link"] = {"ca_file": emu.ca_file}
        cfg["socket"]["path"] = str(tmp_path / "b.sock")
        write(ini, cfg)
        proc.send_signal(signal.SIGHUP)
        assert emu.wait_for(lambda: emu.sessions and emu.sessions[0].audio_ms > 1500, 15)
        assert wait(lambda: (tmp_path / "b.sock").exists())
        assert not (tmp_path / "a.sock").exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert err.count("capturing from") == 1  # the microphone was never reopened
    assert "reload: speech now goes to soniox" in err
    evs = [json.loads(x) for x in out.splitlines() if x.strip()]
    assert any(e["type"] == "caption" and e["final"] for e in evs)


def test_a_broken_config_is_refused_and_the_running_one_kept(tmp_path):
    ini = tmp_path / "edgecap.ini"
    write(ini, base(tmp_path))
    proc = edgecap("run", "-c", str(ini), own_socket=True)
    try:
        assert wait(lambda: (tmp_path / "a.sock").exists())
        ini.write_text(ini.read_text() + "[gate]\naggressiveness = 9\nhangover = 600\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None, "the daemon died on a bad reload"
        assert (tmp_path / "a.sock").exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reload refused, config unchanged: gate.aggressiveness" in err
    assert "; gate.hangover: needs a unit" in err
    statuses = [json.loads(x) for x in out.splitlines() if '"status"' in x]
    rejected = [s for s in statuses if s["parts"].get("config", {}).get("state") == "rejected"]
    assert rejected and "aggressiveness" in rejected[0]["parts"]["config"]["detail"]


def test_a_config_that_makes_the_loader_fail_is_refused_and_stop_still_works(tmp_path):
    """Found by hand: a duration of 400 nines made the loader raise, the exception ended the
    main thread, and the process then ignored SIGTERM (captions kept flowing)."""
    ini = tmp_path / "edgecap.ini"
    write(ini, base(tmp_path))
    proc = edgecap("run", "-c", str(ini), own_socket=True)
    try:
        assert wait(lambda: (tmp_path / "a.sock").exists())
        ini.write_text(ini.read_text() + "[link]\nidle_close = " + "9" * 400 + "s\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None, "the daemon died on a bad reload"
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert took < 5.0
    assert "reload refused, config unchanged" in err
    assert "Traceback" not in err or "the config could not be read" in err


def test_any_exception_while_reloading_keeps_the_running_config(tmp_path):
    """In-process, with a loader that fails in a way no config error covers: the supervisor
    refuses the reload, says so in the status, and still stops on request."""
    from edgecap.config.loader import load
    from edgecap.daemon.supervisor import Daemon

    cfg = base(tmp_path)
    cfg["stdout"]["enabled"] = "no"
    cfg["audio"]["realtime"] = "yes"
    ini = tmp_path / "edgecap.ini"
    write(ini, cfg)
    loaded = load([ini], env={})

    def broken_loader():
        raise OverflowError("int too large to convert to float")

    daemon = Daemon(loaded, reloader=broken_loader)
    runner = threading.Thread(target=lambda: daemon.run())
    runner.start()
    try:
        assert wait(lambda: daemon.status.snapshot().state_of("audio") == "listening")
        daemon._reload_requested = True
        daemon._wake.set()
        assert wait(lambda: daemon.status.snapshot().state_of("config") == "rejected")
        assert "OverflowError" in daemon.status.snapshot().parts["config"].detail
        assert daemon.loaded is loaded
        assert runner.is_alive()
    finally:
        daemon.request_stop("test")
        runner.join(20)
    assert not runner.is_alive()
    assert daemon.exit_code == 0


def test_a_reload_mid_speech_never_gives_two_lines_one_number(tmp_path, emu):
    """The old link ends its open line as it hands over, numbered after the lines before
    it; the new link's first line must come after that one, not take its number again.
    (Whether the old link opens a line during its hand-over depends on timing, so this
    catches the fault only when it does; ``make soak --faults reload_good`` found it and
    shows it every time.)"""
    ini = tmp_path / "edgecap.ini"
    cfg = base(tmp_path)
    cfg["daemon"]["service"] = "soniox"
    cfg["soniox"] = {"url": emu.url, "api_key": "env:SONIOX_API_KEY"}
    cfg["link"] = {"ca_file": emu.ca_file, "connect": "warm"}
    write(ini, cfg)
    proc = edgecap("run", "-c", str(ini), env={"SONIOX_API_KEY": "the-key"}, own_socket=True)
    try:
        # in the middle of the demo's speech: a line is open when the link is replaced
        assert emu.wait_for(lambda: emu.sessions and emu.sessions[0].audio_ms > 3000, 15)
        cfg["link"]["idle_close"] = "45s"  # a link setting: the link is replaced
        write(ini, cfg)
        proc.send_signal(signal.SIGHUP)
        assert emu.wait_for(lambda: len(emu.sessions) >= 2 and emu.sessions[1].audio_ms > 3000, 15)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "reload: speech now goes to soniox" in err
    finals: dict[int, set[str]] = {}
    for raw in out.splitlines():
        if raw.strip():
            event = json.loads(raw)
            if event["type"] == "caption" and event["final"] and event["text"]:
                finals.setdefault(event["seq"], set()).add(event["text"])
    assert len(finals) >= 2
    assert {seq: texts for seq, texts in finals.items() if len(texts) > 1} == {}
