"""A strict, local emulator of the Azure Speech WebSocket protocol ("USP", PROTOCOLS.md §3a).

Usage::

    with AzureEmulator(tmp_path, api_key="k", idle_timeout=5.0) as emu:
        ws = websocket.create_connection(
            emu.url_for("conversation", language="en-US"),
            header=["Ocp-Apim-Subscription-Key: k", f"X-ConnectionId: {uuid4().hex}"],
            sslopt={"ca_certs": emu.ca_file}, suppress_origin=True)
        ...

It refuses what the service refuses, with the codes of §3a:

* at the upgrade: a path other than the recognition (``interactive``, ``conversation``,
  ``dictation``) and translation (v1) paths → 404; no key or a wrong one
  (``Ocp-Apim-Subscription-Key`` header or query), or an ``Authorization: Bearer`` token
  it did not issue, revoked or expired → 401 (``api_key=None``: a container on the LAN,
  which takes no key and refuses no one);
  a missing or malformed ``X-ConnectionId`` or a bad query (``language`` for recognition,
  ``from`` and at least one ``to`` for translation, ``format``, ``profanity``) → 400.
  ``USP`` is echoed when the client asks for it (the native SDK does; nothing requires it);
* on the connection, close 1002 (protocol error): a text message without ``Path`` or
  ``X-Timestamp``, or without ``X-RequestId`` (32 lowercase hex) where the SDK sends one
  (every message but ``speech.config``), ``speech.config`` not first or sent twice, an
  unknown path, an ``X-RequestId`` of an ended turn (reuse, or audio after its end), a new
  turn while one is open, telemetry for a turn that never started, a second telemetry for
  a turn still open or any for one ended and not yet answered with ``turn.end`` (one for the
  open turn is taken: the native SDK sends its Metrics about a minute into a long turn), no
  telemetry within ``telemetry_timeout`` of a ``turn.end``;
* close 1007 (invalid payload): a text body that is not JSON, a binary message whose
  2-byte big-endian header length or header block is wrong (or not ``Path: audio``), a
  turn whose first audio does not start with a RIFF/WAVE header for 16 kHz mono s16le, an
  audio body over 8192 B or of odd PCM length.

Every violation is recorded in ``Session.violations`` before the close goes out.

"Recognition" is the Soniox emulator's pure function of the audio (:func:`turn_words`:
20 ms units counted from the turn's first PCM byte, ``word_for_unit``), so a test knows
every word: ``turn.start`` when the turn's first audio arrives; ``speech.startDetected``
at the first word; a ``speech.hypothesis`` (``translation.hypothesis``) with all the turn's
words so far after each new word; on the empty audio message: ``speech.endDetected``,
``speech.phrase`` (simple or ``format=detailed``; ``NoMatch`` without words) or
``translation.phrase`` with one entry per ``to`` language (:func:`translation_of`), then
with ``features=texttospeech`` the synthesis (:func:`synthesis_audio` of the first target
language in binary ``translation.synthesis`` chunks, then ``translation.synthesis.end``),
then ``turn.end``. Times are 100 ns ticks from the start of the turn's audio.

Phrases at pauses (``segment_silence_ms``, off by default): as the service segments one
turn of continuous recognition into phrases at the speaker's pauses, a 20 ms unit quieter
than ``silence_dbfs`` then holds no word, and once the turn's words are followed by
``segment_silence_ms`` of such units a phrase ends there: ``speech.phrase`` (or
``translation.phrase``, and its synthesis) of the words since the previous phrase; the
hypotheses carry only those. The turn's end sends the phrase of what is left (``NoMatch``
only for a turn without a word). An ungated client streaming a whole talk as one turn then
gets what it would from the service, not one phrase growing for the whole talk.

Limits: the connection is closed (``limit_close_code``, 1000 by default) ``connection_limit``
seconds after it opened and after ``idle_timeout`` seconds without a message from the
client. Faults are queued with :meth:`AzureEmulator.plan` (:class:`SessionPlan`).

Tokens: ``POST /sts/v1.0/issueToken`` (empty body) on the same server, as the region's
token endpoint: with the right ``Ocp-Apim-Subscription-Key`` header it answers 200 and a
fresh opaque token, valid for ``token_lifetime`` seconds (600, as the service's); 401
without it; 405 for another method; 404 on a container (``api_key=None``). Token requests
are not upgrades (``connections`` does not count them). Every fetch is recorded
(:attr:`token_fetches`), every token issued (:attr:`issued_tokens`); :meth:`revoke_tokens`
makes the upgrade refuse all issued so far; :meth:`plan_token` (:class:`TokenPlan`) queues
another status, and the body's framing (Content-Length, chunked, or up to the connection's
end).
"""

