"""Captions to serial displays and broadcast caption encoders (bytes per ../shared/HARDWARE.md).

A transport (a serial port through pyserial, or TCP host:port for encoders reached over
telnet or iCap) carries the bytes of a profile:

- ``lines``: final lines as text + CRLF; optionally the provisional line rewritten in place
  with CR (padded with spaces over the longer text it replaces);
- ``serlcd`` (SparkFun SerLCD/OpenLCD) and ``matrix-orbital`` (Adafruit USB+Serial backpack):
  a character LCD of rows × cols showing the newest rows; only rows that changed are
  rewritten, at a cursor position;
- ``encoder``: the real-time roll-up mode that EEG/Ai-Media, Evertz, Link and Ultech
  encoders share: Ctrl-C, then ``Ctrl-A 2 <channel> <rows> b<base> word`` + CR, then final
  text only, mapped to the CEA-608 character set, paced to ``chars_per_second``; Ctrl-C again
  after ``idle_release`` without captions and at stop, so upstream captions are not blocked.

A vanished device (a USB adapter pulled out, the encoder closing the connection) is
OutputUnavailable: the worker reopens it with backoff and the status shows it.
"""

from __future__ import annotations

import contextlib
import socket
import time
import unicodedata
from typing import Protocol

import serial

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import SerialConfig
from edgecap.daemon.status import StatusSnapshot
from edgecap.outputs.base import OutputEvent, OutputUnavailable
from edgecap.outputs.rollup import CaptionLines, layout

CTRL_A, CTRL_C, CR, LF = b"\x01", b"\x03", b"\r", b"\n"

# CEA-608 basic characters that differ from ASCII: where 608 puts these letters, and the
# ASCII characters that cannot be sent as themselves (they would show as the letters).
CEA608_LETTERS = {"á": 0x2A, "é": 0x5C, "í": 0x5E, "ó": 0x5F, "ú": 0x60, "ç": 0x7B, "÷": 0x7C,
                  "Ñ": 0x7D, "ñ": 0x7E}  # fmt: skip
CEA608_REPLACE = {"*": "", "\\": "/", "^": "", "_": " ", "`": "'", "{": "(", "}": ")", "|": "/",
                  "~": "-", "’": "'", "‘": "'", "“": '"', "”": '"', "–": "-", "—": "-",
                  "…": "...", "«": '"', "»": '"', "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe",
                  "\u00a0": " "}  # fmt: skip


