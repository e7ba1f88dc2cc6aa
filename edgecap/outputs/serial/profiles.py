"""What each kind of serial device is sent (bytes per ../shared/HARDWARE.md).

A profile turns caption lines into bytes and knows what the device shows; the output owns
the transport. Every method that returns bytes *proposes* them: the profile changes its
idea of the device only when ``sent()`` confirms they were written. If the write fails
(adapter pulled out), nothing is lost: after the reopen the same text is proposed again
(``lines``, ``encoder``) or the display is redrawn from the caption state (LCDs).

- ``lines``: a final line is its text + CRLF; with ``provisional`` the line being spoken is
  rewritten in place after a CR, padded with spaces over the longer text it replaces.
- ``serlcd`` / ``matrix-orbital``: the newest rows × cols of captions, each row padded to
  the full width; only rows that changed are rewritten, each after a cursor command.
- ``encoder``: the real-time roll-up state of EEG/Ai-Media, Evertz, Link and Ultech
  encoders, finals only, in the CEA-608 character set, paced to ``chars_per_second``.

A serial device shows one text per line: the original, or with ``show = translation`` ONE
translation (``pick``): the first language listed in ``translations``, or the line's first
translation when none is listed.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from edgecap.captions.events import CaptionLine
from edgecap.config.schema import SerialConfig
from edgecap.outputs.rollup import CaptionLines, cell_width, choose_translations, layout
from edgecap.outputs.serial.cea608 import to_cea608, to_lcd
from edgecap.outputs.serial.transliterate import TransliterationNote

log = logging.getLogger(__name__)

CTRL_A, CTRL_C, CR, CRLF = b"\x01", b"\x03", b"\r", b"\r\n"

SERLCD_CLEAR = b"\x7c\x2d"  # '|' '-'
MATRIX_ORBITAL_CLEAR = b"\xfe\x58"
MATRIX_ORBITAL_AUTOSCROLL_OFF = b"\xfe\x52"  # writing the last cell must not scroll

PROVISIONAL_CELLS = 79  # ``lines``: a rewritten line must fit one row of an 80-column terminal
LINES_BACKLOG = 64 * 1024  # ``lines``: bytes kept while the device is away
ENCODER_BACKLOG_SECONDS = 20.0  # ``encoder``: more text than this at the pace is dropped
ENCODER_CLOSE_SECONDS = 2.0  # ``encoder``: at most this much text is flushed unpaced at stop
ENCODER_DIALECTS = ("eeg", "evertz")


class Profile(Protocol):
    provisional: bool  # it shows provisional text (else it is never given any)

    def opening(self, now: float) -> bytes:
        """Bytes right after the transport opened (init, clear, end a stale state)."""
        ...

    def caption(self, line: CaptionLine, now: float) -> None:
        """Take a caption update (nothing is written here)."""
        ...

    def take(self, now: float) -> bytes:
        """Bytes to write now (b"" for nothing)."""
        ...

    def closing(self, now: float) -> bytes:
        """Bytes before the transport closes."""
        ...

    def sent(self) -> None:
        """The bytes the last opening/take/closing returned were written."""
        ...

    def wake_in(self, now: float) -> float | None:
        """Seconds until ``take`` has bytes to write without a new caption (pacing, a
        release after a quiet while); None when only a caption can give it any."""
        ...


def pick(line: CaptionLine, show: str, language: str = "") -> tuple[str, bool]:
    """The text a single-text device shows for ``line`` and whether it is final. With
    ``show = translation`` it is one translation: the one in ``language``, or the line's
    first when ``language`` is empty; a line is final once its translation is, and a line
    that ends without that translation (it was already in that language) is shown in its
    original words."""
    if show == "translation":
        chosen = choose_translations(line.translations, (language,) if language else (), 1)
        text = chosen[0][1] if chosen else ""
        return text or (line.text if line.done else ""), line.done
    return line.text, line.final


class Seen:
    """The seqs already sent, bounded (seqs only grow: the oldest are forgotten)."""

    def __init__(self, keep: int = 1000) -> None:
        self._order: deque[int] = deque()
        self._set: set[int] = set()
        self.keep = keep

    def add(self, seq: int) -> None:
        if seq in self._set:
            return
        self._order.append(seq)
        self._set.add(seq)
        if len(self._order) > self.keep:
            self._set.discard(self._order.popleft())

    def __contains__(self, seq: object) -> bool:
        return seq in self._set


class _Proposing:
    """Holds what to change once the proposed bytes are confirmed written."""

    _on_sent: Callable[[], None] | None = None

    def wake_in(self, now: float) -> float | None:
        return None  # everything proposed goes out at once: only a caption brings more

    def _propose(self, data: bytes, on_sent: Callable[[], None]) -> bytes:
        self._on_sent = on_sent
        return data

    def sent(self) -> None:
        on_sent, self._on_sent = self._on_sent, None
        if on_sent is not None:
            on_sent()


# --- lines ---------------------------------------------------------------------------------
def _tail(text: str, cells: int) -> str:
    """The end of ``text`` that fits ``cells``, starting at a word when it can."""
    if cell_width(text) <= cells:
        return text
    words = text.split(" ")
    while len(words) > 1 and cell_width(" ".join(words)) > cells:
        words.pop(0)
    text = " ".join(words)
    while cell_width(text) > cells:
        text = text[1:]
    return text


class LinesProfile(_Proposing):
    """Plain text for a terminal, a printer or another program: UTF-8, CRLF line ends."""

    def __init__(
        self, show: str = "original", provisional: bool = False, language: str = ""
    ) -> None:
        self.show = show
        self.language = language
        self.provisional = provisional
        self._outbox = bytearray()  # written in order; kept across a reopen
        self._seen = Seen()
        self._prov_seq: int | None = None
        self._prov_text = ""  # the provisional text on the current terminal line
        self._prov_cells = 0  # cells of it that are not blank

    def opening(self, now: float) -> bytes:
        return b""

    def caption(self, line: CaptionLine, now: float) -> None:
        text, final = pick(line, self.show, self.language)
        if final:
            if line.seq in self._seen:
                return
            self._seen.add(line.seq)
            if text:
                self._final(line.seq, text)
            elif self._prov_seq == line.seq:
                self._erase()  # a line shown only provisionally was withdrawn
        elif self.provisional:
            if text:
                self._provisional(line.seq, text)
            elif self._prov_seq == line.seq:
                self._erase()

    def _final(self, seq: int, text: str) -> None:
        out = "\r" if self._prov_cells else ""
        out += text + " " * max(0, self._prov_cells - cell_width(text)) + "\r\n"
        self._prov_cells = 0
        if self._prov_seq in (None, seq):
            self._prov_seq, self._prov_text = None, ""
        else:  # another line is being spoken: it goes on below the final one
            out += self._prov_text
            self._prov_cells = cell_width(self._prov_text)
        self._queue(out)

    def _provisional(self, seq: int, text: str) -> None:
        shown = _tail(text, PROVISIONAL_CELLS)
        if seq == self._prov_seq and shown == self._prov_text:
            return
        pad = " " * max(0, self._prov_cells - cell_width(shown))
        self._queue("\r" + shown + pad)
        self._prov_seq, self._prov_text, self._prov_cells = seq, shown, cell_width(shown)

    def _erase(self) -> None:
        self._queue("\r" + " " * self._prov_cells + "\r")
        self._prov_seq, self._prov_text, self._prov_cells = None, "", 0

    def _queue(self, text: str) -> None:
        self._outbox += text.encode("utf-8")
        excess = len(self._outbox) - LINES_BACKLOG
        if excess > 0:  # the device has been away long: keep the newest whole lines
            end = self._outbox.find(CRLF, excess)
            cut = len(self._outbox) if end < 0 else end + len(CRLF)
            del self._outbox[:cut]
            log.warning(
                "serial device away: %d bytes of the oldest caption lines dropped (%d kept)",
                cut,
                len(self._outbox),
            )

    def take(self, now: float) -> bytes:
        data = bytes(self._outbox)

        def done() -> None:
            del self._outbox[: len(data)]

        return self._propose(data, done)

    def closing(self, now: float) -> bytes:
        return self.take(now)


# --- character LCDs ------------------------------------------------------------------------
class LcdProfile(_Proposing):
    """A SparkFun SerLCD/OpenLCD or an Adafruit USB+Serial backpack (Matrix Orbital
    commands). The device's own scrolling is never relied on: every row is written whole."""

    provisional = True

    def __init__(
        self, kind: str, rows: int, cols: int, show: str = "original", language: str = ""
    ) -> None:
        if kind not in ("serlcd", "matrix-orbital"):
            raise ValueError(f"not an LCD profile: {kind}")
        self.kind, self.rows, self.cols, self.show = kind, rows, cols, show
        self.language = language
        self._captions = CaptionLines(keep=max(8, rows * 4))
        self._shown = [" " * cols] * rows  # what the device shows (after a confirmed write)
        self._dirty = True
        self.indic = TransliterationNote(f"serial {kind}")  # Indic text shown in Latin

    def opening(self, now: float) -> bytes:
        data = SERLCD_CLEAR
        if self.kind == "matrix-orbital":
            data = MATRIX_ORBITAL_AUTOSCROLL_OFF + MATRIX_ORBITAL_CLEAR
        self._dirty = True
        return self._propose(data, self._cleared)

    def _cleared(self) -> None:
        self._shown = [" " * self.cols] * self.rows

    def caption(self, line: CaptionLine, now: float) -> None:
        if self._captions.apply(line):
            self._dirty = True
            self.indic.check(pick(line, self.show, self.language)[0])

    def render(self) -> list[str]:
        """The rows the display should show, top first, each exactly ``cols`` wide."""
        chosen = []
        for line in self._captions.lines():
            text, _final = pick(line, self.show, self.language)
            lcd_text, _dropped = to_lcd(text)
            if lcd_text:  # the chosen text goes in .text: layout shows "original" only
                chosen.append(replace(line, text=lcd_text, translations={}))
        rows = layout(chosen, self.rows, self.cols, "original", measure=len)
        texts = [""] * (self.rows - len(rows)) + [r.text for r in rows]
        return [t[: self.cols].ljust(self.cols) for t in texts]

    def cursor(self, row: int) -> bytes:
        """Move to the start of ``row`` (0-based)."""
        if self.kind == "matrix-orbital":
            return bytes([0xFE, 0x47, 1, row + 1])  # column, row: 1-based
        # HD44780 set-DDRAM-address: rows 3 and 4 continue rows 1 and 2 (0x14/0x54 on 20×4).
        starts = (0x00, 0x40, self.cols, 0x40 + self.cols)
        return bytes([0xFE, 0x80 | starts[row]])

    def take(self, now: float) -> bytes:
        if not self._dirty:
            return b""
        want = self.render()
        data = b"".join(
            self.cursor(i) + text.encode("ascii")
            for i, text in enumerate(want)
            if text != self._shown[i]
        )
        if not data:
            self._dirty = False  # an update that changed nothing visible
            return b""

        def done() -> None:
            self._shown = want
            self._dirty = False

        return self._propose(data, done)

    def closing(self, now: float) -> bytes:
        self._dirty = True
        return self._propose(
            SERLCD_CLEAR if self.kind == "serlcd" else MATRIX_ORBITAL_CLEAR, self._cleared
        )


