"""A strict fake of a *stateful* speech service: turns, required replies, no "finished".

Soniox is one endless stream that says when it is done. Azure Speech and Sarvam are not:
Azure wants a fresh request id and a header per utterance and a ``telemetry`` reply after
every ``turn.end``; Sarvam never says it has finished. This service has all of that at once
(and two translations and spoken audio per turn), so the link is proven general before a
real one of them is written on it. The wire (``STATEFUL_PROTOCOL``, made up for the tests):

Handshake ``wss://127.0.0.1:PORT/v1/listen`` with ``X-Api-Key: <key>`` (HTTP 401 if wrong or
missing, 404 for another path).

Client → server (anything else, or anything out of order, is a *violation*: the server
sends ``{"type": "error", "code": "protocol", …}`` and closes with 1008):

- TEXT ``{"type": "session.start", "sample_rate": 16000, "targets": [..], "voice": ".."}``
  first; answered ``{"type": "session.ready", "session": id}``.
- TEXT ``{"type": "turn.start", "turn": "<32 hex>"}``: a turn id never seen before (by
  this server, on any connection) while no turn is open; answered ``turn.started``.
- BINARY audio: 2-byte big-endian header length, ASCII header ``turn=<id>``, then s16le PCM
  (whole samples, not empty) — only for the open turn.
- TEXT ``{"type": "turn.end", "turn": id}``: the open turn ends.
- TEXT ``{"type": "telemetry", "turn": id, "received": n}``: REQUIRED within
  ``telemetry_timeout`` after the server's ``turn.end`` of that turn, once; ``n`` is the
  number of messages the server sent for that turn (all of them, ``turn.end`` included).
- There is no end-of-stream message: the client closes (1000) when it is done.

Server → client, per turn (``words``: ``[{"text", "start_ms", "end_ms"}]``, times in ms
from the start of the *turn's* audio):

- after every audio message: ``{"type": "final", "turn", "words", "final_ms",
  "translations": {lang: text}}`` when recognition became final further (words whose end
  lies ``lag_ms`` behind the turn's audio), then always ``{"type": "partial", "turn",
  "words", "translations"}`` (the current non-final words; replaces the previous partial);
- at the turn's end: the last ``final`` (``final_ms`` = all its audio), the spoken
  translation into ``voice`` as BINARY chunks (header ``turn=<id>;lang=<l>;seq=<k>``) and
  ``{"type": "synthesis.end", "turn", "language", "chunks"}``, then ``{"type": "turn.end",
  "turn"}``.
- never a "finished": after the last turn the server says nothing more, and closes when
  the client does.

Recognition is a pure function of the audio (``tests.emulators.soniox.word_for_unit`` on
each 20 ms unit counted from the turn's first byte), so tests predict every word; a
translation of word ``" wXYZ"`` into ``de`` is ``" deXYZ"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Unpack

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.sync.server import ServerConnection

from .server import (
    ConnectionOver,
    EmulatorServer,
    ServerOptions,
    SessionRecord,
    SessionRunner,
)
from .soniox import BYTES_PER_MS, UNIT_MS, expected_word_units

PATH = "/v1/listen"
SAMPLE_RATE = 16000
SYNTH_CHUNKS = 3
SYNTH_CHUNK_BYTES = 320
SYNTH_FORMAT = "audio/L16;rate=16000"
CLOSE_PROTOCOL = 1008


def translation_of(word: str, language: str) -> str:
    """The emulator's translation of one recognized word: ``" wXYZ"`` → ``" deXYZ"``."""
    return f" {language}{word.removeprefix(' w')}"


# A turn is recognized like a Soniox session: from its first byte, unit by unit.
turn_words = expected_word_units


def synthesized_chunks(turn: str, text: str) -> list[bytes]:
    """The spoken translation the server sends for a turn (deterministic bytes)."""
    data = hashlib.shake_256(f"{turn}|{text}".encode()).digest(SYNTH_CHUNKS * SYNTH_CHUNK_BYTES)
    return [data[i : i + SYNTH_CHUNK_BYTES] for i in range(0, len(data), SYNTH_CHUNK_BYTES)]