from __future__ import annotations

import email.utils
import hashlib
import http
import json
import re
import secrets
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, Unpack
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from .server import EmulatorServer, ServerOptions, SessionRecord, SessionRunner
from .soniox import BYTES_PER_MS, UNIT_BYTES, word_for_unit

RECOGNITION_MODES = ("interactive", "conversation", "dictation")
RECOGNITION_PATH = "/speech/recognition/{mode}/cognitiveservices/v1"
TRANSLATION_PATH = "/speech/translation/cognitiveservices/v1"
PATHS = {RECOGNITION_PATH.format(mode=m): m for m in RECOGNITION_MODES} | {
    TRANSLATION_PATH: "translation"
}
TOKEN_PATH = "/sts/v1.0/issueToken"
TICKS_PER_MS = 10_000
UNIT_MS = UNIT_BYTES // BYTES_PER_MS
MAX_AUDIO_BODY = 8192
MAX_HEADER_BLOCK = 8192
RIFF_HEADER_BYTES = 44
CONFIDENCE = 0.9
SYNTHESIS_BYTES_PER_WORD = 3200
PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007

_HEX32 = re.compile(r"[0-9a-f]{32}")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


# -----------------------------------------------------------------------------------------
# What a test can predict


def turn_words(pcm: bytes) -> list[tuple[int, str]]:
    """(unit index, word) for every word a turn whose PCM is exactly ``pcm`` yields."""
    out = []
    for k in range(len(pcm) // UNIT_BYTES):
        word = word_for_unit(pcm[k * UNIT_BYTES : (k + 1) * UNIT_BYTES])
        if word is not None:
            out.append((k, word))
    return out


def text_of(words: list[str]) -> str:
    """The recognized text of a list of words (``" w<hex>"`` each)."""
    return "".join(words).strip()


def translation_of(word: str, language: str) -> str:
    """A word's translation into ``language``: ``" w<hex>"`` -> ``" <language>_<hex>"``."""
    return f" {language}_{word.removeprefix(' w')}"


def riff_header(sample_rate: int = 16000, channels: int = 1, bits: int = 16) -> bytes:
    """The 44-byte WAV header the SDK sends first in a turn (RIFF and data sizes 0)."""
    align = channels * bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", 0)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * align, align, bits)
        + b"data"
        + struct.pack("<I", 0)
    )