# --- caption encoders ----------------------------------------------------------------------
def encoder_setup(dialect: str, channel: str, rows: int, base_row: int) -> bytes:
    """Ctrl-C (end whatever state the port was in), then the real-time roll-up command.

    EEG/Ai-Media (the default; also what iCap takes): ``^C ^A2 cc1 3 b15 word CR`` — word
    mode: the encoder wraps at its 32 columns and words may arrive in any chunking.
    Evertz: ``^C ^A2 C1 3 B15 CR`` (no word/line argument in its manuals).
    """
    if dialect == "evertz":
        args = f"2 C{channel[-1]} {rows} B{base_row}"
    elif dialect == "eeg":
        args = f"2 {channel} {rows} b{base_row} word"
    else:
        raise ValueError(f"unknown encoder dialect {dialect!r} (one of {ENCODER_DIALECTS})")
    return CTRL_C + CTRL_A + args.encode("ascii") + CR


class EncoderProfile(_Proposing):
    """Real-time roll-up captions through a broadcast encoder.

    Only final text is sent: in roll-up the only way to revise text on air is backspace,
    which viewers see. Each line is its words plus a trailing space (a word-mode encoder
    places a word once a space ends it) and a CR separates one line from the next. Text
    leaves at most ``chars_per_second`` (CEA-608 carries about 60) in small chunks from
    ``take``, which the output calls from ``idle`` — never a long write in ``handle``.
    After ``idle_release`` with nothing sent, and at stop, Ctrl-C ends the real-time
    state: while an encoder is in it, captions from upstream on that channel are blocked.
    """

    provisional = False  # roll-up cannot take text back

    def __init__(
        self,
        *,
        setup: bytes,
        chars_per_second: int = 60,
        idle_release: float = 30.0,
        uppercase: bool = False,
        show: str = "original",
        language: str = "",
    ) -> None:
        self.setup = setup
        self.language = language
        self.rate = float(chars_per_second)
        self.idle_release = idle_release
        self.uppercase = uppercase
        self.show = show
        # Chunks of about four characters (fewer tiny writes), at least 50 a second.
        self.busy_interval = max(0.02, min(0.1, 4.0 / self.rate))
        self.burst = max(1.0, self.rate * self.busy_interval)
        self.backlog = max(256, int(self.rate * ENCODER_BACKLOG_SECONDS))
        self.dropped_chars = 0  # characters no 608 decoder can show (other scripts)
        self.skipped_chars = 0  # text dropped because the encoder fell too far behind
        self._seen = Seen()
        self._text = bytearray()  # paced text not yet written; kept across a reopen
        self._realtime = False  # the encoder is in the real-time state (setup written)
        self._session_text = False  # text was written since the setup
        self._tokens = self.burst
        self._tokens_at: float | None = None
        self._active_at = 0.0  # setup or text last written
        self._warned_script = False
        self.indic = TransliterationNote("serial encoder")  # Indic text shown in Latin
        self._behind = False  # skipping text to catch up (warned once)

    def opening(self, now: float) -> bytes:
        def done() -> None:
            self._realtime = self._session_text = False

        return self._propose(CTRL_C, done)

    def caption(self, line: CaptionLine, now: float) -> None:
        text, final = pick(line, self.show, self.language)
        if not final or line.seq in self._seen:
            return
        self._seen.add(line.seq)
        self.indic.check(text)
        data, dropped = to_cea608(text, uppercase=self.uppercase)
        self.dropped_chars += dropped
        if dropped and not self._warned_script:
            self._warned_script = True
            log.warning(
                "serial encoder: %d characters of a caption cannot be shown in CEA-608 "
                "(Latin letters only) and were left out",
                dropped,
            )
        if not data:
            return
        separator = CR if (self._text or self._session_text) else b""
        self._text += separator + data + b" "
        excess = len(self._text) - self.backlog
        if excess > 0:  # far behind: drop the oldest text, resuming at a line start
            end = self._text.find(CR, excess)
            cut = excess if end < 0 else end
            del self._text[:cut]
            self.skipped_chars += cut
            if not self._behind:  # once until it caught up, not at every line
                self._behind = True
                log.warning(
                    "serial encoder: more than %.0f s of text waiting at %d characters/s; "
                    "the oldest is skipped",
                    ENCODER_BACKLOG_SECONDS,
                    self.rate,
                )

    def wake_in(self, now: float) -> float | None:
        """Paced text: the next chunk; in the real-time state with nothing to send: the
        release after ``idle_release``; else nothing until a caption."""
        if self._text:
            return self.busy_interval
        if self._realtime:
            return max(0.0, self._active_at + self.idle_release - now)
        return None

    def take(self, now: float) -> bytes:
        out = bytearray()
        enter = bool(self._text) and not self._realtime
        start = 0
        if enter:
            out += self.setup
            if self._text[:1] == CR:
                start = 1  # a new real-time session starts on a fresh row
        tokens = self.burst
        if self._tokens_at is not None:
            tokens = min(self.burst, self._tokens + max(0.0, now - self._tokens_at) * self.rate)
        n = min(len(self._text) - start, int(tokens))
        out += self._text[start : start + n]
        release = not self._text and self._realtime and now - self._active_at >= self.idle_release
        if release:
            out += CTRL_C  # let captions from upstream through while nobody speaks

        def done() -> None:
            self._tokens, self._tokens_at = tokens - n, now
            if enter:
                self._realtime, self._session_text, self._active_at = True, False, now
            del self._text[: start + n]
            if n:
                self._session_text, self._active_at = True, now
            if release:
                self._realtime = self._session_text = False
            if not self._text:
                self._behind = False

        return self._propose(bytes(out), done)

    def closing(self, now: float) -> bytes:
        out = bytearray()
        start = 0
        if self._text and not self._realtime:
            out += self.setup
            start = 1 if self._text[:1] == CR else 0
        chunk = self._text[start : start + int(self.rate * ENCODER_CLOSE_SECONDS)]
        out += chunk + CTRL_C

        def done() -> None:
            self.skipped_chars += len(self._text) - start - len(chunk)
            self._text.clear()
            self._realtime = self._session_text = False

        return self._propose(bytes(out), done)


def make_profile(cfg: SerialConfig, *, dialect: str = "eeg") -> Profile:
    language = cfg.translations[0] if cfg.translations else ""  # one text: the first listed
    if cfg.profile == "lines":
        return LinesProfile(cfg.show, cfg.provisional, language)
    if cfg.profile in ("serlcd", "matrix-orbital"):
        return LcdProfile(cfg.profile, cfg.rows, cfg.cols, cfg.show, language)
    if cfg.profile == "encoder":
        return EncoderProfile(
            setup=encoder_setup(dialect, cfg.channel, cfg.roll_rows, cfg.base_row),
            chars_per_second=cfg.chars_per_second,
            idle_release=cfg.idle_release,
            uppercase=cfg.uppercase,
            show=cfg.show,
            language=language,
        )
    raise ValueError(f"unknown serial profile {cfg.profile!r}")
