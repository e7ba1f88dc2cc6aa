"""The uplink buffer: speech between the gate and the service, kept until the service has it.

Every gate event enters the buffer and stays until the service *confirmed* it — for audio,
until the service reports that its recognition is final up to a point past it; for a speech
end, once it was answered. Sending does not remove anything: items move from ``pending``
(not yet sent in the current session) to ``sent`` (sent, not yet confirmed). When a session
ends before confirming, everything unconfirmed goes back to ``pending`` and is replayed on
the next session — so a connection cut mid-utterance loses nothing, and because only
unconfirmed audio is replayed, no caption is finalized twice.

The buffer holds at most ``max_samples`` of audio. Past that the oldest audio is dropped —
utterance markers stay, so every utterance remains well formed — and each dropped stretch
is recorded exactly (seconds, capture time), for status and for every output. Audio dropped
after it was sent and before the service confirmed it is lost only if the session then fails
(a graceful end, or a confirmation past it, means the service had it): it is kept track of
per session and reported with the session's failure. The audio not
yet sent (``unsent_samples``) is counted as it changes: the link asks for it with every
event it takes, to hold back a source that waits for it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from edgecap.runtime.frames import SAMPLE_RATE, Frame
from edgecap.runtime.speech import GateEvent, SpeechAudio, SpeechEnd, SpeechStart


@dataclass(slots=True)
class Item:
    event: GateEvent
    session_pos: int = -1  # samples of this session's audio sent before it; -1: unsent

    @property
    def samples(self) -> int:
        return self.event.frame.samples if isinstance(self.event, SpeechAudio) else 0


@dataclass
class Loss:
    """A stretch of speech dropped before it could be sent (capture time, seconds)."""

    samples: int = 0
    first: float | None = None
    last: float | None = None
    frames: int = 0

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE

    def add(self, start_sample: int, samples: int) -> None:
        start = start_sample / SAMPLE_RATE
        self.first = start if self.first is None else min(self.first, start)
        end = (start_sample + samples) / SAMPLE_RATE
        self.last = end if self.last is None else max(self.last, end)
        self.samples += samples
        self.frames += 1

    def merge(self, other: Loss) -> None:
        """Add ``other``'s stretch to this one (one report for both)."""
        if not other.samples:
            return
        for bound in (other.first, other.last):
            if bound is not None:
                self.first = bound if self.first is None else min(self.first, bound)
                self.last = bound if self.last is None else max(self.last, bound)
        self.samples += other.samples
        self.frames += other.frames

    @classmethod
    def of(cls, events: Iterable[GateEvent]) -> Loss:
        """The audio among ``events``, as one stretch."""
        loss = cls()
        for event in events:
            if isinstance(event, SpeechAudio):
                loss.add(event.frame.start, event.frame.samples)
        return loss


