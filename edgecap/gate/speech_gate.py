"""The speech gate: turns a stream of frames into utterances of speech (webrtcvad).

``SpeechGate.feed_block()`` is called by the capture thread for every block a source reads
(whole consecutive frames, about 100 ms: see ``edgecap.runtime.frames``) and returns the
events it caused (see ``edgecap.runtime.speech``): ``SpeechStart``, then the utterance's
audio as ``SpeechAudio``, then ``SpeechEnd``. The rules below are applied frame by frame, in
one pass over the block: one webrtcvad call per frame (none for a frame of digital silence)
plus O(1) bookkeeping. What the block forwards of one utterance goes out as ONE
``SpeechAudio`` whose frame holds those frames joined (pre-roll and held silence included),
so the capture thread puts about one event per block while someone speaks and none in
silence. ``feed()`` applies the same rules but forwards every frame as a ``SpeechAudio`` of
its own (the Frame object fed, when fed single frames). The utterances, their samples,
starts, onsets, ends and reasons are the same however the audio is cut into blocks, and
each start and end is decided in the block that holds the frame that decided it.

All durations are converted to whole frames, rounding up: pre-roll P = ceil(preroll_ms /
frame_ms), hang-over H = max(1, ceil(hangover_ms / frame_ms)), min speech K = max(1,
ceil(min_speech_ms / frame_ms)), and the opening window W = ceil(K / 0.75). Defaults at 20 ms:
P = 15, K = 8, W = 11, H = 30.

Opening (state "listening" → "speech")
    The gate opens on the frame that makes at least K of the last W frames voiced (webrtcvad
    said speech): it takes ``min_speech_ms`` of voiced audio to open, within a window that
    tolerates a quarter of frames the detector missed (webrtcvad marks 83–93 % of the frames
    of real utterances as speech, 0–3.6 % of room silence). A run of fewer than K voiced
    frames never opens the gate. Note that webrtcvad keeps answering "speech" for 60–150 ms
    after any sound stops (its own hang-over), so a 40 ms click comes out of it as 80–140 ms
    of voiced frames. That is why the rule counts K voiced frames (within a longer window)
    rather than, say, 75 % of a window of min_speech_ms: 6 of 8 frames would let a 40 ms
    click in. At the default 150 ms with 10 or 20 ms frames clicks and knocks stay out; with
    30 ms frames, or a min_speech_ms under ~150, short bursts can open the gate.
    ``SpeechStart.onset`` is the oldest voiced frame in that window. Nothing before the onset
    is lost: the gate keeps the last P + W frames in a ring buffer and the utterance starts P
    frames before the onset — or at the oldest frame it has, after a start, a gap, a flush or
    the previous utterance — except that leading frames of digital silence are skipped, so
    ``SpeechStart.sample`` is the first sample actually forwarded. The buffered frames are
    emitted as ``SpeechAudio`` right after the ``SpeechStart``.

Hang-over (state "speech" → "listening")
    An open utterance ends (``SpeechEnd(reason="silence")``) on the H-th contiguous frame that
    is not voiced; any voiced frame restarts the count. So a pause shorter than the hang-over
    never splits an utterance (the release comes 60–150 ms after the hang-over would suggest,
    because of webrtcvad's own hold). The frames of the hang-over are forwarded as they come
    (the service should hear them at once), except digital silence (every sample exactly
    zero: a muted or dead input, ``Frame.is_digital_silence()``): such frames are held back,
    released in order when a frame that is not digital silence follows within the utterance,
    and dropped when the utterance ends. So digital silence is never forwarded at the edges
    of an utterance (not in the pre-roll, not at its end); a run of it shorter than the
    hang-over strictly inside an utterance is forwarded, because an utterance is contiguous.
    ``SpeechEnd.sample`` is the end of the last forwarded frame.

The detector and digital silence
    webrtcvad is never fed digital silence: zeros drag its noise estimate down to nothing, and
    afterwards it calls even a quiet room (-60 dBFS) speech for seconds (measured: 1.8 s
    after 10 s of zeros, at mode 2). After a mute (at least ``MUTE_RESET_MS`` of digital
    silence), a gap or a flush, a fresh ``webrtcvad.Vad`` is used: what the old one remembered
    (its noise estimate and its hold) belongs to other sound. Otherwise it is created once.

Invariants
    Every utterance is ``SpeechStart``, one or more ``SpeechAudio``, ``SpeechEnd``; its frames
    are contiguous in sample index, the first starts at ``SpeechStart.sample`` and the last
    ends at ``SpeechEnd.sample``; utterance ids are 1, 2, 3...; no frame is forwarded twice;
    between an utterance's first and last forwarded frame nothing is dropped.

Long utterances
    With ``max_utterance_s`` > 0, an utterance that reaches that length is ended with
    ``SpeechEnd(reason="max_length")`` and the next one starts with the very next forwarded
    sample (``SpeechStart.onset == SpeechStart.sample``), on the next frame: no sample is lost
    or duplicated. If the limit falls inside held digital silence, the split is made before
    that silence, which then leads the next piece and is skipped like any leading silence.
    If the hang-over runs out before anything else is sent, there is no next piece. (With a
    limit shorter than pre-roll plus min speech, the split can fall inside the pre-roll; the
    first piece's onset then lies in a later piece.)

Gaps and the end of input
    A frame with ``gap_before`` > 0, or one that does not start where the previous frame
    ended, is a discontinuity (in a block only its first frame can be: a block's start and
    ``gap_before`` are its first frame's, and the frames inside it are contiguous): an open
    utterance ends before it with reason "source_lost", the ring buffer is emptied (frames
    from before a gap are never pre-roll), and a new utterance may open normally from that
    frame on. ``flush(reason)`` ends an open utterance (end of input, stop, or a lost
    source) and empties the buffer the same way.

Off mode (``enabled=False``)
    Every frame is forwarded, digital silence included, as one endless utterance that starts
    at the first frame; it is still split at ``max_utterance_s`` and ended by a gap or
    ``flush()``. webrtcvad is not called (``frames_voiced`` stays 0).

Threading: a gate is driven by one thread. The counters are plain ints that other threads
may read for status.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import webrtcvad

from edgecap.runtime.frames import (
    FRAME_MS_CHOICES,
    SAMPLE_RATE,
    SAMPLE_WIDTH,
    Block,
    Frame,
    frame_samples,
)
from edgecap.runtime.speech import EndReason, GateEvent, SpeechAudio, SpeechEnd, SpeechStart

log = logging.getLogger(__name__)

GateState = Literal["listening", "speech"]
LISTENING: Final = "listening"
SPEECH: Final = "speech"

# Digital silence at least this long is a mute: webrtcvad starts afresh after it.
MUTE_RESET_MS: Final = 200
# Share of the opening window that must be voiced: K voiced frames within W = ceil(K / 0.75).
OPEN_RATIO_NUM: Final = 3
OPEN_RATIO_DEN: Final = 4


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class GateSettings:
    """How the speech gate behaves; see the module docstring for the exact rules.

    enabled: False = "off": forward everything as one endless utterance.
    aggressiveness: webrtcvad mode, 0 (lets most sound through) ... 3 (only clear speech).
    frame_ms: frame length, 10, 20 or 30 ms; every frame fed must have exactly this length.
    preroll_ms: audio from before the detected onset that is sent too.
    hangover_ms: a pause (non-speech) at least this long ends an utterance.
    min_speech_ms: voiced audio it takes to open; shorter voiced runs never open.
    max_utterance_s: an utterance this long is split; 0 = never.
    """

    enabled: bool = True
    aggressiveness: int = 2
    frame_ms: int = 20
    preroll_ms: int = 300
    hangover_ms: int = 600
    min_speech_ms: int = 150
    max_utterance_s: float = 60.0

    def __post_init__(self) -> None:
        problems = []
        if self.aggressiveness not in (0, 1, 2, 3) or isinstance(self.aggressiveness, bool):
            problems.append(f"aggressiveness must be 0..3, not {self.aggressiveness!r}")
        if self.frame_ms not in FRAME_MS_CHOICES or isinstance(self.frame_ms, bool):
            problems.append(f"frame_ms must be one of {FRAME_MS_CHOICES}, not {self.frame_ms!r}")
        for name in ("preroll_ms", "hangover_ms", "min_speech_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{name} must be a whole number of ms >= 0, not {value!r}")
        m = self.max_utterance_s
        if isinstance(m, bool) or not isinstance(m, int | float) or not math.isfinite(m) or m < 0:
            problems.append(f"max_utterance_s must be a number >= 0, not {m!r}")
        if problems:
            raise ValueError("invalid gate settings: " + "; ".join(problems))


class SpeechGate:
    """webrtcvad state machine with pre-roll and hang-over; see the module docstring."""

    def __init__(
        self,
        settings: GateSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        is_speech: Callable[[bytes, int], bool] | None = None,
    ) -> None:
        """``clock`` stamps the events' ``at``; ``is_speech(pcm, sample_rate)`` replaces
        webrtcvad (tests use it to script the detector frame by frame)."""
        s = settings if settings is not None else GateSettings()
        self.settings: Final = s
        self._clock = clock
        self._own_vad = is_speech is None
        self._is_speech = is_speech or webrtcvad.Vad(s.aggressiveness).is_speech
        self._mute_frames = _ceil_div(MUTE_RESET_MS, s.frame_ms)
        self._zero_run = 0  # contiguous frames of digital silence, in any state
        self.frame_samples: Final = frame_samples(s.frame_ms)
        self._frame_bytes = self.frame_samples * SAMPLE_WIDTH
        self._zeros = bytes(self._frame_bytes)
        # Durations in frames (see the module docstring).
        self.preroll_frames: Final = _ceil_div(s.preroll_ms, s.frame_ms)
        self.open_voiced_frames: Final = max(1, _ceil_div(s.min_speech_ms, s.frame_ms))
        self.open_window_frames: Final = _ceil_div(
            self.open_voiced_frames * OPEN_RATIO_DEN, OPEN_RATIO_NUM
        )
        self.hangover_frames: Final = max(1, _ceil_div(s.hangover_ms, s.frame_ms))
        self._max_samples = math.ceil(s.max_utterance_s * SAMPLE_RATE)
        self._enabled = s.enabled
        self._window_mask = (1 << self.open_window_frames) - 1

        # Listening: the last P + W frames, and the voiced flags of the last W (bit 0 newest).
        self._ring: deque[Frame] = deque(maxlen=self.preroll_frames + self.open_window_frames)
        self._bits = 0
        # Speech.
        self._state: GateState = LISTENING
        self._open = False  # a SpeechStart was emitted and its SpeechEnd not yet
        self._utterance = 0  # id of the latest utterance
        self._utt_start = 0  # SpeechStart.sample of the open utterance
        self._sent_end = 0  # end of the last forwarded frame
        self._unvoiced_run = 0  # contiguous frames that were not voiced, while in speech
        self._held: list[Frame] = []  # digital silence held back during the hang-over
        self._next_start: int | None = None  # where the next frame should start
        # Forwarded audio not yet emitted (feed_block joins it into one SpeechAudio): the
        # frames' pcm, the first one's start and gap, the last one's capture time.
        self._join = False
        self._run: list[bytes] = []
        self._run_start = 0
        self._run_gap = 0
        self._run_at = 0.0

        self.blocks_in = 0
        self.frames_in = 0
        self.frames_voiced = 0
        self.frames_forwarded = 0
        self.audio_out = 0  # SpeechAudio events emitted (feed_block joins frames into one)
        self.utterances = 0
        self.detector_resets = 0  # fresh webrtcvad after a mute, a gap or a flush

    @property
    def state(self) -> GateState:
        """The gate's state: "speech" from the moment an utterance opens until it ends
        (across max_length splits), else "listening"."""
        return self._state

    # The capture thread's entry points ---------------------------------------------------

    def feed_block(self, block: Block) -> list[GateEvent]:
        """Take one block (whole consecutive frames); return the events it caused, in order
        (often none). Audio of one utterance comes as one ``SpeechAudio`` (see above)."""
        events: list[GateEvent] = []
        self._join = True
        try:
            self._feed_frames(block, events)
            self._emit_run(events)
        finally:
            self._join = False
            self._run.clear()
        return events

    def feed(self, frame: Frame) -> list[GateEvent]:
        """Take one frame (or a block); return the events it caused, in order (often none).
        Every frame forwarded is a ``SpeechAudio`` of its own: the Frame fed, or for a block
        a Frame of each of its frames."""
        events: list[GateEvent] = []
        self._feed_frames(frame, events)
        return events

    def _feed_frames(self, block: Block, events: list[GateEvent]) -> None:
        pcm, fb = block.pcm, self._frame_bytes
        n = len(pcm) // fb
        if not n or len(pcm) != n * fb:
            raise ValueError(
                f"audio of {len(pcm)} bytes; the gate takes whole frames of {fb} bytes "
                f"({self.settings.frame_ms} ms of 16 kHz s16le)"
            )
        self.blocks_in += 1
        if n == 1:
            self._feed(block, events)
            return
        fs, start, at = self.frame_samples, block.start, block.captured_at
        self._feed(Frame(pcm[:fb], start, at, block.gap_before), events)
        for i in range(1, n):
            self._feed(Frame(pcm[i * fb : (i + 1) * fb], start + i * fs, at), events)

    def _feed(self, frame: Frame, events: list[GateEvent]) -> None:
        """The per-frame rules (see the module docstring) for one frame of the right size."""
        self.frames_in += 1
        if frame.gap_before or (self._next_start is not None and frame.start != self._next_start):
            self._discontinuity(frame, events)
        self._next_start = frame.start + self.frame_samples

        if not self._enabled:
            self._state = SPEECH
            self._forward(frame, events)
            return

        silent = frame.pcm == self._zeros  # == Frame.is_digital_silence(), as one memcmp
        if silent:
            self._zero_run += 1
            voiced = False
        else:
            if self._zero_run:
                if self._zero_run >= self._mute_frames and self._own_vad:
                    self._reset_detector()
                self._zero_run = 0
            voiced = self._is_speech(frame.pcm, SAMPLE_RATE)
        if voiced:
            self.frames_voiced += 1

        if self._state == LISTENING:
            self._ring.append(frame)
            self._bits = ((self._bits << 1) | voiced) & self._window_mask
            if voiced and self._bits.bit_count() >= self.open_voiced_frames:
                self._begin(events)
            return

        if voiced:
            self._unvoiced_run = 0
        else:
            self._unvoiced_run += 1
        self._pass(frame, silent, events)
        if self._unvoiced_run >= self.hangover_frames:
            self._end("silence", events)

    def flush(self, reason: EndReason) -> list[GateEvent]:
        """End the open utterance, if any (end of input, stop, lost source), and forget
        the buffered frames: what comes next is not contiguous with what came before."""
        events: list[GateEvent] = []
        self._end(reason, events)
        self._next_start = None
        self._fresh_start()
        return events

    # Internals ---------------------------------------------------------------------------

    def _reset_detector(self) -> None:
        """What webrtcvad remembers (noise estimate, its own hold) is stale after a mute,
        a gap or a flush: start a fresh one. Rare, so creating it is no cost."""
        self._is_speech = webrtcvad.Vad(self.settings.aggressiveness).is_speech
        self.detector_resets += 1

    def _discontinuity(self, frame: Frame, events: list[GateEvent]) -> None:
        log.debug(
            "capture discontinuity before sample %d (gap %d, expected start %s)",
            frame.start,
            frame.gap_before,
            self._next_start,
        )
        self._end("source_lost", events)
        self._fresh_start()

    def _fresh_start(self) -> None:
        """After a gap or a flush the sound that follows is unrelated to what came before."""
        if self._own_vad:
            self._reset_detector()
        self._zero_run = 0

    def _begin(self, events: list[GateEvent]) -> None:
        """Open an utterance: emit its start and the buffered frames from the pre-roll on."""
        frames = list(self._ring)
        onset_index = len(frames) - self._bits.bit_length()  # oldest voiced frame in window
        first = max(0, onset_index - self.preroll_frames)
        zeros = self._zeros
        while frames[first].pcm == zeros:  # ends at the onset frame at the latest: it is voiced
            first += 1
        self._ring.clear()
        self._bits = 0
        self._state = SPEECH
        self._unvoiced_run = 0
        self._start(frames[first].start, frames[onset_index].start, events)
        for f in frames[first:]:
            self._pass(f, f.pcm == zeros, events)

    def _start(self, sample: int, onset: int, events: list[GateEvent]) -> None:
        self._emit_run(events)  # (empty: whatever ended the last utterance emitted it)
        self._utterance += 1
        self.utterances += 1
        self._open = True
        self._utt_start = sample
        self._sent_end = sample
        events.append(SpeechStart(self._utterance, sample, onset, self._clock()))

    def _pass(self, frame: Frame, silent: bool, events: list[GateEvent]) -> None:
        """A frame inside the speech state: hold digital silence, forward anything else."""
        if silent:
            if self._open:  # released if a frame that is not silence follows, else dropped
                self._held.append(frame)
            return  # else it would lead an utterance: skipped
        if self._held:
            held_end = self._sent_end + len(self._held) * self.frame_samples
            if self._max_samples and held_end - self._utt_start >= self._max_samples:
                # The length limit falls inside the held silence: split before it, so that
                # neither piece ends or starts with digital silence (which is dropped).
                self._split(events)
            else:
                for f in self._held:
                    self._forward(f, events)
            self._held.clear()
        self._forward(frame, events)

    def _forward(self, frame: Frame, events: list[GateEvent]) -> None:
        if not self._open:  # the next utterance after a max_length split, or in off mode
            self._start(frame.start, frame.start, events)
        if not self._join:
            events.append(SpeechAudio(self._utterance, frame))
            self.audio_out += 1
        else:
            if not self._run:
                self._run_start, self._run_gap = frame.start, frame.gap_before
            self._run.append(frame.pcm)
            self._run_at = frame.captured_at
        self.frames_forwarded += 1
        self._sent_end = frame.start + self.frame_samples
        if self._max_samples and self._sent_end - self._utt_start >= self._max_samples:
            self._split(events)

    def _emit_run(self, events: list[GateEvent]) -> None:
        """The audio forwarded since the last event, as one SpeechAudio (before any marker,
        and at the end of a block). All of it belongs to the open utterance: a marker ends
        every run."""
        run = self._run
        if run:
            pcm = run[0] if len(run) == 1 else b"".join(run)
            frame = Frame(pcm, self._run_start, self._run_at, self._run_gap)
            events.append(SpeechAudio(self._utterance, frame))
            self.audio_out += 1
            run.clear()

    def _split(self, events: list[GateEvent]) -> None:
        """End the utterance at its length limit; the next forwarded frame starts another."""
        self._open = False
        self._emit_run(events)
        events.append(SpeechEnd(self._utterance, self._sent_end, "max_length", self._clock()))

    def _end(self, reason: EndReason, events: list[GateEvent]) -> None:
        """Back to listening with an empty buffer; end the open utterance if there is one."""
        self._held.clear()
        if self._open:
            self._open = False
            self._emit_run(events)
            events.append(SpeechEnd(self._utterance, self._sent_end, reason, self._clock()))
        self._state = LISTENING
        self._unvoiced_run = 0
        self._ring.clear()
        self._bits = 0
