"""The caption model: tokens from a service codec in, caption lines out.

The board keeps the lines that may still change: at most one *open* line (final tokens are
appended to it; the provisional tail is shown at its end) and the closed lines whose
translations are not final yet. Every change is published as a :class:`CaptionLine`; a line
is published only when its event differs from the last one published for it.

Lines are broken before a final token when the speaker changes, when the line would exceed
``max_line_chars`` (at a word boundary: when the token continues a word, the word's first
pieces move to the new line with it), or when the line already ends a sentence and is at
least 40 characters long (decided at the next word, so "3." "14" stays "3.14"); an endpoint
or finalize reply closes the open line. The provisional tail never breaks a line.

Translations: a line carries one per language (``CaptionLine.translations``, keyed by the
translation token's language, "" when the service names none), in the order of the board's
``targets`` (the configured target languages), then any other language in order of
arrival; each is cut at ``TRANSLATION_LIMIT`` characters. A non-empty ``targets`` turns
translation on; without it translation tokens are ignored.

Translation tokens follow their originals in the stream without timestamps, so they are
paired by order: they go to the oldest line that still awaits a translation, whatever their
language, so a service that translates into several languages at once (the final originals,
then a final translation per language, then an endpoint) gives all of them to one line. A
line stops awaiting once it got final translation tokens and then either a final *original*
token of a later line arrives or an endpoint/finalize closes it. Untranslated words (kind
"none") do not end the wait: they get no translation, so what follows may still be the older
line's. A closed line that got no translation by an endpoint keeps waiting until the next
original token of a later line (a translation may arrive right after the marker), so a line
the service never translates cannot shift every later translation onto the wrong line.
Provisional translation tokens go, per language, to the same line a final one would (or to
the open line while its tail holds originals) and are replaced by every update.

Translation-only (``translation_only``: the service gives the translation and not what was
said): a translation token that no line awaits is the words of a line of its own. It is
placed as a spoken token would be — the same line breaks, measured on the line's translated
text in that token's language — the line's ``text`` stays empty, its ``translations`` hold
the captions, and it is final (translations too) at the endpoint or finalize reply.

Profanity (``profanity``, a :class:`ProfanityFilter`): applied to the text and to every
translation of each line as its event is built — final and provisional alike — on the
assembled text, never on tokens, since a service may split a word across tokens ("fu"
"ck"). A provisional tail that ends inside a word may show its beginning ("fu") for a
moment; once the word is whole it is masked in the provisional text as in the final one.
Line lengths are measured on the text before filtering.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import NamedTuple

from edgecap.captions.events import AudioLoss, CaptionEvent, CaptionLine, SynthesizedAudio
from edgecap.captions.profanity import ProfanityFilter
from edgecap.captions.sanitize import clean_label, clean_text
from edgecap.captions.tokens import Token, TokenUpdate

log = logging.getLogger(__name__)

Clock = Callable[[int], float | None]

SENTENCE_END = (".", "?", "!", "。", "？", "！", "।")
SENTENCE_MIN_CHARS = 40
TRANSLATION_LIMIT = 2000  # characters of one line's translation, per language
_VOICED_KEEP = 32  # languages remembered for tagging synthesized speech


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
            source_language=clean_label(t.source_language),
        )
        for t in tokens
    )


def _target(tok: Token) -> str | None:
    """The stream a token belongs to: None for what was said, else the translation's
    language ("" when the service does not name it)."""
    return None if tok.spoken else (tok.language or "")


def _ordered(
    raw: Mapping[str, str], targets: tuple[str, ...], profanity: ProfanityFilter | None = None
) -> dict[str, str]:
    """Translations as published: filtered, stripped, cut, empty ones left out, ``targets``
    first."""
    if profanity is not None:
        raw = {lang: profanity.apply(text, lang or None) for lang, text in raw.items()}
    texts = {lang: text.strip()[:TRANSLATION_LIMIT] for lang, text in raw.items()}
    out = {lang: texts[lang] for lang in targets if texts.get(lang)}
    out.update((lang, text) for lang, text in texts.items() if text and lang not in out)
    return out


class _Piece(NamedTuple):
    """A token as a line keeps it: times already mapped to capture seconds."""

    text: str
    language: str | None  # what was said: its language; a translation: the one it is from
    original: bool
    start: float | None
    end: float | None
    target: str | None  # None: what was said; a translation's language (translation-only)
    language_confidence: float | None = None

    @classmethod
    def of(cls, tok: Token, clock: Clock) -> _Piece:
        start = clock(tok.start_ms) if tok.start_ms is not None else None
        end = clock(tok.end_ms) if tok.end_ms is not None else None
        target = _target(tok)
        language = tok.language if target is None else tok.source_language
        return cls(
            tok.text, language, tok.kind == "original", start, end, target, tok.language_confidence
        )


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
        "tail_translations",
        "translation_final",
        "translations",
    )

    def __init__(self, seq: int, offline: bool = False) -> None:
        self.seq = seq
        self.offline = offline
        # its final tokens: what was said, and in translation-only mode its translated words
        self.pieces: list[_Piece] = []
        self.speaker: str | None = None
        self.translations: dict[str, str] = {}  # paired final translation tokens, raw
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
        self.tail_translations: dict[str, str] = {}  # paired provisional translations

    @property
    def has_finals(self) -> bool:
        return any(p.text.strip() for p in self.pieces)

    @property
    def has_original(self) -> bool:
        return any(p.original for p in self.pieces)

    def event(
        self, targets: tuple[str, ...], profanity: ProfanityFilter | None = None
    ) -> CaptionLine:
        final = self.closed
        pieces = self.pieces if final else self.pieces + self.tail
        spoken = [p for p in pieces if p.target is None]
        # a translation-only line's language: the one its translations are from
        languages = Counter(p.language for p in (spoken or pieces) if p.language)
        starts = [p.start for p in pieces if p.start is not None]
        ends = [p.end for p in pieces if p.end is not None]
        raw: dict[str, str] = {}
        for p in pieces:
            if p.target is not None:
                raw[p.target] = raw.get(p.target, "") + p.text
        tails = () if self.translation_final else (self.tail_translations,)
        for texts in (self.translations, *tails):
            for lang, text in texts.items():
                raw[lang] = raw.get(lang, "") + text
        language = languages.most_common(1)[0][0] if languages else None
        sure = [
            p.language_confidence
            for p in (spoken or pieces)
            if p.language == language and p.language_confidence is not None
        ]
        text = _joined(p.text for p in spoken).strip()
        if profanity is not None:
            text = profanity.apply(text, language)
        return CaptionLine(
            seq=self.seq,
            text=text,
            speaker=self.speaker if self.has_finals else self.tail_speaker,
            language=language,
            start=starts[0] if starts else None,
            end=max(ends) if ends else None,
            final=final,
            translation_final=final and self.translation_final,
            translations=_ordered(raw, targets, profanity),
            offline=self.offline,
            language_confidence=min(sure) if sure else None,
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
        targets: Iterable[str] = (),
        translation_only: bool = False,
        max_line_chars: int = 120,
        first_seq: int = 1,
        numbering: Numbering | None = None,
        offline: bool = False,
        profanity: ProfanityFilter | None = None,
    ) -> None:
        """``targets``: the configured translation target languages, in display order
        (empty: no translation). ``translation_only``: the service gives translations
        without the transcript (see the module's docstring). ``offline``: the lines come
        from the offline engine (marked so on every output). ``profanity``: the filter for
        every line's text and translations (None: as the service sent them)."""
        if max_line_chars < 1:
            raise ValueError("max_line_chars must be positive")
        self._publish = publish
        self._targets = tuple(targets)
        self._translation = bool(self._targets) or translation_only
        self._translation_only = translation_only
        self._max = max_line_chars
        # past this even a break inside a word is better than a longer line (no-space scripts)
        self._hard_max = max_line_chars + max_line_chars // 4
        self._lines: list[_Line] = []  # lines that may still change, in seq order
        self._open: _Line | None = None
        # a board replaced at a reload continues the numbering
        self._numbering = numbering if numbering is not None else Numbering(first_seq)
        self._offline = offline
        self._profanity = profanity
        # language → seq of the newest line with a final translation in it (what a spoken
        # translation speaks; that line may be done and forgotten when the audio comes)
        self._voiced: dict[str, int] = {}
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
                self._final_piece(tok, clock)
            else:
                self._final_translation(tok, clock)
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
        """Spoken translation: passed on, tagged with the newest line that has a final
        translation in its language (what the service is speaking)."""
        if audio.seq is None and audio.language in self._voiced:
            audio = replace(audio, seq=self._voiced[audio.language])
        self._send(audio)

    # --- rules ----------------------------------------------------------------------------

    def _awaits(self, line: _Line) -> bool:
        return self._translation and line.has_original and not line.translation_final

    def _awaiting(self) -> _Line | None:
        """The line a translation token belongs to: the oldest one awaiting a translation."""
        return next((line for line in self._lines if self._awaits(line)), None)

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

    def _split_at(self, line: _Line, piece: _Piece, speaker: str | None) -> int | None:
        """Where the open line ends if ``piece`` comes next: an index into its pieces (the
        pieces from there on move to the new line with it), or None: no break. Lengths are
        those of the text ``piece`` continues (what was said, or one translation)."""
        n = len(line.pieces)
        if speaker is not None and line.speaker is not None and speaker != line.speaker:
            return n  # (a token without a speaker is not a change: services omit it at times)
        at = [i for i, p in enumerate(line.pieces) if p.target == piece.target]
        texts = [line.pieces[i].text for i in at]
        current = _joined(texts)
        stripped = current.strip()
        boundary = _starts_word(current, piece.text)
        if boundary and len(stripped) >= SENTENCE_MIN_CHARS and stripped.endswith(SENTENCE_END):
            return n
        length = len((current + piece.text).strip())
        if length <= self._max:
            return None
        if boundary:
            return n
        # ``piece`` continues a word: break before that word's first piece, if it has a start
        for k in range(len(texts) - 1, 0, -1):
            before = _joined(texts[:k])
            if before.strip() and _starts_word(before, texts[k]):
                return at[k]
        # one word fills the whole line (a script without spaces, a URL): cut it, late
        return n if length > self._hard_max else None

    def _final_piece(self, tok: Token, clock: Clock) -> None:
        """A final token that is a line's own words: spoken, or translation-only."""
        line = self._open
        piece = _Piece.of(tok, clock)
        if not tok.text.strip():
            # A bare space: part of the line it follows, never the start of one.
            if line is not None and line.has_finals:
                line.pieces.append(piece)
            return
        if line is not None and line.has_finals:
            split = self._split_at(line, piece, tok.speaker)
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
        if piece.target is not None:
            self._voice(piece.target, line.seq)

    def _final_translation(self, tok: Token, clock: Clock) -> None:
        if not self._translation:
            return
        target = self._awaiting()
        if target is None:
            if self._translation_only:
                self._final_piece(tok, clock)
                return
            self.orphan_translations += 1
            log.debug("translation token %r with no line awaiting it", tok.text)
            return
        language = tok.language or ""
        have = target.translations.get(language, "")
        if len(have.strip()) < TRANSLATION_LIMIT:  # past it, the rest would be cut anyway
            target.translations[language] = have + tok.text
        target.got_translation = True
        self._voice(language, target.seq)

    def _voice(self, language: str, seq: int) -> None:
        if seq >= self._voiced.get(language, 0):
            self._voiced.pop(language, None)
            self._voiced[language] = seq
            while len(self._voiced) > _VOICED_KEEP:
                del self._voiced[next(iter(self._voiced))]

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
        if not (translated and self._translation):
            return
        target = self._awaiting()
        if target is None and self._open is not None and any(p.original for p in self._open.tail):
            target = self._open
        if target is not None:
            for t in translated:
                language = t.language or ""
                target.tail_translations[language] = (
                    target.tail_translations.get(language, "") + t.text
                )
        elif self._translation_only and _joined(t.text for t in translated).strip():
            line = self._open if self._open is not None else self._new_line()
            line.tail += [_Piece.of(t, clock) for t in translated]
            if line.tail_speaker is None:
                line.tail_speaker = next((t.speaker for t in translated if t.speaker), None)

    def _flush(self) -> None:
        """Publish every line whose event changed; forget the lines that are done."""
        keep: list[_Line] = []
        for line in self._lines:
            event = line.event(self._targets, self._profanity)
            if event != line.last and (line.last is not None or event.text or event.translations):
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
