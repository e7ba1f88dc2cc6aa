"""Caption events: what the CaptionBoard publishes and every output consumes.

An output keys lines by ``seq``. A line is published again each time it changes; the flags
say what may still change:

- ``final`` False: the text is provisional and may still change (or vanish: empty text).
- ``final`` True: the text never changes again; the translations may still grow.
- ``translation_final`` True (only ever together with ``final``): the line is done and is
  never published again.

A final line with empty text and no translation withdraws a line that was only ever shown
provisionally. A translation-only service (it gives the translation and not what was said)
publishes lines whose ``text`` is empty and whose ``translations`` hold the captions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CaptionLine:
    seq: int  # 1, 2, 3 … for the daemon's life
    text: str  # what was said, in ``language``
    speaker: str | None
    language: str | None
    start: float | None  # seconds of capture time; None when unknown
    end: float | None
    final: bool
    translation_final: bool
    # language → translated text, in the order of the configured target languages (then
    # any other language the service chose, in order of arrival); empty without translation
    translations: Mapping[str, str] = field(default_factory=dict)
    offline: bool = False  # from the offline engine (service = local, or the fallback)
    # how sure the service was of ``language`` (0..1; None: it did not say)
    language_confidence: float | None = None

    @property
    def done(self) -> bool:
        """True for the last event of this seq."""
        return self.final and self.translation_final


@dataclass(frozen=True, slots=True)
class AudioLoss:
    """Speech that was captured but never reached the service (the link reports it)."""

    seconds: float
    start: float | None  # seconds of capture time
    end: float | None
    reason: str  # for people: "network down", "buffer full" …


@dataclass(frozen=True, slots=True)
class SynthesizedAudio:
    """A piece of speech the service synthesized: a spoken translation (Azure Speech's
    translation synthesis). The chunks of one utterance arrive in order; the last one has
    ``end`` True (and may be empty). Only outputs whose ``takes`` include ``"audio"`` get
    them (outputs/base.py)."""

    language: str  # the voice's language: the translation's target
    format: str  # e.g. "riff-16khz-16bit-mono-pcm", "audio/ogg; codecs=opus"
    data: bytes
    end: bool
    seq: int | None = None  # the caption line it speaks, when the board knows it


CaptionEvent = CaptionLine | AudioLoss | SynthesizedAudio
