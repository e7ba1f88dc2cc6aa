"""The offline engine in a process of its own: a real child process running the real
pocketsphinx, over real pipes — its words are the in-process engine's, a bad model is a
clear error, a killed child is noticed and replaced, a stop's SIGTERM does not cut it off,
and it never outlives its owner's close."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

from edgecap.runtime.speech import SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue
from edgecap.runtime.status import StatusBoard
from edgecap.services.local.process import DecoderProcess, EngineCrashed
from edgecap.services.local.recognizers import EngineError, PocketsphinxRecognizer
from edgecap.services.local.worker import LocalWorker
from tests.conftest import read_pcm16
from tests.link.harness import RecordingSink, wait_until
from tests.services.local.test_worker import DEMO, gate_events
from tests.services.local.test_worker import decode as decode_frames

BLOCK = 3200  # 100 ms, as the daemon's blocks come


def decode(recognizer, pcm: bytes) -> list[tuple[str, int, int]]:  # type: ignore[no-untyped-def]
    """One utterance in 100 ms blocks with a partial every 0.5 s, as the worker calls."""
    recognizer.start()
    for i in range(0, len(pcm), BLOCK):
        recognizer.feed(pcm[i : i + BLOCK])
        if i % (5 * BLOCK) == 0:
            recognizer.partial()
    return recognizer.finish()


def kill_engine(engine: DecoderProcess) -> None:
    """SIGKILL the engine's process (never pid 0: that would be this whole process group)."""
    pid = engine.pid
    assert pid is not None and pid > 0
    os.kill(pid, signal.SIGKILL)


def wait_dead(engine: DecoderProcess, timeout: float = 5.0) -> None:
    proc = engine._proc
    assert proc is not None
    proc.wait(timeout)


@pytest.fixture
def engine():  # type: ignore[no-untyped-def]
    e = DecoderProcess("pocketsphinx")
    yield e
    e.close()


def test_its_words_are_the_in_process_engines_and_it_decodes_elsewhere(engine):
    pcm = read_pcm16(DEMO)
    words = decode(engine, pcm)
    assert words == decode(PocketsphinxRecognizer(), pcm)
    assert len(words) > 10 and engine.name == "pocketsphinx"
    assert engine.pid is not None and engine.pid != os.getpid()
    assert engine.cpu_seconds() > 0  # the decoding was the child's CPU, not ours


def test_a_model_it_cannot_load_is_the_same_clear_error(tmp_path: Path):
    missing = tmp_path / "no-model"
    with pytest.raises(EngineError, match="no pocketsphinx model at") as caught:
        DecoderProcess("pocketsphinx", missing)
    with pytest.raises(EngineError) as direct:
        PocketsphinxRecognizer(missing)
    assert str(caught.value) == str(direct.value)


def test_a_killed_child_is_an_engine_crash_and_a_restart_decodes_again(engine):
    pcm = read_pcm16(DEMO)
    first = engine.pid
    engine.start()
    engine.feed(pcm[: 10 * BLOCK])
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_dead(engine)
    with pytest.raises(EngineCrashed, match="signal 9"):
        engine.feed(pcm[10 * BLOCK : 11 * BLOCK])
        engine.finish()
    engine.restart()
    assert engine.pid not in (None, first) and engine.restarts == 1
    assert decode(engine, pcm) == decode(PocketsphinxRecognizer(), pcm)


def test_sigterm_does_not_end_it_and_close_does(engine):
    """At a stop systemd signals every process of the service: the engine must still give
    the last words; it ends when its owner closes it."""
    pcm = read_pcm16(DEMO)
    proc = engine._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGTERM)
    assert len(decode(engine, pcm)) > 10
    engine.close()
    assert proc.returncode == 0 and engine.pid is None
    engine.close()  # twice is harmless


def _utterances(events: list) -> list[list]:  # type: ignore[type-arg]
    out: list[list] = []  # type: ignore[type-arg]
    for e in events:
        if isinstance(e, SpeechStart):
            out.append([])
        out[-1].append(e)
    return out


def test_the_worker_replaces_a_dead_engine_and_reports_what_it_lost():
    """Three utterances; the engine is killed between the first two (nothing lost: the next
    one starts on a new engine) and in the middle of the third (what it had of that one is
    reported lost; the rest of it is decoded by a new engine)."""
    pcm = read_pcm16(DEMO)
    one = _utterances(gate_events(pcm))
    assert len(one) == 1
    start, *audio, end = one[0]
    assert isinstance(end, SpeechEnd)

    def utterance(k: int) -> list:  # type: ignore[type-arg]
        return [replace(e, utterance=k) for e in (start, *audio, end)]

    queue = SpeechQueue(600 * 16_000)
    sink, status = RecordingSink(), StatusBoard()
    engine = DecoderProcess("pocketsphinx")
    worker = LocalWorker(queue, engine, sink, status)
    worker.start()
    try:
        for e in utterance(1):
            queue.put(e)
        assert wait_until(lambda: worker.utterances == 1, 30)
        kill_engine(engine)
        wait_dead(engine)
        for e in utterance(2):
            queue.put(e)
        assert wait_until(lambda: worker.utterances == 2, 30)
        assert engine.restarts == 1 and sink.losses == []
        half = len(audio) // 2
        third = utterance(3)
        for e in third[: 1 + half]:
            queue.put(e)
        assert wait_until(lambda: worker.frames == 3 * len(audio) - (len(audio) - half), 30)
        kill_engine(engine)
        wait_dead(engine)
        for e in third[1 + half :]:
            queue.put(e)
        queue.close()
        assert worker.join(60) and worker.error is None
    finally:
        queue.close()
        worker.request_stop()
        worker.join(10)
    whole = decode_frames(b"".join(a.frame.pcm for a in audio)).split()  # a fresh engine's
    finals = [w.strip() for w in sink.finals]
    assert finals[: 2 * len(whole)] == whole + whole  # the first two, both whole
    assert 0 < len(finals) - 2 * len(whole) < len(whole)  # of the third, what came after
    fed = sum(a.frame.samples for a in audio[:half]) / 16_000
    (loss,) = sink.losses
    # what the killed engine had: the first half, but for the block it may have been taking
    assert loss[3] == "offline engine crashed" and fed - 0.1 <= loss[0] <= fed + 1e-9
    assert engine.restarts == 2 and worker.engine_restarts == 2
    assert status.snapshot().state_of("engine") == "stopped"
    assert engine.pid is None  # closed with the worker
