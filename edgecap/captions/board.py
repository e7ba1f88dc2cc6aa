"""The caption model: tokens from a service codec in, caption lines out.

The board keeps the lines that may still change: at most one *open* line (final tokens are
appended to it; the provisional tail is shown at its end) and the closed lines whose
translation is not final yet. Every change is published as a :class:`CaptionLine`; a line is
published only when its event differs from the last one published for it.

Lines are broken before a final spoken token when the speaker changes, when the line would
exceed ``max_line_chars`` (at a word boundary: when the token continues a word, the word's
first pieces move to the new line with it), or when the line already ends a sentence and is
at least 40 characters long (decided at the next word, so "3." "14" stays "3.14"); an
endpoint or finalize reply closes the open line. The provisional tail never breaks a line.

Translation tokens follow their originals in the stream without timestamps, so they are
paired by order: they go to the oldest line that still awaits a translation. A line stops
awaiting once it got final translation tokens and then either a final *original* token of a
later line arrives or an endpoint/finalize closes it. Untranslated words (kind "none") do
not end the wait: they get no translation, so what follows may still be the older line's.
A closed line that got no translation by an endpoint keeps waiting until the next original
token of a later line (a translation may arrive right after the marker), so a line the
service never translates cannot shift every later translation onto the wrong line.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import NamedTuple

from edgecap.captions.events import AudioLoss, CaptionEvent, CaptionLine, SynthesizedAudio
from edgecap.captions.sanitize import clean_label, clean_text
from edgecap.captions.tokens import Token, TokenUpdate

log = logging.getLogger(__name__)

Clock = Callable[[int], float | None]

SENTENCE_END = (".", "?", "!", "。", "？", "！", "।")
SENTENCE_MIN_CHARS = 40
TRANSLATION_LIMIT = 2000  # characters of one line's translation


def _no_clock(ms: int) -> float | None:
    return None


def _wide(ch: str) -> bool:
    """Scripts written without spaces (CJK): every character is a word boundary."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _joined(texts: Iterable[str]) -> str:
    return "".join(texts)


def _starts_word(previous: str, text: str) -> bool:
    """Whether ``text`` begins a new word after ``previous`` (both raw, spaces kept)."""
    if not previous.strip() or not text.strip():
        return True
    if text[0].isspace() or previous[-1].isspace():
        return True
    return _wide(previous.rstrip()[-1]) or _wide(text.lstrip()[0])


def _cleaned(tokens: tuple[Token, ...]) -> tuple[Token, ...]:
    """Service text is untrusted: no escapes or controls reach an output (sanitize.py)."""
    return tuple(
        replace(
            t,
            text=clean_text(t.text, 500),
            speaker=clean_label(t.speaker),
            language=clean_label(t.language),
        )
        for t in tokens
    )


class _Piece(NamedTuple):
    """A spoken token as a line keeps it: times already mapped to capture seconds."""

    text: str
    language: str | None
    original: bool
    start: float | None
    end: float | None

    @classmethod
    def of(cls, tok: Token, clock: Clock) -> _Piece:
        start = clock(tok.start_ms) if tok.start_ms is not None else None
        end = clock(tok.end_ms) if tok.end_ms is not None else None
        return cls(tok.text, tok.language, tok.kind == "original", start, end)


class _Line:
    """One caption line while it may still change."""

    __slots__ = (
        "closed",
        "got_translation",
        "last",
        "marked",
        "offline",
        "pieces",
        "seq",
        "speaker",
        "tail",
        "tail_speaker",
        "tail_translation",
        "tail_translation_language",
        "translation",
        "translation_final",
        "translation_language",
    )

    def __init__(self, seq: int, offline: bool = False) -> None:
        self.seq = seq
        self.offline = offline
        self.pieces: list[_Piece] = []  # its final spoken tokens
        self.speaker: str | None = None
        self.translation = ""  # final translation tokens, raw
        self.translation_language: str | None = None
        self.got_translation = False
        self.closed = False
        self.translation_final = False
        # a marker (endpoint, finalize, session end) came while it had no translation
        self.marked = False
        self.last: CaptionLine | None = None
        self.clear_tail()

    def clear_tail(self) -> None:
        self.tail: list[_Piece] = []
        self.tail_speaker: str | None = None
        self.tail_translation = ""
        self.tail_translation_language: str | None = None

    @property
    def text(self) -> str:
        return _joined(p.text for p in self.pieces)

    @property
    def has_finals(self) -> bool:
        return any(p.text.strip() for p in self.pieces)

    @property
    def has_original(self) -> bool:
        return any(p.original for p in self.pieces)

    def event(self) -> CaptionLine:
        final = self.closed
        pieces = self.pieces if final else self.pieces + self.tail
        languages = Counter(p.language for p in pieces if p.language)
        starts = [p.start for p in pieces if p.start is not None]
        ends = [p.end for p in pieces if p.end is not None]
        translation = self.translation
        if not self.translation_final:
            translation += self.tail_translation
        return CaptionLine(
            seq=self.seq,
            text=_joined(p.text for p in pieces).strip(),
            translation=translation.strip()[:TRANSLATION_LIMIT],
            speaker=self.speaker if self.has_finals else self.tail_speaker,
            language=languages.most_common(1)[0][0] if languages else None,
            translation_language=self.translation_language or self.tail_translation_language,
            start=starts[0] if starts else None,
            end=max(ends) if ends else None,
            final=final,
            translation_final=final and self.translation_final,
            offline=self.offline,
        )


