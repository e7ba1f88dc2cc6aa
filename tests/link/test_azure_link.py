"""The Azure codec driven by the real LinkWorker against the strict Azure emulator over TLS
(issue 12, first slice: recognition and translation end to end through the link; the fault
tests come with the service's wiring)."""

from __future__ import annotations

import pytest

from edgecap.config.schema import AzureConfig
from edgecap.runtime.speech import SpeechAudio
from edgecap.services.azure import AzureCodec
from tests.emulators.azure import AzureEmulator, text_of, translation_of, turn_words
from tests.link.harness import LinkRun, utterances, wait_until


@pytest.fixture
def azure(tmp_path):
    with AzureEmulator(tmp_path, api_key="test-key") as emulator:
        yield emulator


def _spoken(events) -> list[bytes]:  # type: ignore[no-untyped-def]
    """The PCM of each utterance, in order."""
    out: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, SpeechAudio):
            out[e.utterance] = out.get(e.utterance, b"") + e.frame.pcm
    return [out[k] for k in sorted(out)]


def test_recognition_turns_arrive_whole_with_telemetry(azure):
    codec = AzureCodec(AzureConfig(host=azure.base_url, language="en-US"), replay_speed=10.0)
    events = utterances([1500, 1200], gap_ms=600)
    run = LinkRun(azure, codec=codec).start()
    run.feed(events)
    assert wait_until(lambda: len(azure.sessions) == 1 and len(azure.sessions[0].turns) == 2, 10)
    assert wait_until(run.settled, 10)
    run.stop()
    session = azure.sessions[0]
    assert session.violations == []
    assert [bytes(t.audio) for t in session.turns] == _spoken(events)
    assert all(t.telemetry for t in session.turns)
    expected = [text_of([w for _, w in turn_words(pcm)]) for pcm in _spoken(events)]
    assert " ".join(run.sink.finals).split() == " ".join(expected).split()
    assert run.link.failures == 0 and run.sink.losses == []


def test_translation_into_two_languages(azure):
    cfg = AzureConfig(
        host=azure.base_url, mode="translation", language="en-US", targets=("de", "fr")
    )
    codec = AzureCodec(cfg, replay_speed=10.0)
    events = utterances([1500])
    run = LinkRun(azure, codec=codec).start()
    run.feed(events)
    assert wait_until(lambda: azure.sessions and azure.sessions[0].turns, 10)
    assert wait_until(run.settled, 10)
    run.stop()
    assert azure.sessions[0].violations == []
    words = [w for _, w in turn_words(_spoken(events)[0])]
    assert set(run.sink.translated) == {"de", "fr"}
    for language in ("de", "fr"):
        got = " ".join(run.sink.translated[language]).split()
        assert got == [translation_of(w, language).strip() for w in words]
