"""The offline engine's thread: the speech consumer for ``service = local``.

It drains the speech queue like the link does: at speech start a new utterance, frames
decoded as they come, a provisional caption every ``partial_interval`` of audio, the final
caption at speech end. Decoding is bounded: when the queue holds more than
``behind_limit`` of undecoded speech (a Pi too slow for the model) the status says
"behind"; the queue's own bound then drops the oldest speech, counted and reported. At stop
the backlog is decoded for at most ``stop_budget`` seconds; what is left is reported lost.

It sleeps until there is something to do, as the link does: the queue's waker (called by
every put and at close) and a stop or hand-over set one event, and the thread takes from
the queue without waiting (``get(0)``) when woken — no timeout polling while the room is
quiet.

The daemon's engine runs in a process of its own (``process.py``: pocketsphinx would
otherwise hold the GIL away from the capture thread for up to seconds on a Pi). If that
process dies, the utterance in progress is reported lost (what was fed of it), the status
says ``engine: restarting``, a new process is started, and the rest of the utterance is
decoded by it; the count is ``engine_restarts``. The worker closes its engine when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from edgecap.captions.sink import CaptionSink
from edgecap.captions.tokens import Token, TokenUpdate
from edgecap.runtime.frames import SAMPLE_RATE, seconds
from edgecap.runtime.speech import Activity, SpeechAudio, SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue
from edgecap.runtime.status import StatusBoard
from edgecap.runtime.worker import Worker
from edgecap.services.local.process import EngineCrashed
from edgecap.services.local.recognizers import Recognizer

log = logging.getLogger(__name__)


class LocalWorker(Worker):
    def __init__(
        self,
        queue: SpeechQueue,
        recognizer: Recognizer,
        sink: CaptionSink,
        status: StatusBoard,
        *,
        on_activity: Callable[[Activity], None] | None = None,
        partial_interval: float = 0.5,
        behind_limit: float = 5.0,
        stop_budget: float = 0.8,
        name: str = "local",
    ) -> None:
        super().__init__(name)
        self.queue = queue
        self.recognizer = recognizer
        self.sink = sink
        self.status = status
        self.on_activity = on_activity
        self.partial_samples = round(partial_interval * SAMPLE_RATE)
        self.behind_samples = round(behind_limit * SAMPLE_RATE)
        self.stop_budget = stop_budget
        self._open: SpeechStart | None = None
        self._since_partial = 0
        self._last_partial = ""
        self._stop_deadline: float | None = None
        self._skipped = 0  # samples not decoded at stop
        self._skip_first: int | None = None
        self._behind = False
        self.frames = 0
        self.utterances = 0
        self._thread_decode = 0.0  # this thread's CPU in the engine's calls
        cpu = getattr(recognizer, "cpu_seconds", None)  # an engine in a process of its own
        self._engine_cpu = cpu
        self._engine_cpu0 = cpu() if cpu is not None else 0.0  # its start, not decoding
        self.engine_restarts = 0
        self._fed = 0  # samples of the open utterance given to the engine
        self.final_ms: list[float] = []  # speech end → final caption, recent utterances
        self._woken = threading.Event()  # a put, the close, a stop or a hand-over

    @property
    def decode_seconds(self) -> float:
        """CPU spent decoding: this thread's in the engine's calls, and the engine process's
        (read now; its start-up, the model's loading, left out)."""
        process = self._engine_cpu() - self._engine_cpu0 if self._engine_cpu is not None else 0.0
        return self._thread_decode + process

    def request_stop(self) -> None:
        super().request_stop()
        if hasattr(self.recognizer, "deadline"):
            # an engine in a process of its own is not waited for past the stop's budget
            self.recognizer.deadline = time.monotonic() + self.stop_budget
        self._woken.set()

    def hand_over(self) -> None:
        super().hand_over()
        self._woken.set()

    def run(self) -> None:
        self.status.set("engine", "ready", self.recognizer.name)
        wake = self._woken.set
        self.queue.set_waker(wake)
        try:
            while not self.handing_over.is_set():
                if self.stopping and self._stop_deadline is None:
                    self._stop_deadline = time.monotonic() + self.stop_budget
                self._woken.clear()  # before looking: a put from now on wakes us again
                try:
                    event = self.queue.get(0)
                except TimeoutError:
                    with self.waiting():
                        self._woken.wait()
                    continue
                self.beat()
                if event is None:
                    break
                self._event(event)
            if self._open is not None and self.handing_over.is_set():
                try:
                    self._end(self._open.utterance, self._open.sample, "stop")
                except EngineCrashed as exc:  # handing over: no new engine for this worker
                    log.error("offline engine: %s", exc)
                    self._lose_open(self._fed, "offline engine crashed")
        finally:
            self.queue.unset_waker(wake)
            self.recognizer.close()
            if self._skipped:
                start = (self._skip_first or 0) / SAMPLE_RATE
                self.sink.loss(seconds(self._skipped), start, None, "not decoded before stop")
            self.sink.close()
            self.status.set("engine", "stopped", self.recognizer.name)

    def _event(self, event) -> None:  # type: ignore[no-untyped-def]
        try:
            self._decode(event)
        except EngineCrashed as exc:
            self._crashed(event, exc)

    def _crashed(self, event, exc: EngineCrashed) -> None:  # type: ignore[no-untyped-def]
        """The engine's process died: what it had of the open utterance is lost (reported),
        a new one takes the rest, from the audio at hand on. If it cannot be started again
        (or dies at once again) the worker fails."""
        lost = self._fed  # what the dead engine had of the open utterance
        self._fed = 0
        if self.stopping:
            lost += event.frame.samples if isinstance(event, SpeechAudio) else 0
            # Past the stop's budget (or dead while stopping): no new engine; the rest of
            # the speech is skipped and reported as not decoded.
            log.warning("offline engine at stop: %s", exc)
            self._lose_open(lost, "not decoded before stop")
            self._stop_deadline = 0.0
            if isinstance(event, SpeechEnd):
                self._close_utterance(event.utterance, event.sample, event.reason, ())
            return
        self.engine_restarts += 1
        self.status.put("engine_restarts", self.engine_restarts)
        log.error("offline engine: %s; starting it again", exc)
        self.status.set("engine", "restarting", str(exc))
        self._lose_open(lost, "offline engine crashed")
        restart = getattr(self.recognizer, "restart", None)
        if restart is None:
            raise exc
        restart()
        self.status.set("engine", "ready", self.recognizer.name)
        if isinstance(event, SpeechEnd):
            self._close_utterance(event.utterance, event.sample, event.reason, ())
        elif self._open is not None:
            self.recognizer.start()  # the rest of the utterance, as one of its own
            if isinstance(event, SpeechAudio):  # the audio at hand goes to the new engine
                self.recognizer.feed(event.frame.pcm)
                self._fed += event.frame.samples

    def _lose_open(self, samples: int, reason: str) -> None:
        """``samples`` of the open utterance will never be captioned: report them."""
        if samples and self._open is not None:
            self.sink.loss(seconds(samples), seconds(self._open.sample), None, reason)

    def _decode(self, event) -> None:  # type: ignore[no-untyped-def]
        if isinstance(event, SpeechStart):
            self._open = event
            self._fed = 0
            self.recognizer.start()
            self._since_partial = 0
            self._last_partial = ""
            if self.on_activity:
                self.on_activity(Activity(event.utterance, seconds(event.sample)))
        elif isinstance(event, SpeechAudio):
            self.frames += 1
            if self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                if self._skip_first is None:
                    self._skip_first = event.frame.start
                self._skipped += event.frame.samples
                return
            t0 = time.thread_time()
            self.recognizer.feed(event.frame.pcm)
            self._fed += event.frame.samples
            self._since_partial += event.frame.samples
            if self._since_partial >= self.partial_samples:
                self._since_partial = 0
                self._partial()
            self._thread_decode += time.thread_time() - t0
            self._check_behind()
        elif isinstance(event, SpeechEnd):
            self._end(event.utterance, event.sample, event.reason)

    def _partial(self) -> None:
        text = self.recognizer.partial()
        if text and text != self._last_partial:
            self._last_partial = text
            tokens = tuple(Token(" " + w, False) for w in text.split())
            self.sink.update(TokenUpdate(provisional=tokens), self._clock)

    def _end(self, utterance: int, sample: int, reason: str) -> None:
        t0, w0 = time.thread_time(), time.perf_counter()
        words = self.recognizer.finish()
        self._fed = 0
        self._thread_decode += time.thread_time() - t0
        tokens = tuple(Token(" " + w, True, "none", start, end) for w, start, end in words)
        self._close_utterance(utterance, sample, reason, tokens)
        self.final_ms.append((time.perf_counter() - w0) * 1000)
        del self.final_ms[:-1000]

    def _close_utterance(
        self, utterance: int, sample: int, reason: str, tokens: tuple[Token, ...]
    ) -> None:
        """Its final words (none: its provisional line just ends), then the activity."""
        self.sink.update(TokenUpdate(final=tokens, endpoint=True), self._clock)
        self.utterances += 1
        start = self._open.sample if self._open else sample
        self._open = None
        if self.on_activity:
            self.on_activity(Activity(utterance, seconds(start), seconds(sample), reason))

    def _clock(self, ms: int) -> float | None:
        if self._open is None:
            return None
        return self._open.sample / SAMPLE_RATE + ms / 1000

    def _check_behind(self) -> None:
        behind = self.queue.held_samples > self.behind_samples
        if behind != self._behind:
            self._behind = behind
            held = self.queue.held_samples / SAMPLE_RATE
            if behind:
                log.warning("offline engine behind: %.1f s of speech waiting", held)
                self.status.set("engine", "behind", f"{held:.0f} s of speech waiting")
            else:
                self.status.set("engine", "ready", self.recognizer.name)