class Numbering:
    """Line numbers for the daemon's life, shared by the boards that write at once (a cloud
    service's and the offline fallback's), so every line has its own ``seq``."""

    def __init__(self, first: int = 1) -> None:
        self._next = first
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            seq = self._next
            self._next += 1
            return seq

    @property
    def next(self) -> int:
        return self._next


class CaptionBoard:
    """Turns a service's token updates into caption events.

    Not thread-safe by design: the link's thread owns it. ``publish`` should not raise; if it
    does, the error is logged and the board goes on.
    """

    def __init__(
        self,
        publish: Callable[[CaptionEvent], None],
        *,
        translation: bool = False,
        max_line_chars: int = 120,
        first_seq: int = 1,
        numbering: Numbering | None = None,
        offline: bool = False,
    ) -> None:
        """``offline``: the lines come from the offline engine (marked so on every output)."""
        if max_line_chars < 1:
            raise ValueError("max_line_chars must be positive")
        self._publish = publish
        self._translation = translation
        self._max = max_line_chars
        # past this even a break inside a word is better than a longer line (no-space scripts)
        self._hard_max = max_line_chars + max_line_chars // 4
        self._lines: list[_Line] = []  # lines that may still change, in seq order
        self._open: _Line | None = None
        # a board replaced at a reload continues the numbering
        self._numbering = numbering if numbering is not None else Numbering(first_seq)
        self._offline = offline
        self.orphan_translations = 0  # final translation tokens no line was waiting for

    @property
    def next_seq(self) -> int:
        return self._numbering.next

    # --- the link's calls -----------------------------------------------------------------

    def update(self, u: TokenUpdate, clock: Clock = _no_clock) -> None:
        """Apply one update; ``clock`` maps this session's ms to capture seconds."""
        if not (u.final or u.provisional or u.endpoint or u.finalized):
            return
        u = replace(u, final=_cleaned(u.final), provisional=_cleaned(u.provisional))
        self._clear_tails()
        for tok in u.final:
            if tok.spoken:
                self._final_spoken(tok, clock)
            else:
                self._final_translation(tok)
        if u.endpoint or u.finalized:
            self._marker()
        self._set_tail(u.provisional, clock)
        self._flush()

    def session_ended(self) -> None:
        """Drop the provisional tail: the link replays unfinished audio on a new session.

        The open line stays open with its final text. No translation will come for what the
        old session made final (the new one never hears it): closed lines stop waiting, and
        the open line stops waiting as soon as a later line's words arrive.
        """
        self._clear_tails()
        for line in self._lines:
            if line.closed:
                line.translation_final = True
            else:
                line.marked = True
        self._flush()

    def close(self) -> None:
        """End of everything: the open line and every translation become final."""
        self._clear_tails()
        if self._open is not None:
            self._close_open()
        for line in self._lines:
            line.translation_final = True
        self._flush()

    def loss(self, seconds: float, start: float | None, end: float | None, reason: str) -> None:
        self._send(AudioLoss(seconds, start, end, reason))

    def synthesized(self, audio: SynthesizedAudio) -> None:
        """Spoken translation: passed on, tagged with the newest line that has a translation
        in its language (what the service is speaking)."""
        if audio.seq is None:
            for line in reversed(self._lines):
                if line.translation and line.translation_language == audio.language:
                    audio = replace(audio, seq=line.seq)
                    break
        self._send(audio)

    # --- rules ----------------------------------------------------------------------------

    def _awaits(self, line: _Line) -> bool:
        return self._translation and line.has_original and not line.translation_final

    def _new_line(self) -> _Line:
        line = _Line(self._numbering.take(), self._offline)
        self._lines.append(line)
        self._open = line
        return line

    def _close_open(self) -> None:
        line = self._open
        assert line is not None
        line.closed = True
        self._open = None
        if not self._awaits(line):
            line.translation_final = True

    def _split_at(self, line: _Line, tok: Token) -> int | None:
        """Where the open line ends if ``tok`` comes next: an index into its pieces (the
        pieces from there on move to the new line with ``tok``), or None: no break."""
        n = len(line.pieces)
        if tok.speaker is not None and line.speaker is not None and tok.speaker != line.speaker:
            return n  # (a token without a speaker is not a change: services omit it at times)
        current = line.text
        stripped = current.strip()
        boundary = _starts_word(current, tok.text)
        if boundary and len(stripped) >= SENTENCE_MIN_CHARS and stripped.endswith(SENTENCE_END):
            return n
        length = len((current + tok.text).strip())
        if length <= self._max:
            return None
        if boundary:
            return n
        # ``tok`` continues a word: break before that word's first piece, if it has a start
        for k in range(n - 1, 0, -1):
            before = _joined(p.text for p in line.pieces[:k])
            if before.strip() and _starts_word(before, line.pieces[k].text):
                return k
        # one word fills the whole line (a script without spaces, a URL): cut it, late
        return n if length > self._hard_max else None

    def _final_spoken(self, tok: Token, clock: Clock) -> None:
        line = self._open
        piece = _Piece.of(tok, clock)
        if not tok.text.strip():
            # A bare space: part of the line it follows, never the start of one.
            if line is not None and line.has_finals:
                line.pieces.append(piece)
            return
        if line is not None and line.has_finals:
            split = self._split_at(line, tok)
            if split is not None:
                carried = line.pieces[split:]
                del line.pieces[split:]
                self._close_open()
                line = self._new_line()
                line.pieces += carried
        if line is None:
            line = self._new_line()
        if tok.kind == "original":
            # Words of a later line that will be translated: what comes next translates them,
            # so older lines that got their translation are done. (Untranslated words move
            # nothing: a late translation of an older line may still follow them.)
            for old in self._lines:
                if old is line:
                    break
                if self._awaits(old) and (old.got_translation or old.marked):
                    old.translation_final = True
        if not line.has_finals or line.speaker is None:
            line.speaker = tok.speaker
        line.pieces.append(piece)

    def _final_translation(self, tok: Token) -> None:
        if not self._translation:
            return
        target = next((line for line in self._lines if self._awaits(line)), None)
        if target is None:
            self.orphan_translations += 1
            log.debug("translation token %r with no line awaiting it", tok.text)
            return
        target.translation += tok.text
        target.got_translation = True
        if target.translation_language is None:
            target.translation_language = tok.language

    def _marker(self) -> None:
        """An endpoint or finalize reply: everything said so far is final."""
        if self._open is not None and self._open.has_finals:
            self._close_open()
        for line in self._lines:
            if line.closed and self._awaits(line):
                if line.got_translation:
                    line.translation_final = True
                else:
                    line.marked = True

    def _clear_tails(self) -> None:
        for line in self._lines:
            line.clear_tail()

    def _set_tail(self, provisional: tuple[Token, ...], clock: Clock) -> None:
        spoken = [t for t in provisional if t.spoken]
        if spoken and _joined(t.text for t in spoken).strip():
            line = self._open if self._open is not None else self._new_line()
            line.tail = [_Piece.of(t, clock) for t in spoken]
            line.tail_speaker = next((t.speaker for t in spoken if t.speaker), None)
        translated = [t for t in provisional if not t.spoken]
        if translated and self._translation:
            target = next((line for line in self._lines if self._awaits(line)), None)
            if (
                target is None
                and self._open is not None
                and any(p.original for p in self._open.tail)
            ):
                target = self._open
            if target is not None:
                target.tail_translation = _joined(t.text for t in translated)
                target.tail_translation_language = translated[0].language

    def _flush(self) -> None:
        """Publish every line whose event changed; forget the lines that are done."""
        keep: list[_Line] = []
        for line in self._lines:
            event = line.event()
            if event != line.last and (line.last is not None or event.text or event.translation):
                line.last = event
                self._send(event)
            if not (line.closed and line.translation_final):
                keep.append(line)
        self._lines = keep

    def _send(self, event: CaptionEvent) -> None:
        try:
            self._publish(event)
        except Exception:
            log.exception("caption listener failed")