def frame(header: str, payload: bytes) -> bytes:
    """A binary message: 2-byte big-endian header length, ASCII header, payload."""
    head = header.encode("ascii")
    return struct.pack(">H", len(head)) + head + payload


def unframe(message: bytes) -> tuple[dict[str, str], bytes]:
    """(header fields, payload) of a binary message; ValueError if it is not one."""
    if len(message) < 2:
        raise ValueError("binary message shorter than its header length")
    (size,) = struct.unpack(">H", message[:2])
    if len(message) < 2 + size:
        raise ValueError("binary message shorter than its header")
    head = message[2 : 2 + size].decode("ascii")
    fields: dict[str, str] = {}
    for part in head.split(";"):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ValueError(f"bad header field {part!r}")
        fields[name] = value
    return fields, message[2 + size :]


@dataclass(eq=False)
class Turn:
    """One turn as the server saw it."""

    id: str
    audio: bytearray = field(default_factory=bytearray)
    final_ms: int = 0
    finals: list[str] = field(default_factory=list)  # words sent final, in order
    ended: bool = False  # the client ended it
    sent: int = 0  # messages the server sent for it
    turn_end_at: float | None = None  # when the server sent its turn.end
    telemetry: int | None = None  # the count the client's telemetry named

    @property
    def audio_ms(self) -> int:
        return len(self.audio) // BYTES_PER_MS