@dataclass
class UplinkBuffer:
    max_samples: int
    sent: deque[Item] = field(default_factory=deque)
    pending: deque[Item] = field(default_factory=deque)
    held_samples: int = 0
    unsent_samples: int = 0  # the audio in ``pending``
    session_samples: int = 0  # audio sent in the current session
    # totals
    confirmed_samples: int = 0
    replayed_samples: int = 0
    dropped: Loss = field(default_factory=Loss)  # since the daemon started
    _unreported: Loss = field(default_factory=Loss)
    unconfirmed_dropped_samples: int = 0  # sent, then dropped before the service confirmed
    # of those, this session's not confirmed since: (session_pos, capture start, samples)
    _dropped_sent: deque[tuple[int, int, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.max_samples <= 0:
            raise ValueError("max_samples must be positive")

    # --- input --------------------------------------------------------------------
    def push(self, event: GateEvent) -> None:
        item = Item(event)
        self.pending.append(item)
        if isinstance(event, SpeechAudio):
            self.held_samples += item.samples
            self.unsent_samples += item.samples
            while self.held_samples > self.max_samples:
                self._drop_oldest_audio()

    # --- sending ------------------------------------------------------------------
    def peek(self) -> Item | None:
        return self.pending[0] if self.pending else None

    def mark_sent(self) -> Item:
        """The first pending item was sent on the current session."""
        item = self.pending.popleft()
        item.session_pos = self.session_samples
        self.session_samples += item.samples
        self.unsent_samples -= item.samples
        self.sent.append(item)
        return item

    def skip(self) -> Item:
        """The first pending item, an utterance marker, needs nothing from this session (a
        speech end whose audio an earlier session confirmed): it leaves the buffer unsent."""
        item = self.pending.popleft()
        if isinstance(item.event, SpeechAudio):
            self.pending.appendleft(item)
            raise ValueError("audio is never skipped")
        return item

    def new_session(self, replay: bool = True) -> None:
        """A session ended: everything it did not confirm is sent again on the next one
        (``replay`` False: it goes elsewhere — to the offline engine at stop). Audio it was
        sent and dropped from the full buffer unconfirmed is lost: counted for ``take_loss``."""
        self._lose_dropped_sent(self._unreported)
        while self.sent:
            item = self.sent.pop()
            if replay and item.session_pos >= 0 and isinstance(item.event, SpeechAudio):
                self.replayed_samples += item.samples
            item.session_pos = -1
            self.unsent_samples += item.samples
            self.pending.appendleft(item)
        self.session_samples = 0

    def discard_unconfirmed(self) -> Loss:
        """The last session ended and none follows (stopping): what it sent and the service
        did not confirm leaves the buffer. Returns its audio, for the loss report."""
        loss = Loss.of(item.event for item in self.sent)
        self.held_samples -= loss.samples
        self.sent.clear()
        self.session_samples = 0
        self._lose_dropped_sent(loss)
        return loss

    def take_pending(self) -> Loss:
        """Nothing more will be sent (stopping, or the service is given up): the unsent
        speech leaves the buffer. Returns its audio, for the loss report."""
        loss = Loss.of(item.event for item in self.pending)
        self.held_samples -= loss.samples
        self.unsent_samples = 0
        self.pending.clear()
        return loss

    def take_all(self) -> list[GateEvent]:
        """Hand over everything held (between sessions: nothing is out with a service), as
        well-formed utterances: when the service confirmed the start of an utterance but
        not all of its audio, the rest gets a SpeechStart of its own."""
        if self.sent:
            raise RuntimeError("take_all during a session")
        out: list[GateEvent] = []
        open_utterance: int | None = None
        for item in self.pending:
            event = item.event
            if isinstance(event, SpeechStart):
                open_utterance = event.utterance
            elif isinstance(event, SpeechAudio) and open_utterance != event.utterance:
                start = event.frame.start
                out.append(SpeechStart(event.utterance, start, start, 0.0))
                open_utterance = event.utterance
            elif isinstance(event, SpeechEnd):
                if open_utterance != event.utterance:
                    continue  # its audio was all confirmed: nothing left of it to decode
                open_utterance = None
            out.append(event)
        self.pending.clear()
        self.held_samples = 0
        self.unsent_samples = 0
        return out

    # --- confirmation -------------------------------------------------------------
    def confirm_audio(self, session_samples: int) -> int:
        """The service's recognition is final up to ``session_samples`` of this session's
        audio: drop every sent item before that point. Returns the samples confirmed."""
        dropped = self._dropped_sent
        while dropped and dropped[0][0] < session_samples:
            pos, start, samples = dropped.popleft()
            if pos + samples > session_samples:  # confirmed part-way: the rest stays open
                cut = session_samples - pos
                dropped.appendleft((session_samples, start + cut, samples - cut))
                break
        done = 0
        while self.sent:
            item = self.sent[0]
            if isinstance(item.event, SpeechAudio):
                if item.session_pos + item.samples > session_samples:
                    cut = session_samples - item.session_pos
                    if cut > 0:
                        # Final part-way through a block (the gate's items are ~100 ms, the
                        # first of an utterance longer): keep only the unconfirmed rest, so
                        # a replay never sends the service words it already made final.
                        frame = item.event.frame
                        rest = Frame(frame.pcm[2 * cut :], frame.start + cut, frame.captured_at)
                        item.event = SpeechAudio(item.event.utterance, rest)
                        item.session_pos += cut
                        done += cut
                    break
                done += item.samples
            elif isinstance(item.event, SpeechStart):
                if item.session_pos >= session_samples and not self._only_markers_follow():
                    break
            elif isinstance(item.event, SpeechEnd) and item.session_pos > session_samples:
                break
            self.sent.popleft()
        self.held_samples -= done
        self.confirmed_samples += done
        return done

    def confirm_all_sent(self) -> int:
        """Everything sent so far in this session is final (e.g. the answer to finalize)."""
        return self.confirm_audio(self.session_samples)

    def _only_markers_follow(self) -> bool:
        return all(not isinstance(i.event, SpeechAudio) for i in self.sent)

    # --- state --------------------------------------------------------------------
    @property
    def pending_samples(self) -> int:
        return self.unsent_samples

    @property
    def unconfirmed(self) -> bool:
        return bool(self.sent)

    @property
    def empty(self) -> bool:
        return not self.sent and not self.pending

    def take_loss(self) -> Loss | None:
        """The speech dropped since the last call, or None."""
        if not self._unreported.samples:
            return None
        loss, self._unreported = self._unreported, Loss()
        return loss

    # --- bound --------------------------------------------------------------------
    def _lose_dropped_sent(self, into: Loss) -> None:
        """The session ended without confirming audio that was dropped from the full buffer
        after it was sent: it cannot be sent again, so it is lost — counted as dropped and
        in ``into`` (the loss still to report, or the one handed back)."""
        for _, start, samples in self._dropped_sent:
            self.dropped.add(start, samples)
            into.add(start, samples)
        self._dropped_sent.clear()

    def _drop_oldest_audio(self) -> None:
        for queue_ in (self.sent, self.pending):
            for index, item in enumerate(queue_):
                if isinstance(item.event, SpeechAudio):
                    del queue_[index]
                    self.held_samples -= item.samples
                    frame = item.event.frame
                    if queue_ is self.sent:
                        # The service had it but had not confirmed it: it may well be
                        # recognised — unless the session fails (``_lose_dropped_sent``).
                        self.unconfirmed_dropped_samples += item.samples
                        self._dropped_sent.append((item.session_pos, frame.start, item.samples))
                    else:
                        self.unsent_samples -= item.samples
                        self.dropped.add(frame.start, item.samples)
                        self._unreported.add(frame.start, item.samples)
                    return