def synthesis_audio(words: list[str], language: str) -> bytes:
    """The WAV file (header and PCM) the emulator synthesizes for a turn's translation."""
    pcm = bytearray()
    for word in words:
        seed = hashlib.sha256(translation_of(word, language).encode()).digest()
        pcm += (seed * (SYNTHESIS_BYTES_PER_WORD // len(seed) + 1))[:SYNTHESIS_BYTES_PER_WORD]
    header = bytearray(riff_header())
    struct.pack_into("<I", header, 4, 36 + len(pcm))
    struct.pack_into("<I", header, 40, len(pcm))
    return bytes(header) + bytes(pcm)


def _riff_problem(data: bytes) -> str | None:
    if len(data) < RIFF_HEADER_BYTES or data[:4] != b"RIFF" or data[8:16] != b"WAVEfmt ":
        return "the first audio message of a turn must start with a RIFF/WAVE header"
    _, fmt, channels, rate, _, _, bits = struct.unpack_from("<IHHIIHH", data, 16)
    if (fmt, channels, rate, bits) != (1, 1, 16000, 16) or data[36:40] != b"data":
        return "the RIFF header must describe 16 kHz mono 16-bit PCM"
    return None


def _timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_headers(block: str) -> dict[str, str] | None:
    """Header lines ``Name:value`` / ``Name: value`` (names lowercased), or None if one
    line has no colon."""
    headers: dict[str, str] = {}
    for line in block.split("\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            return None
        headers[name.strip().lower()] = value.strip()
    return headers


# -----------------------------------------------------------------------------------------
# Records and plans


@dataclass(frozen=True)
class SessionPlan:
    """A fault for one future connection (queued with :meth:`AzureEmulator.plan`).

    ``refuse``: refuse the upgrade with that HTTP status (401 = a key the service no longer
    takes). ``drop_after_ms``: abort the TCP connection (RST) once that much PCM was
    received on the connection. ``close_after_ms``: close with ``close_code`` and
    ``close_reason`` then. ``status_error``: answer the first turn's end with a
    ``speech.phrase`` of ``RecognitionStatus: Error`` and close with 1000, as the service
    did in ``azure_status_error.jsonl``.
    """

    refuse: int | None = None
    drop_after_ms: int | None = None
    close_after_ms: int | None = None
    close_code: int = 1011
    close_reason: str = "Internal server error"
    status_error: bool = False


Framing = Literal["length", "chunked", "close"]


@dataclass(frozen=True)
class TokenPlan:
    """The answer to one future token request (queued with :meth:`AzureEmulator.plan_token`).

    ``status``: answer with it instead of checking the key (200 still issues a token).
    ``framing``: how the body is delimited — ``Content-Length``, ``Transfer-Encoding:
    chunked`` (in several chunks, one with an extension), or the end of the connection."""

    status: int = 200
    framing: Framing = "length"


@dataclass(frozen=True)
class TokenFetch:
    """One request to the token endpoint: when (monotonic), its method and headers, the
    status answered and the token issued (None if none)."""

    at: float
    method: str
    headers: list[tuple[str, str]]
    status: int
    token: str | None


@dataclass(frozen=True)
class Refusal:
    """An upgrade refused for its auth: why ("no_auth", "wrong_key", "unknown_token",
    "revoked_token", "expired_token") and the bearer token shown, if any."""

    why: str
    token: str | None = None


@dataclass(eq=False, kw_only=True)
class Turn:
    """One turn (one ``X-RequestId``): its ``speech.context``, the RIFF header that opened
    its audio, its PCM, the words sent for it, and the telemetry that acknowledged it."""

    request_id: str
    context: dict[str, Any] | None = None
    riff: bytes | None = None
    audio: bytearray = field(default_factory=bytearray)
    words: list[str] = field(default_factory=list)
    units: list[int] = field(default_factory=list)
    ended: bool = False
    turn_end_sent: bool = False
    turn_end_at: float | None = None
    telemetry: dict[str, Any] | None = None
    telemetry_count: int = 0  # telemetry messages for this turn (the SDK may send two)
    telemetry_mid_turn: int = 0  # one before turn.end (SDK 1.53 on a long turn), not an ack
    phrase_start: int = 0  # index in words of the open phrase's first word
    quiet_units: int = 0  # pause units since the last loud one (segment_silence_ms)


@dataclass(eq=False, kw_only=True)
class Session(SessionRecord):
    """What happened on one accepted connection (besides the base record). ``mode`` is
    the recognition mode or "translation"; ``query`` the parsed query string; ``sent``
    the (path, request id, body) of every message sent (binary bodies as byte counts);
    ``violations`` what the client did wrong (one at most: the emulator closes on it);
    ``limit`` is "connection", "idle" or "telemetry" when a limit closed the connection;
    ``fault`` the plan's fault once it fired."""

    mode: str
    query: dict[str, list[str]]
    plan: SessionPlan | None
    subprotocol: str | None = None
    config: dict[str, Any] | None = None
    turns: list[Turn] = field(default_factory=list)
    sent: list[tuple[str, str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    limit: str | None = None
    fault: str | None = None

    @property
    def audio_bytes(self) -> int:
        """PCM bytes received on this connection (RIFF headers excluded)."""
        return sum(len(t.audio) for t in self.turns)


class AzureEmulator(EmulatorServer[Session]):
    """A TLS WebSocket server on 127.0.0.1 that behaves like the Azure Speech service.

    ``api_key`` is the subscription key (None: a container that takes none); ``tokens``
    are bearer tokens it accepts for ever besides those it issues, which are valid for
    ``token_lifetime`` seconds. ``connection_limit`` and ``idle_timeout`` are the
    service's 10-minute and 180-second limits; ``telemetry_timeout`` how long after a
    ``turn.end`` the telemetry may take; ``synthesis_chunk`` the largest synthesis payload;
    ``segment_silence_ms`` and ``silence_dbfs``: phrases end at pauses (module docstring).
    """

    path = TRANSLATION_PATH  # one of several: see _process_request
    label = "azure"

    def __init__(
        self,
        tmp_dir: str | Path,
        *,
        api_key: str | None = "test-key",
        tokens: tuple[str, ...] = (),
        token_lifetime: float = 600.0,
        connection_limit: float = 600.0,
        idle_timeout: float = 180.0,
        telemetry_timeout: float = 5.0,
        limit_close_code: int = 1000,
        synthesis_chunk: int = 3200,
        segment_silence_ms: int | None = None,
        silence_dbfs: float = -45.0,
        max_plans: int = 64,
        **options: Unpack[ServerOptions],
    ) -> None:
        self.keyless = api_key is None
        self.tokens = frozenset(tokens)  # accepted as bearer tokens for ever (not issued)
        self.token_lifetime = token_lifetime
        self._issued: dict[str, float] = {}  # token → when it was issued (monotonic)
        self._revoked: set[str] = set()
        self._token_fetches: list[TokenFetch] = []
        self._token_plans: deque[TokenPlan] = deque()
        self._auth_refusals: list[Refusal] = []
        self.connection_limit = connection_limit
        self.idle_timeout = idle_timeout
        self.telemetry_timeout = telemetry_timeout
        self.limit_close_code = limit_close_code
        self.synthesis_chunk = synthesis_chunk
        self.segment_units = (
            None if segment_silence_ms is None else max(1, segment_silence_ms // UNIT_MS)
        )
        # mean square of a 20 ms unit below which it is a pause (full scale: 32768)
        self.silence_power = (32768 * 10 ** (silence_dbfs / 20)) ** 2
        self._max_plans = max_plans
        self._plans: deque[SessionPlan] = deque()
        self._used_request_ids: set[str] = set()
        super().__init__(tmp_dir, api_key=api_key or "", **options)

    @property
    def base_url(self) -> str:
        """``wss://127.0.0.1:PORT`` (the ``host`` form: the client appends the path)."""
        return f"wss://127.0.0.1:{self.port}"

    def url_for(self, mode: str, **query: str | list[str]) -> str:
        """The URL of a recognition ``mode`` or of "translation", with ``query``."""
        path = TRANSLATION_PATH if mode == "translation" else RECOGNITION_PATH.format(mode=mode)
        return f"{self.base_url}{path}?{urlencode(query, doseq=True)}"

    def plan(self, plan: SessionPlan) -> None:
        """Queue a fault plan for the next upgrade request to a served path (FIFO)."""
        with self._cond:
            if len(self._plans) >= self._max_plans:
                raise RuntimeError("too many queued plans")
            self._plans.append(plan)

    @property
    def token_url(self) -> str:
        """``https://127.0.0.1:PORT/sts/v1.0/issueToken``."""
        return f"https://127.0.0.1:{self.port}{TOKEN_PATH}"

    def plan_token(self, plan: TokenPlan) -> None:
        """Queue the answer to the next token request (FIFO)."""
        with self._cond:
            if len(self._token_plans) >= self._max_plans:
                raise RuntimeError("too many queued token plans")
            self._token_plans.append(plan)

    @property
    def token_fetches(self) -> list[TokenFetch]:
        with self._cond:
            return list(self._token_fetches)

    @property
    def issued_tokens(self) -> list[str]:
        """Every token issued, in order."""
        with self._cond:
            return list(self._issued)

    @property
    def auth_refusals(self) -> list[Refusal]:
        """Upgrades refused for their auth, in order."""
        with self._cond:
            return list(self._auth_refusals)

    def revoke_tokens(self) -> None:
        """From now on the upgrade refuses (401) every token issued so far."""
        with self._cond:
            self._revoked.update(self._issued)

    def bearer_of(self, session: Session) -> str | None:
        """The bearer token a session's upgrade showed, if any."""
        for name, value in session.headers:
            kind, _, token = value.partition(" ")
            if name.lower() == "authorization" and kind.lower() == "bearer":
                return token.strip()
        return None

    # -- the upgrade ----------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        """The base serves one exact target; Azure has several paths, each with a query.
        Same bookkeeping as the base's, with the path compared without its query."""
        if urlsplit(request.path).path == TOKEN_PATH:
            return self._issue_token(conn, request)
        with self._cond:
            self._connections += 1
            self._threads.append(threading.current_thread())
            self._threads.append(conn.recv_events_thread)
            wrong_path = urlsplit(request.path).path not in PATHS
            if wrong_path:
                self._rejected.append(request.path)
            self._cond.notify_all()
        if wrong_path:
            return conn.respond(404, "Not Found\n")
        refusal = self._refusal(request)
        if refusal is not None:
            return conn.respond(*refusal)
        # The native SDK asks for "USP"; echo it then (websockets only echoes what it offers).
        # Offering it to a client that asks for none would fail its handshake.
        offered = ",".join(request.headers.get_all("Sec-WebSocket-Protocol"))
        if "usp" in (name.strip().lower() for name in offered.split(",")):
            conn.protocol.available_subprotocols = ["USP"]  # type: ignore[assignment]
        return None

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        with self._cond:
            if self._plans and self._plans[0].refuse is not None:
                return self._plans.popleft().refuse, "Refused by plan\n"
        split = urlsplit(request.path)
        query = parse_qs(split.query)
        if not self._authorized(request, query):
            return 401, "Unauthorized\n"
        connection_ids = request.headers.get_all("X-ConnectionId") or query.get(
            "X-ConnectionId", []
        )
        if len(connection_ids) != 1 or not _HEX32.fullmatch(connection_ids[0]):
            return 400, "X-ConnectionId must be 32 lowercase hex characters\n"
        problem = _query_problem(PATHS[split.path], query)
        return (400, problem + "\n") if problem else None

    def _authorized(self, request: Request, query: dict[str, list[str]]) -> bool:
        if self.keyless:
            return True  # a container: whatever is sent or not
        keys = request.headers.get_all("Ocp-Apim-Subscription-Key") + query.get(
            "Ocp-Apim-Subscription-Key", []
        )
        bearers = [
            value.partition(" ")[2].strip()
            for value in request.headers.get_all("Authorization")
            if value.partition(" ")[0].lower() == "bearer"
        ]
        refusal = None
        if not keys and not bearers:
            refusal = Refusal("no_auth")
        elif any(k != self.api_key for k in keys):
            refusal = Refusal("wrong_key")
        else:
            refusal = next(filter(None, (self._token_problem(b) for b in bearers)), None)
        if refusal is None:
            return True
        with self._cond:
            self._auth_refusals.append(refusal)
            self._cond.notify_all()
        return False

    def _token_problem(self, token: str) -> Refusal | None:
        if token in self.tokens:
            return None
        with self._cond:
            issued = self._issued.get(token)
            revoked = token in self._revoked
        if issued is None:
            return Refusal("unknown_token", token)
        if revoked:
            return Refusal("revoked_token", token)
        if time.monotonic() - issued >= self.token_lifetime:
            return Refusal("expired_token", token)
        return None

    # -- the token endpoint -----------------------------------------------------------------

    def _issue_token(self, conn: ServerConnection, request: Request) -> Response:
        with self._cond:
            self._threads.append(threading.current_thread())
            self._threads.append(conn.recv_events_thread)
            plan = self._token_plans.popleft() if self._token_plans else None
        framing: Framing = plan.framing if plan is not None else "length"
        keys = request.headers.get_all("Ocp-Apim-Subscription-Key")
        if request.method != "POST":
            status = 405
        elif plan is not None and plan.status != 200:
            status = plan.status
        elif self.keyless:
            status = 404  # a container has no token service
        elif keys != [self.api_key]:
            status = 401
        else:
            status = 200
        token = f"tok-{secrets.token_urlsafe(24)}" if status == 200 else None
        with self._cond:
            if token is not None:
                self._issued[token] = time.monotonic()
            headers = list(request.headers.raw_items())
            fetch = TokenFetch(time.monotonic(), request.method, headers, status, token)
            self._token_fetches.append(fetch)
            self._cond.notify_all()
        body = token.encode() if token is not None else http.HTTPStatus(status).phrase.encode()
        return _http_response(status, body, framing)

    def _new_session(self, index: int, request: Request) -> Session:
        split = urlsplit(request.path)
        return Session(
            index=index,
            headers=list(request.headers.raw_items()),
            mode=PATHS[split.path],
            query=parse_qs(split.query),
            plan=self._plans.popleft() if self._plans else None,
        )

    def _serve_session(self, conn: ServerConnection, session: Session) -> None:
        with self._cond:
            session.subprotocol = conn.subprotocol
        _SessionRunner(self, conn, session).run()


def _http_response(status: int, body: bytes, framing: Framing) -> Response:
    """An HTTP answer whose body is framed as asked (the server closes after it)."""
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", "application/jwt; charset=us-ascii"),
        ]
    )
    if framing == "length":
        headers["Content-Length"] = str(len(body))
    elif framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        third = max(1, len(body) // 3)
        pieces = [body[:third], body[third : 2 * third], body[2 * third :]]
        out = b""
        for n, piece in enumerate(p for p in pieces if p):
            extension = b";note=x" if n == 1 else b""
            out += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
        body = out + b"0\r\nX-Trailer: 1\r\n\r\n"
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def _query_problem(mode: str, query: dict[str, list[str]]) -> str | None:
    if query.get("format", ["simple"]) not in (["simple"], ["detailed"]):
        return "format must be simple or detailed"
    if query.get("profanity", ["masked"])[0] not in ("masked", "removed", "raw"):
        return "profanity must be masked, removed or raw"
    if mode == "translation":
        if len(query.get("from", [])) != 1 or not query.get("to"):
            return "translation needs one from and at least one to language"
    elif len(query.get("language", [])) != 1:
        return "recognition needs one language"
    return None


class _SessionRunner(SessionRunner[AzureEmulator, Session]):
    """Runs USP on one connection in the library's handler thread."""

    def __init__(self, emu: AzureEmulator, conn: ServerConnection, session: Session) -> None:
        super().__init__(emu, conn, session)
        self.opened = time.monotonic()
        self.last_message = self.opened
        self.turn: Turn | None = None
        self.detailed = session.query.get("format") == ["detailed"]
        self.targets = session.query.get("to", [])
        self.synthesize = "texttospeech" in session.query.get("features", [])

    def _converse(self) -> None:
        while True:
            message = self._receive()
            self.last_message = time.monotonic()
            if isinstance(message, bytes):
                self._binary(message)
            else:
                self._text(message)

    def _tick(self, now: float) -> float:
        waits = [self.opened + self.emu.connection_limit - now]
        if waits[0] <= 0:
            self._limit("connection")
        waits.append(self.last_message + self.emu.idle_timeout - now)
        if waits[-1] <= 0:
            self._limit("idle")
        pending = [
            t.turn_end_at for t in self.session.turns if t.turn_end_at and t.telemetry is None
        ]
        if pending:
            waits.append(min(pending) + self.emu.telemetry_timeout - now)
            if waits[-1] <= 0:
                self._violation(PROTOCOL_ERROR, "no telemetry after turn.end")
        return max(min(waits), 0.0)

    # -- client messages ------------------------------------------------------------------

    def _text(self, message: str) -> None:
        block, blank, body = message.partition("\r\n\r\n")
        headers = _parse_headers(block) if blank else None
        if headers is None:
            self._violation(PROTOCOL_ERROR, "a text message needs header lines and a blank line")
        path = self._common_headers(
            headers, needs_request_id=headers.get("path") != "speech.config"
        )
        try:
            parsed = json.loads(body) if body.strip() else {}
        except ValueError:
            self._violation(INVALID_PAYLOAD, f"{path}: the body is not JSON")
        if path == "speech.config":
            if self.session.config is not None or self.session.turns:
                self._violation(PROTOCOL_ERROR, "speech.config must come once, first")
            if "content-type" not in headers:
                self._violation(PROTOCOL_ERROR, "speech.config needs a Content-Type")
            with self._update():
                self.session.config = parsed
            return
        self._needs_config(path)
        request_id = headers["x-requestid"]
        if path == "speech.context":
            turn = self._turn_for(request_id)
            with self._update():
                turn.context = parsed
        elif path == "telemetry":
            if "content-type" not in headers:
                self._violation(PROTOCOL_ERROR, "telemetry needs a Content-Type")
            turn = next((t for t in self.session.turns if t.request_id == request_id), None)
            if turn is None:
                self._violation(PROTOCOL_ERROR, "telemetry for a turn that never started")
            if not turn.turn_end_sent:
                # The native SDK 1.53 sends a Metrics-only telemetry for the open turn about
                # a minute into a long one (seen by bench/sdk_azure.py on an ungated stream):
                # taken, but it does not acknowledge the turn's end.
                if turn.ended or turn.telemetry_mid_turn:
                    self._violation(PROTOCOL_ERROR, "telemetry for a turn that got no turn.end")
                with self._update():
                    turn.telemetry_mid_turn += 1
                return
            # SDK 1.53 may acknowledge a turn in two telemetry messages (Metrics, then
            # ReceivedMessages: azure_stt_push.jsonl); a third is the violation.
            if turn.telemetry_count >= 2:
                self._violation(PROTOCOL_ERROR, "a third telemetry for one turn")
            with self._update():
                turn.telemetry_count += 1
                if turn.telemetry is None:
                    turn.telemetry = parsed
        else:
            self._violation(PROTOCOL_ERROR, f"unknown path {path!r}")

    def _binary(self, message: bytes) -> None:
        if len(message) < 2:
            self._violation(INVALID_PAYLOAD, "a binary message needs a 2-byte header length")
        (size,) = struct.unpack_from(">H", message)
        if size > MAX_HEADER_BLOCK or size + 2 > len(message):
            self._violation(INVALID_PAYLOAD, "the binary header length is out of range")
        try:
            block = message[2 : 2 + size].decode("ascii")
        except UnicodeDecodeError:
            self._violation(INVALID_PAYLOAD, "binary headers must be ASCII")
        headers = _parse_headers(block) if block.endswith("\r\n") else None
        if headers is None:
            self._violation(INVALID_PAYLOAD, "binary header lines must end with CRLF")
        if self._common_headers(headers, needs_request_id=True) != "audio":
            self._violation(INVALID_PAYLOAD, "a binary message from the client must be audio")
        self._needs_config("audio")
        self._audio(self._turn_for(headers["x-requestid"]), message[2 + size :])

    def _common_headers(self, headers: dict[str, str], *, needs_request_id: bool) -> str:
        path = headers.get("path")
        if not path:
            self._violation(PROTOCOL_ERROR, "a message without Path")
        if not _TIMESTAMP.fullmatch(headers.get("x-timestamp", "")):
            self._violation(PROTOCOL_ERROR, f"{path}: X-Timestamp missing or not ISO 8601 UTC")
        if needs_request_id and not _HEX32.fullmatch(headers.get("x-requestid", "")):
            self._violation(PROTOCOL_ERROR, f"{path}: X-RequestId missing or not 32 hex")
        return path

    def _needs_config(self, path: str) -> None:
        if self.session.config is None:
            self._violation(PROTOCOL_ERROR, f"{path} before speech.config")

    def _turn_for(self, request_id: str) -> Turn:
        """The open turn with ``request_id``, or a new one (a reused id is a violation)."""
        if self.turn is not None and self.turn.request_id == request_id:
            if self.turn.ended:
                self._violation(PROTOCOL_ERROR, "a message for an ended turn")
            return self.turn
        with self.emu._cond:
            reused = request_id in self.emu._used_request_ids
            self.emu._used_request_ids.add(request_id)
        if reused:
            self._violation(PROTOCOL_ERROR, f"X-RequestId {request_id} reused")
        if self.turn is not None and not self.turn.ended:
            self._violation(PROTOCOL_ERROR, "a new turn while the previous one is open")
        turn = Turn(request_id=request_id)
        with self._update():
            self.session.turns.append(turn)
        self.turn = turn
        return turn

    def _audio(self, turn: Turn, body: bytes) -> None:
        if len(body) > MAX_AUDIO_BODY + RIFF_HEADER_BYTES:
            self._violation(INVALID_PAYLOAD, "an audio message body over 8192 bytes")
        if turn.riff is None:
            problem = _riff_problem(body)
            if problem:
                self._violation(INVALID_PAYLOAD, problem)
            with self._update():
                turn.riff = body[:RIFF_HEADER_BYTES]
            self._send("turn.start", turn, {"context": {"serviceTag": turn.request_id[::-1]}})
            body = body[RIFF_HEADER_BYTES:]
        elif not body:
            self._end(turn)
            return
        if len(body) % 2:
            self._violation(INVALID_PAYLOAD, "audio must hold whole s16le samples")
        units_before = len(turn.audio) // UNIT_BYTES
        with self._update():
            turn.audio += body
        self._apply_plan()
        segment = self.emu.segment_units
        for k in range(units_before, len(turn.audio) // UNIT_BYTES):
            unit = bytes(turn.audio[k * UNIT_BYTES : (k + 1) * UNIT_BYTES])
            if segment is not None:
                if self._quiet(unit):
                    turn.quiet_units += 1
                    if turn.quiet_units == segment and len(turn.words) > turn.phrase_start:
                        self._phrase(turn, k + 1 - segment)
                    continue
                turn.quiet_units = 0
            word = word_for_unit(unit)
            if word is None:
                continue
            if not turn.words:
                self._send("speech.startDetected", turn, {"Offset": self._ticks(k)})
            with self._update():
                turn.words.append(word)
                turn.units.append(k)
            self._hypothesis(turn, k)

    def _quiet(self, unit: bytes) -> bool:
        samples = memoryview(unit).cast("h")
        return sum(x * x for x in samples) / len(samples) < self.emu.silence_power

    # -- answers --------------------------------------------------------------------------

    @staticmethod
    def _ticks(unit: int) -> int:
        return unit * UNIT_BYTES // BYTES_PER_MS * TICKS_PER_MS

    def _hypothesis(self, turn: Turn, last_unit: int) -> None:
        words = turn.words[turn.phrase_start :]
        start = self._first_word_ticks(turn)
        body: dict[str, Any] = {
            "Text": text_of(words),
            "Offset": start,
            "Duration": self._ticks(last_unit + 1) - start,
        }
        if self.session.mode == "translation":
            body["Translation"] = self._translations(words)
            self._send("translation.hypothesis", turn, body)
        else:
            self._send("speech.hypothesis", turn, body)

    def _first_word_ticks(self, turn: Turn) -> int:
        """The open phrase's first word (the turn's, without segmentation)."""
        if len(turn.units) > turn.phrase_start:
            return self._ticks(turn.units[turn.phrase_start])
        return 0

    def _translations(self, words: list[str]) -> dict[str, Any]:
        return {
            "TranslationStatus": "Success",
            "Translations": [
                {"Language": lang, "Text": "".join(translation_of(w, lang) for w in words)}
                for lang in self.targets
            ],
        }

    def _end(self, turn: Turn) -> None:
        with self._update():
            turn.ended = True
        end_unit = len(turn.audio) // UNIT_BYTES
        end = len(turn.audio) // BYTES_PER_MS * TICKS_PER_MS
        self._send("speech.endDetected", turn, {"Offset": end})
        plan = self.session.plan
        if plan is not None and plan.status_error and self.session.fault is None:
            with self._update():
                self.session.fault = "status_error"
            self._send("speech.phrase", turn, {"RecognitionStatus": "Error", "Offset": 0})
            self._close(1000)
        if len(turn.words) > turn.phrase_start or not turn.words:
            self._phrase(turn, end_unit, end_ticks=end)
        with self._update():
            turn.turn_end_sent = True
            turn.turn_end_at = time.monotonic()
        self._send("turn.end", turn, {})

    def _phrase(self, turn: Turn, end_unit: int, end_ticks: int | None = None) -> None:
        """The phrase of the words since the previous one, ending at ``end_unit`` (the turn's
        end, or where the pause began); NoMatch for a turn without words."""
        words = turn.words[turn.phrase_start :]
        units = turn.units[turn.phrase_start :]
        end = self._ticks(end_unit) if end_ticks is None else end_ticks
        start = self._ticks(units[0]) if units else 0
        with self._update():
            turn.phrase_start = len(turn.words)
        phrase: dict[str, Any] = {
            "RecognitionStatus": "Success" if words else "NoMatch",
            "Offset": start,
            "Duration": end - start,
        }
        text = text_of(words)
        if self.session.mode == "translation":
            phrase["Text"] = text
            if words:
                phrase["Translation"] = self._translations(words)
            self._send("translation.phrase", turn, phrase)
            if self.synthesize and words:
                self._synthesis(turn, words)
        else:
            if words:
                phrase["DisplayText"] = text
            if self.detailed and words:
                phrase["NBest"] = [self._nbest(words, units, text)]
            self._send("speech.phrase", turn, phrase)

    def _nbest(self, words: list[str], units: list[int], text: str) -> dict[str, Any]:
        timed = [
            {"Word": w.strip(), "Offset": self._ticks(k), "Duration": self._ticks(1)}
            for k, w in zip(units, words, strict=True)
        ]
        return {
            "Confidence": CONFIDENCE,
            "Lexical": text,
            "ITN": text,
            "MaskedITN": text,
            "Display": text,
            "Words": timed,
        }

    def _synthesis(self, turn: Turn, words: list[str]) -> None:
        audio = synthesis_audio(words, self.targets[0])
        for i in range(0, len(audio), self.emu.synthesis_chunk):
            self._send_binary(
                "translation.synthesis", turn, audio[i : i + self.emu.synthesis_chunk]
            )
        self._send("translation.synthesis.end", turn, {"SynthesisStatus": "Success"})

    def _send(self, path: str, turn: Turn, body: dict[str, Any]) -> None:
        with self._update():
            self.session.sent.append((path, turn.request_id, body))
        self.conn.send(
            f"Path: {path}\r\nX-RequestId: {turn.request_id}\r\nX-Timestamp: {_timestamp()}\r\n"
            f"Content-Type: application/json; charset=utf-8\r\n\r\n{json.dumps(body)}"
        )

    def _send_binary(self, path: str, turn: Turn, payload: bytes) -> None:
        headers = (
            f"Path: {path}\r\nX-RequestId: {turn.request_id}\r\n"
            f"X-Timestamp: {_timestamp()}\r\nContent-Type: audio/x-wav\r\n"
        ).encode()
        with self._update():
            self.session.sent.append((path, turn.request_id, len(payload)))
        self.conn.send(struct.pack(">H", len(headers)) + headers + payload)

    # -- endings --------------------------------------------------------------------------

    def _apply_plan(self) -> None:
        plan = self.session.plan
        if plan is None or self.session.fault is not None:
            return
        received_ms = self.session.audio_bytes // BYTES_PER_MS
        if plan.drop_after_ms is not None and received_ms >= plan.drop_after_ms:
            with self._update():
                self.session.fault = "drop"
            self._abort()
        if plan.close_after_ms is not None and received_ms >= plan.close_after_ms:
            with self._update():
                self.session.fault = "close"
            self._close(plan.close_code, plan.close_reason)

    def _violation(self, code: int, what: str) -> NoReturn:
        with self._update():
            self.session.violations.append(what)
        self._close(code, what[:120])

    def _limit(self, which: str) -> NoReturn:
        with self._update():
            self.session.limit = which
        self._close(self.emu.limit_close_code, f"{which} limit")
