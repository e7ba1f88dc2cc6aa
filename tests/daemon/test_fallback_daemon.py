"""`edgecap run` with service = soniox and fallback = local, end to end: a real daemon, the
real gate, the Soniox emulator over TLS, and real pocketsphinx behind the fallback."""

from __future__ import annotations

import pytest

from tests.daemon.test_daemon import edgecap, events
from tests.daemon.test_daemon_soniox import DEMO, write_config
from tests.emulators.soniox import SonioxEmulator, expected_words
from tests.services.local.test_worker import decode, gate_events
from tests.services.local.wer import wer

LJ = (
    "unless a system is established for the frequent formal review of activities "
    "thereunder in this regard"
)


def offline_reference() -> str:
    """What pocketsphinx makes of the demo's utterances as the gate forwards them."""
    from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart
    from tests.conftest import read_pcm16

    texts, current = [], b""
    for e in gate_events(read_pcm16(DEMO)):
        if isinstance(e, SpeechStart):
            current = b""
        elif isinstance(e, SpeechAudio):
            current += e.frame.pcm
        elif isinstance(e, SpeechEnd):
            texts.append(decode(current))
    return " ".join(t for t in texts if t)


def run_with_fallback(tmp_path, emu: SonioxEmulator, key: str, realtime: str) -> tuple[str, str]:
    """The daemon on the demo, service = soniox at ``emu``, fallback = local after 1 s."""
    ini = write_config(
        tmp_path,
        emu,
        "env:SONIOX_API_KEY",
        audio__realtime=realtime,
        daemon__fallback="local",
        daemon__fallback_after="1s",
    )
    proc = edgecap("run", "-c", str(ini), env={"SONIOX_API_KEY": key})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return out, err


@pytest.mark.slow
def test_a_refused_service_falls_back_to_offline_captions(tmp_path):
    with SonioxEmulator(tmp_path / "emu", api_key="the-right-key", lag_ms=300) as emu:
        out, err = run_with_fallback(tmp_path, emu, "a-wrong-key", realtime="yes")
    assert "a-wrong-key" not in out + err
    captions = [e for e in events(out) if e["type"] == "caption"]
    finals = [e for e in captions if e["final"] and e["text"]]
    assert finals and all(e["offline"] for e in captions)
    text = " ".join(e["text"] for e in finals)
    # the fallback gets the same utterances the offline engine gets with service = local
    assert text.split() == offline_reference().split()
    assert wer(LJ, text) < 0.5
    assert "captions now come from the offline engine" in err


def test_the_cloud_captions_while_it_works_and_nothing_is_offline(tmp_path):
    with SonioxEmulator(tmp_path / "emu", api_key="the-key", lag_ms=300) as emu:
        out, _ = run_with_fallback(tmp_path, emu, "the-key", realtime="no")
        sent = bytes(emu.sessions[0].audio)
    captions = [e for e in events(out) if e["type"] == "caption"]
    assert captions and not any(e["offline"] for e in captions)
    words = " ".join(e["text"] for e in captions if e["final"]).split()
    assert words == [w.strip() for w in expected_words(sent)]
