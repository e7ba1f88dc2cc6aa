"""`edgecap run` with service = soniox, end to end: a real daemon process, the real gate,
the strict Soniox emulator over TLS, captions on stdout, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from edgecap.audio.wav import WavSource
from edgecap.config.schema import GateConfig
from edgecap.gate.speech_gate import GateSettings, SpeechGate
from edgecap.outputs.framebuffer import read_geometry, unpack
from edgecap.runtime.speech import SpeechAudio
from tests.conftest import REPO
from tests.daemon.test_daemon import edgecap, events
from tests.emulators.soniox import SonioxEmulator, expected_words
from tests.outputs.test_hdmi import fake_fb

DEMO = REPO / "edgecap" / "data" / "demo_ljspeech_LJ050-0131.wav"


def gate_output(path: Path) -> bytes:
    """What the gate at its defaults forwards of a WAV file (the daemon must send exactly
    this to the service)."""
    g = GateConfig()
    gate = SpeechGate(
        GateSettings(
            enabled=True,
            aggressiveness=g.aggressiveness,
            frame_ms=20,
            preroll_ms=round(g.preroll * 1000),
            hangover_ms=round(g.hangover * 1000),
            min_speech_ms=round(g.min_speech * 1000),
            max_utterance_s=g.max_utterance,
        )
    )
    source = WavSource(path, 20, realtime=False, loop=False, channel=None)
    source.open()
    out = []
    try:
        while True:
            frame = source.read(1.0)
            if frame is None:
                break
            if not hasattr(frame, "pcm"):
                continue
            out += gate.feed(frame)
    finally:
        source.close()
    out += gate.flush("end_of_input")
    return b"".join(e.frame.pcm for e in out if isinstance(e, SpeechAudio))


def write_config(tmp_path: Path, emu: SonioxEmulator, key_source: str, **extra: str) -> Path:
    sections: dict[str, dict[str, str]] = {
        "daemon": {"service": "soniox"},
        "audio": {"source": "wav", "file": str(DEMO)},
        "soniox": {"url": emu.url, "api_key": key_source, "diarization": "yes"},
        "link": {
            "ca_file": emu.ca_file,
            "replay_speed": "10",
            "retry_first": "100ms",
            "retry_max": "1s",
            # the file is sent ten times faster than real time: give the emulator's last
            # answers room on a loaded machine (the default 3 s is for live speech)
            "finish_timeout": "10s",
        },
        "stdout": {"enabled": "yes", "format": "json"},
        "transcript": {},
        "hdmi": {},
    }
    for key, value in extra.items():
        section, _, name = key.partition("__")
        sections.setdefault(section, {})[name] = value
    ini = tmp_path / "edgecap.ini"
    ini.write_text(
        "".join(
            f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items())
            for name, keys in sections.items()
        )
    )
    return ini


def caption_words(evs: list[dict]) -> list[str]:
    finals = [e for e in evs if e["type"] == "caption" and e["final"]]
    seqs = [e["seq"] for e in finals]
    assert len(seqs) == len(set(seqs)), "a caption line was finalized twice"
    return " ".join(e["text"] for e in finals).split()


@pytest.fixture
def emu(tmp_path):
    with SonioxEmulator(tmp_path / "emu", api_key="the-key", lag_ms=300) as emulator:
        yield emulator


def test_captions_of_a_wav_file_come_back_from_the_service(tmp_path, emu):
    ini = write_config(
        tmp_path,
        emu,
        "env:SONIOX_API_KEY",
        audio__realtime="no",
        transcript__enabled="yes",
        transcript__directory=str(tmp_path / "transcripts"),
        hdmi__enabled="yes",
        hdmi__device=str(fake_fb(tmp_path, 800, 480, 16)),
        hdmi__sysfs=str(tmp_path / "sys"),
    )
    proc = edgecap("run", "-c", str(ini), env={"SONIOX_API_KEY": "the-key"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "the-key" not in out + err
    sessions = emu.sessions
    assert len(sessions) == 1
    sent = bytes(sessions[0].audio)
    assert sent == gate_output(DEMO), "the service did not get exactly what the gate forwarded"
    words = expected_words(sent)
    assert len(words) > 20
    assert caption_words(events(out)) == [w.strip() for w in words]
    assert sessions[0].end_received and sessions[0].finished_sent
    assert "1 sessions, 0 failures" in err
    # the transcript holds the same final lines
    (jsonl,) = (tmp_path / "transcripts").glob("*.jsonl")
    written = [json.loads(x)["text"] for x in jsonl.read_text().splitlines()]
    finals = [e["text"] for e in events(out) if e["type"] == "caption" and e["final"] and e["text"]]
    assert written == finals
    # and the screen shows captions
    px = unpack((tmp_path / "fb0").read_bytes(), read_geometry(tmp_path / "fb0", tmp_path / "sys"))
    assert (px.min(axis=-1) > 200).sum() > 500, "no caption text on the framebuffer"


def test_sigterm_mid_utterance_delivers_the_final_captions(tmp_path, emu):
    ini = write_config(tmp_path, emu, "env:SONIOX_API_KEY", audio__realtime="yes")
    sock_path = tmp_path / "captions.sock"
    proc = edgecap(
        "run",
        "-c",
        str(ini),
        "--set",
        f"socket.path={sock_path}",
        env={"SONIOX_API_KEY": "the-key"},
    )
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    received = b""
    try:
        deadline = time.monotonic() + 15
        while not sock_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        while True:  # the file appears at bind(); be patient for a moment
            try:
                client.connect(str(sock_path))
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert emu.wait_for(lambda: emu.sessions and emu.sessions[0].audio_ms >= 2000, 15)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        took = time.monotonic() - signalled
        client.settimeout(5)
        while chunk := client.recv(65536):
            received += chunk
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert took < 2.0 + 10.0  # stop budget: 2 s plus finish_timeout
    s = emu.sessions[0]
    assert s.end_received and s.finished_sent
    sent = bytes(s.audio)
    assert caption_words(events(out)) == [w.strip() for w in expected_words(sent)]
    # a program on the caption socket got the same final captions, then bye
    msgs = [json.loads(x) for x in received.split(b"\n") if x]
    assert msgs[0]["type"] == "hello" and msgs[0]["service"] == "soniox"
    assert msgs[-1]["type"] == "bye"
    on_socket = [(m["seq"], m["text"]) for m in msgs if m["type"] == "caption" and m["final"]]
    on_stdout = [
        (e["seq"], e["text"]) for e in events(out) if e["type"] == "caption" and e["final"]
    ]
    assert on_socket == on_stdout and on_socket


def test_a_refused_key_waits_for_a_reload(tmp_path, emu):
    key_file = tmp_path / "soniox.key"
    key_file.write_text("wrong-key\n")
    os.chmod(key_file, 0o600)
    ini = write_config(tmp_path, emu, f"file:{key_file}", audio__realtime="yes", audio__loop="yes")
    proc = edgecap("run", "-c", str(ini))
    try:
        assert emu.wait_for(lambda: emu.connections >= 1, 15)
        time.sleep(2.0)  # retry_first 100 ms: a retry loop would have tried many times
        assert emu.connections == 1
        key_file.write_text("the-key\n")
        proc.send_signal(signal.SIGHUP)
        assert emu.wait_for(lambda: len(emu.sessions) >= 2 and emu.sessions[-1].audio_ms > 500, 10)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    statuses = [e for e in events(out) if e["type"] == "status"]
    refused = [e for e in statuses if e["parts"].get("link", {}).get("state") == "rejected"]
    assert refused and "refused" in refused[0]["summary"]
    assert "unauthenticated" in refused[0]["summary"]
    assert "wrong-key" not in out + err and "the-key" not in out + err
    assert "reload" in err
