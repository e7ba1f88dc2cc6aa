"""What the speech gate emits: an utterance is SpeechStart, SpeechAudio..., SpeechEnd.

Every SpeechStart is followed by zero or more SpeechAudio and exactly one SpeechEnd, in
sample order, with no gaps between the frames of one utterance (pre-roll included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgecap.runtime.frames import Frame

EndReason = Literal["silence", "max_length", "end_of_input", "stop", "source_lost"]


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """An utterance begins. ``sample`` is the first sample that will be sent (pre-roll
    included); ``onset`` is the first sample the detector judged to be speech."""

    utterance: int  # 1, 2, 3 ... per gate
    sample: int
    onset: int
    at: float  # time.monotonic() when the start was decided


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    utterance: int
    frame: Frame


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """The utterance ended. ``sample`` is one past its last sent sample."""

    utterance: int
    sample: int
    reason: EndReason
    at: float


GateEvent = SpeechStart | SpeechAudio | SpeechEnd


@dataclass(frozen=True, slots=True)
class Activity:
    """The gate's view of one utterance, for people watching (stdout): ``end`` is None while
    it goes on. Times are seconds since the source opened."""

    utterance: int
    start: float  # seconds since the source opened (sample-accurate)
    end: float | None = None
    reason: str = ""