def to_cea608(text: str, uppercase: bool = False) -> tuple[bytes, int]:
    """Text → bytes an encoder shows as that text in real-time mode; (bytes, dropped)."""
    out = bytearray()
    dropped = 0
    if uppercase:
        text = text.upper()
    for ch in text:
        if ch in CEA608_LETTERS:
            out.append(CEA608_LETTERS[ch])
            continue
        ch = CEA608_REPLACE.get(ch, ch)
        for c in ch:
            if 0x20 <= ord(c) < 0x7F:
                out.append(ord(c))
                continue
            base = unicodedata.normalize("NFKD", c)
            ascii_base = "".join(b for b in base if 0x20 <= ord(b) < 0x7F)
            if ascii_base and unicodedata.category(c).startswith("L"):
                out += CEA608_REPLACE.get(ascii_base, ascii_base).encode()
            else:
                dropped += 1  # another script: an encoder cannot show it
    return bytes(out), dropped


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class SerialTransport:
    def __init__(self, cfg: SerialConfig) -> None:
        try:
            self.port = serial.Serial(
                str(cfg.device),
                baudrate=cfg.baud,
                bytesize=serial.SEVENBITS if cfg.data_bits == 7 else serial.EIGHTBITS,
                parity={
                    "none": serial.PARITY_NONE,
                    "even": serial.PARITY_EVEN,
                    "odd": serial.PARITY_ODD,
                }[cfg.parity],
                stopbits=serial.STOPBITS_TWO if cfg.stop_bits == 2 else serial.STOPBITS_ONE,
                timeout=0,
                write_timeout=5,
            )
        except (serial.SerialException, OSError) as exc:
            raise OutputUnavailable(f"no serial device at {cfg.device}: {exc}") from None

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as exc:
            raise OutputUnavailable(f"serial device gone: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.port.close()


class TcpTransport:
    def __init__(self, cfg: SerialConfig) -> None:
        try:
            self.sock = socket.create_connection((cfg.host, cfg.port), timeout=5)
        except OSError as exc:
            raise OutputUnavailable(f"cannot reach {cfg.host}:{cfg.port}: {exc}") from None
        self.sock.settimeout(5)
        self.where = f"{cfg.host}:{cfg.port}"

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise OutputUnavailable(f"connection to {self.where} lost: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class SerialOutput:
    name = "serial"
    idle_interval = 0.05

    def __init__(self, cfg: SerialConfig, *, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self.cfg = cfg
        self.clock = clock
        self._transport: Transport | None = None
        self._captions = CaptionLines(keep=max(8, cfg.rows * 2))
        self._lcd_rows: list[str] = []
        self._provisional_len = 0
        self._sent_seq: set[int] = set()
        self._pending = bytearray()  # encoder: text waiting for its pace
        self._tokens = 0.0
        self._tokens_at = 0.0
        self._realtime = False  # encoder: in real-time mode
        self._last_caption = 0.0
        self.dropped_chars = 0
        self.bytes_written = 0

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        cfg = self.cfg
        self._transport = TcpTransport(cfg) if cfg.transport == "tcp" else SerialTransport(cfg)
        self._lcd_rows = []
        self._provisional_len = 0
        self._realtime = False
        if cfg.profile == "serlcd":
            self._write(b"\x7c\x2d")  # clear
        elif cfg.profile == "matrix-orbital":
            self._write(b"\xfe\x58")  # clear
        elif cfg.profile == "encoder":
            self._write(CTRL_C)  # end whatever state the port was left in

    def handle(self, event: OutputEvent) -> None:
        if not isinstance(event, CaptionLine):
            if isinstance(event, (AudioLoss, StatusSnapshot)):
                return  # displays show captions only; losses are in the status elsewhere
            return
        profile = self.cfg.profile
        if profile == "lines":
            self._lines(event)
        elif profile in ("serlcd", "matrix-orbital"):
            if self._captions.apply(event):
                self._lcd()
        else:
            self._encoder(event)
        self.idle(self.clock())

    def idle(self, now: float) -> None:
        if self.cfg.profile != "encoder":
            return
        rate = self.cfg.chars_per_second
        self._tokens = min(float(rate) / 10, self._tokens + (now - self._tokens_at) * rate)
        self._tokens = max(self._tokens, 0.0)
        self._tokens_at = now
        if self._pending:
            n = min(len(self._pending), int(self._tokens))
            if n > 0:
                chunk = bytes(self._pending[:n])
                del self._pending[:n]
                self._tokens -= n
                self._write(chunk)
        elif self._realtime and now - self._last_caption > self.cfg.idle_release:
            self._write(CTRL_C)  # let upstream captions through while nobody speaks
            self._realtime = False

    def close(self) -> None:
        if self._transport is None:
            return
        with contextlib.suppress(OutputUnavailable):
            if self.cfg.profile == "encoder":
                if self._pending:
                    self._write(bytes(self._pending))
                    self._pending.clear()
                self._write(CTRL_C)
            elif self.cfg.profile == "serlcd":
                self._write(b"\x7c\x2d")
            elif self.cfg.profile == "matrix-orbital":
                self._write(b"\xfe\x58")
        self._transport.close()
        self._transport = None

    # --- profiles ---------------------------------------------------------------------
    def _text_of(self, line: CaptionLine) -> str:
        return line.translation if self.cfg.show == "translation" else line.text

    def _lines(self, line: CaptionLine) -> None:
        text = self._text_of(line)
        ready = line.done if self.cfg.show == "translation" else line.final
        if ready:
            if line.seq in self._sent_seq or not text:
                return
            self._mark_sent(line.seq)
            pad = " " * max(0, self._provisional_len - len(text))
            lead = CR if self._provisional_len else b""
            self._provisional_len = 0
            self._write(lead + (text + pad).encode("utf-8", "replace") + CR + LF)
        elif self.cfg.provisional and text and not line.final:
            pad = " " * max(0, self._provisional_len - len(text))
            self._write(CR + (text + pad).encode("utf-8", "replace"))
            self._provisional_len = len(text)

    def _lcd(self) -> None:
        cfg = self.cfg
        show = "translation" if cfg.show == "translation" else "original"
        rows = layout(self._captions.lines(), cfg.rows, cfg.cols, show, measure=len)
        texts = [""] * (cfg.rows - len(rows)) + [r.text for r in rows]
        texts = [t.encode("ascii", "replace").decode()[: cfg.cols].ljust(cfg.cols) for t in texts]
        for row, text in enumerate(texts):
            if row < len(self._lcd_rows) and self._lcd_rows[row] == text:
                continue
            self._write(self._cursor(row) + text.encode("ascii"))
        self._lcd_rows = texts

    def _cursor(self, row: int) -> bytes:
        if self.cfg.profile == "matrix-orbital":
            return bytes([0xFE, 0x47, 1, row + 1])  # column, row: 1-based
        offsets = [0x00, 0x40, self.cfg.cols, 0x40 + self.cfg.cols]  # HD44780 DDRAM
        return bytes([0xFE, 0x80 | offsets[row]])

    def _encoder(self, line: CaptionLine) -> None:
        text = self._text_of(line)
        ready = line.done if self.cfg.show == "translation" else line.final
        if not ready or line.seq in self._sent_seq or not text:
            return  # finals only: revising text on air costs bandwidth and shows
        self._mark_sent(line.seq)
        data, dropped = to_cea608(text, self.cfg.uppercase)
        self.dropped_chars += dropped
        if not data.strip():
            return
        if not self._realtime:
            cfg = self.cfg
            setup = f"2 {cfg.channel} {cfg.roll_rows} b{cfg.base_row} word".encode()
            self._write(CTRL_C + CTRL_A + setup + CR)
            self._realtime = True
            self._tokens_at = self.clock()
        self._pending += data + CR
        self._last_caption = self.clock()
        if len(self._pending) > 64 * 1024:  # an encoder far behind: keep the newest text
            del self._pending[: len(self._pending) - 64 * 1024]

    def _mark_sent(self, seq: int) -> None:
        self._sent_seq.add(seq)
        if len(self._sent_seq) > 2000:  # bounded: lines far back never come again
            newest = max(self._sent_seq)
            self._sent_seq = {s for s in self._sent_seq if s > newest - 1000}

    def _write(self, data: bytes) -> None:
        if self._transport is None:
            raise OutputUnavailable("not open")
        self._transport.write(data)
        self.bytes_written += len(data)


def list_serial_ports() -> list[tuple[str, str]]:
    """(device, description) of every serial port pyserial finds (for `edgecap devices`)."""
    from serial.tools import list_ports

    return sorted((p.device, p.description or "") for p in list_ports.comports())