@dataclass(eq=False, kw_only=True)
class Session(SessionRecord):
    """One accepted connection (besides :class:`~tests.emulators.server.SessionRecord`'s
    records). Mutated under the emulator's lock before the matching bytes go on the wire."""

    config: dict[str, Any] | None = None
    turns: list[Turn] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)  # all audio of the session, in order
    synthesized: list[tuple[str, str, bytes, bool]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def audio_ms(self) -> int:
        return len(self.audio) // BYTES_PER_MS

    def turn_ends(self) -> int:
        return sum(1 for t in self.turns if t.turn_end_at is not None)

    def acknowledged(self) -> int:
        return sum(1 for t in self.turns if t.telemetry is not None)


class StatefulEmulator(EmulatorServer[Session]):
    """The TLS WebSocket server (see the module docstring; serving, records and
    :meth:`close` are :class:`~tests.emulators.server.EmulatorServer`'s)."""

    path = PATH
    label = "stateful"

    def __init__(
        self,
        tmp_dir: str | Path,
        *,
        lag_ms: int = 300,
        telemetry_timeout: float = 2.0,
        **options: Unpack[ServerOptions],
    ) -> None:
        self.lag_ms = lag_ms
        self.telemetry_timeout = telemetry_timeout
        self._turn_ids: set[str] = set()
        super().__init__(tmp_dir, **options)

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        if request.headers.get_all("X-Api-Key") != [self.api_key]:
            return 401, "Unauthorized\n"
        return None

    def _new_session(self, index: int, request: Request) -> Session:
        return Session(index=index, headers=list(request.headers.raw_items()))

    def _serve_session(self, conn: ServerConnection, session: Session) -> None:
        _Runner(self, conn, session).run()

    def _fresh(self, turn_id: str) -> bool:
        """True (and remembered) if no connection ever used ``turn_id``."""
        with self._cond:
            if turn_id in self._turn_ids:
                return False
            self._turn_ids.add(turn_id)
            return True


class _Runner(SessionRunner[StatefulEmulator, Session]):
    """The protocol of one connection, in the library's handler thread."""

    def __init__(self, emu: StatefulEmulator, conn: ServerConnection, session: Session) -> None:
        super().__init__(emu, conn, session)
        self.open: Turn | None = None
        self.targets: list[str] = []
        self.voice: str | None = None

    def _converse(self) -> None:
        self._start(self._receive())
        while True:
            self._step(self._receive())

    def _client_closed(self, exc: ConnectionClosed) -> None:
        if exc.rcvd is not None:
            # a client that says goodbye must have sent every reply it owed
            self._check_telemetry(time.monotonic(), closing=True)

    # -- receiving ----------------------------------------------------------------------

    def _tick(self, now: float) -> float:
        self._check_telemetry(now)
        return self.emu.poll_interval

    def _check_telemetry(self, now: float, closing: bool = False) -> None:
        for turn in self.session.turns:
            if turn.turn_end_at is None or turn.telemetry is not None:
                continue
            what = f"no telemetry for turn {turn.id} after its turn.end"
            if closing:
                with self._update():
                    self.session.violations.append(what)
            elif now - turn.turn_end_at > self.emu.telemetry_timeout:
                self._violation(what)

    def _start(self, message: str | bytes) -> None:
        data = self._json(message)
        if data.get("type") != "session.start":
            self._violation("the first message must be session.start")
        targets, voice = data.get("targets"), data.get("voice")
        if (
            data.get("sample_rate") != SAMPLE_RATE
            or not isinstance(targets, list)
            or not all(isinstance(t, str) and t for t in targets)
            or not (voice is None or voice in targets)
            or set(data) - {"type", "sample_rate", "targets", "voice"}
        ):
            self._violation(f"bad session.start: {message!r}")
        self.targets, self.voice = targets, voice
        with self._update():
            self.session.config = data
        self._send({"type": "session.ready", "session": uuid.uuid4().hex})

    def _step(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self._audio(message)
            return
        data = self._json(message)
        kind = data.get("type")
        turn_id = data.get("turn")
        if kind == "turn.start" and set(data) == {"type", "turn"}:
            self._turn_start(turn_id)
        elif kind == "turn.end" and set(data) == {"type", "turn"}:
            turn = self.open
            if turn is None or turn_id != turn.id:
                self._violation(f"turn.end for {turn_id!r}, which is not the open turn")
            self._turn_end(turn)
        elif kind == "telemetry" and set(data) == {"type", "turn", "received"}:
            self._telemetry(turn_id, data["received"])
        else:
            self._violation(f"unexpected message {message[:200]!r}")

    def _turn_start(self, turn_id: object) -> None:
        if self.open is not None:
            self._violation(f"turn.start while turn {self.open.id} is open")
        if not (
            isinstance(turn_id, str)
            and len(turn_id) == 32
            and all(c in "0123456789abcdef" for c in turn_id)
        ):
            self._violation(f"turn id {turn_id!r} is not 32 lowercase hex digits")
        if not self.emu._fresh(turn_id):
            self._violation(f"turn id {turn_id} was used before")
        turn = Turn(turn_id)
        with self._update():
            self.session.turns.append(turn)
        self.open = turn
        self._send({"type": "turn.started", "turn": turn_id}, turn)

    def _audio(self, message: bytes) -> None:
        try:
            fields, pcm = unframe(message)
        except ValueError as exc:
            self._violation(f"bad audio message: {exc}")
        turn_id = fields.get("turn")
        if self.open is None or turn_id != self.open.id or set(fields) != {"turn"}:
            self._violation(f"audio for turn {turn_id!r}, which is not open")
        if not pcm or len(pcm) % 2:
            self._violation(f"audio of {len(pcm)} bytes (not whole samples, or empty)")
        turn = self.open
        with self._update():
            turn.audio += pcm
            self.session.audio += pcm
        lagged = max(0, turn.audio_ms - self.emu.lag_ms) // UNIT_MS * UNIT_MS
        if lagged > turn.final_ms:
            self._final(turn, lagged)
        pending = [w for w in self._words(turn) if w[0] >= len(turn.finals)]
        self._send(
            {
                "type": "partial",
                "turn": turn.id,
                "words": [self._word(unit, word) for _, unit, word in pending],
                "translations": self._translations([word for _, _, word in pending]),
            },
            turn,
        )

    def _turn_end(self, turn: Turn) -> None:
        self.open = None
        with self._update():
            turn.ended = True
        self._final(turn, turn.audio_ms)
        if self.voice is not None:
            text = "".join(translation_of(w, self.voice) for w in turn.finals)
            chunks = synthesized_chunks(turn.id, text)
            for seq, chunk in enumerate(chunks):
                with self._update():
                    self.session.synthesized.append((turn.id, self.voice, chunk, False))
                self._send_binary(frame(f"turn={turn.id};lang={self.voice};seq={seq}", chunk), turn)
            with self._update():
                self.session.synthesized.append((turn.id, self.voice, b"", True))
            self._send(
                {
                    "type": "synthesis.end",
                    "turn": turn.id,
                    "language": self.voice,
                    "chunks": len(chunks),
                },
                turn,
            )
        with self._update():
            turn.turn_end_at = time.monotonic()
        self._send({"type": "turn.end", "turn": turn.id}, turn)

    def _telemetry(self, turn_id: object, received: object) -> None:
        turn = next((t for t in self.session.turns if t.id == turn_id), None)
        if turn is None or turn.turn_end_at is None:
            self._violation(f"telemetry for {turn_id!r}, which has not ended")
        if turn.telemetry is not None:
            self._violation(f"a second telemetry for turn {turn.id}")
        if received != turn.sent:
            self._violation(f"telemetry of turn {turn.id} counts {received!r}, not {turn.sent}")
        with self._update():
            turn.telemetry = turn.sent

    # -- results ------------------------------------------------------------------------

    def _words(self, turn: Turn) -> list[tuple[int, int, str]]:
        """(index, unit, word) of every word of the turn's audio so far."""
        return [(i, unit, word) for i, (unit, word) in enumerate(turn_words(bytes(turn.audio)))]

    def _final(self, turn: Turn, final_ms: int) -> None:
        new = [
            (unit, word)
            for i, unit, word in self._words(turn)
            if i >= len(turn.finals) and (unit + 1) * UNIT_MS <= final_ms
        ]
        with self._update():
            turn.final_ms = final_ms
            turn.finals += [word for _, word in new]
        self._send(
            {
                "type": "final",
                "turn": turn.id,
                "words": [self._word(unit, word) for unit, word in new],
                "final_ms": final_ms,
                "translations": self._translations([word for _, word in new]),
            },
            turn,
        )

    @staticmethod
    def _word(unit: int, word: str) -> dict[str, Any]:
        return {"text": word, "start_ms": unit * UNIT_MS, "end_ms": (unit + 1) * UNIT_MS}

    def _translations(self, words: list[str]) -> dict[str, str]:
        return {lang: "".join(translation_of(w, lang) for w in words) for lang in self.targets}

    # -- sending and closing ------------------------------------------------------------

    def _send(self, message: dict[str, Any], turn: Turn | None = None) -> None:
        if turn is not None:
            with self._update():
                turn.sent += 1
        self.conn.send(json.dumps(message))

    def _send_binary(self, message: bytes, turn: Turn) -> None:
        with self._update():
            turn.sent += 1
        self.conn.send(message)

    def _json(self, message: str | bytes) -> dict[str, Any]:
        if isinstance(message, bytes):
            self._violation("a binary message where a text one was due")
        try:
            data = json.loads(message)
        except ValueError:
            self._violation(f"not JSON: {message[:200]!r}")
        if not isinstance(data, dict):
            self._violation("not a JSON object")
        return data

    def _violation(self, what: str) -> NoReturn:
        with self._update():
            self.session.violations.append(what)
        with contextlib.suppress(ConnectionClosed):
            self.conn.send(json.dumps({"type": "error", "code": "protocol", "message": what}))
            self._close(CLOSE_PROTOCOL, what[:100])
        raise ConnectionOver
