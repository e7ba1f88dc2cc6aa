"""The contract between the Link (sockets, threads, retries) and one service's codec (v2).

A codec is pure translation between edgecap and one service's wire protocol: where to
connect and with which headers (and how to get a bearer token for them first, if the
service wants one), what to send first, how a turn (one utterance) begins and ends on the
wire, how audio is framed, what keepalive and end of stream look like, what each message
from the service means — including whether an error is worth retrying — and which replies
the protocol requires. It owns no socket and no thread, so it is tested with
recorded messages alone (``../shared/protocol-traces``).

Every call of a codec happens on one thread, the link's (which also reads the connection:
``link/connection.py``). So a codec may keep per-session state — turn ids, how much
audio each turn has had, what a reply must name — without a lock, and the order of its
calls is the order of the wire. ``docs/services.md`` says when the link calls what.

Why turns: services that are not one endless stream (Azure Speech: a new ``X-RequestId``,
``speech.context`` and RIFF header per utterance; a ``telemetry`` reply after every
``turn.end``) need to know where an utterance begins and ends; a service that is one stream
(Soniox) returns nothing at a turn's start and its finalize request at its end.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from edgecap.captions.events import SynthesizedAudio
from edgecap.captions.tokens import TokenUpdate
from edgecap.config.secrets import SecretValue


@dataclass(frozen=True)
class Handshake:
    """Where to connect. ``headers`` may hold a key: never log them (repr masks them)."""

    url: str
    headers: tuple[str, ...] = field(repr=False, default=())  # "Name: value"
    subprotocols: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenRequest:
    """How to get a bearer token for the handshake (``Codec.token_request``): an HTTP POST
    with an empty body to ``url`` (https) with ``headers`` — which may hold the key: never
    log them (repr masks them). The body of the answer is the token. It is valid for
    ``lifetime`` seconds from its fetch; the link fetches a new one for a connection made
    when less than ``renew_before`` of that is left."""

    url: str
    headers: tuple[str, ...] = field(repr=False, default=())  # "Name: value"
    lifetime: float = 600.0
    renew_before: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.renew_before < self.lifetime:
            raise ValueError("a token's renew_before must be less than its lifetime")


@dataclass(frozen=True)
class Outgoing:
    """One WebSocket message: ``str`` goes as a TEXT frame, ``bytes`` as a BINARY frame."""

    payload: str | bytes
    # For logs only ("start", "turn", "audio", "finalize", "keepalive", "end", "reply" …):
    # the link decides what a message means by the call that produced it, never by this.
    what: str


class Retry(enum.Enum):
    """What the Link does after a session ended with an error."""

    NOW = "now"  # start a new session at once (Soniox 503: "please restart the request")
    BACKOFF = "backoff"  # exponential backoff with full jitter
    SLOW = "slow"  # backoff, but never sooner than Codec.slow_retry_min (rate limits)
    ONCE = "once"  # retry at once the first time, back off if it happens again in a row
    FATAL = "fatal"  # key, account or config refused: wait for a reload or fatal_retry


@dataclass(frozen=True)
class ServiceError:
    """The service (or the connection to it) ended the session with a problem."""

    code: int | None  # the service's code (Soniox error_code, HTTP status, close code)
    kind: str  # a stable slug: "unauthenticated", "service_unavailable", "close_1011" …
    message: str  # for logs and status; never contains a key
    retry: Retry

    def describe(self) -> str:
        code = f" {self.code}" if self.code is not None else ""
        return f"{self.kind}{code}: {self.message}" if self.message else f"{self.kind}{code}"


@dataclass(frozen=True)
class SessionFinished:
    """The service has sent everything for the audio it got and ends the session (only a
    codec with ``sends_finished`` reports it)."""


@dataclass(frozen=True)
class ServiceNotice:
    """Something the service said that no caption shows but people should know of — a
    translation into one language failed, speech was heard but not recognised. The link
    logs it, counts it (``link_notices``) and shows it in the status for a while (the
    ``notice`` part); the session goes on."""

    kind: str  # a stable slug: "translation_failed", "no_match" …
    message: str  # for people, short; never contains a key


# What a codec may report. SynthesizedAudio is speech the service made (a spoken
# translation); the link passes it to the sink in order. ServiceNotice goes to the status.
# An event of any other type is a codec bug: the link logs it once per type and counts
# it ("link_unknown_events").
ServiceEvent = TokenUpdate | ServiceError | SessionFinished | SynthesizedAudio | ServiceNotice


@dataclass(frozen=True)
class Parsed:
    """What one message from the service means.

    ``events`` are handled by the link in order. ``replies`` are messages the protocol
    requires in answer (Azure: ``telemetry`` after ``turn.end``); the link sends them on the
    same connection at once, before it handles the events.
    """

    events: tuple[ServiceEvent, ...] = ()
    replies: tuple[Outgoing, ...] = ()


class ProtocolError(ValueError):
    """A message from the service that does not follow its protocol. The Link logs it,
    counts it and goes on: one bad message must not cost a session."""


class Codec(Protocol):
    name: str  # "soniox"
    keepalive_interval: float | None  # send keepalive() this often while no audio flows
    session_max: float  # renew the session after this many seconds, at a pause
    slow_retry_min: float  # Retry.SLOW waits at least this long
    audio_chunk_ms: int  # audio is sent in pieces of about this length
    replay_speed: float  # buffered audio is sent at most this much faster than real time
    # True: a graceful end waits for SessionFinished (within [link] finish_timeout; without
    # it the session failed and its unconfirmed audio is replayed). False: the service never
    # says it is done (Sarvam): a graceful end is over once every turn end was answered and
    # the service then sent nothing for ``finish_grace`` seconds (or it closed) — a success.
    sends_finished: bool
    finish_grace: float
    # False: the service takes no key (a container on the LAN); the link then never asks
    # for one and passes None to token_request and handshake.
    needs_key: bool

    def token_request(self, key: SecretValue | None) -> TokenRequest | None:
        """How to get a bearer token with ``key`` before connecting; None: no token (the
        key, or nothing, goes in the handshake itself)."""
        ...

    def handshake(self, key: SecretValue | None, token: SecretValue | None = None) -> Handshake:
        """Where and how to connect. ``token``: the bearer token got with
        ``token_request`` (None when that returned None)."""
        ...

    def start(self) -> list[Outgoing]:
        """Messages sent right after the connection opened (config, …)."""
        ...

    def begin_turn(self) -> list[Outgoing]:
        """An utterance begins on this session: sent before its first audio. Also called
        when an utterance goes on in a new session (after a reconnect or a renewal), so
        every session sees whole turns."""
        ...

    def audio(self, pcm: bytes) -> list[Outgoing]:
        """16 kHz mono s16le (whole samples, never empty) of the open turn → messages."""
        ...

    def end_turn(self) -> list[Outgoing]:
        """The open turn ends (speech end, or the session ends in mid-utterance). Messages
        returned here ask the service to finish the turn: it must answer them with a
        TokenUpdate with ``finalized`` set, which confirms all audio sent before."""
        ...

    def keepalive(self) -> Outgoing | None:
        """Sent when nothing else was sent for ``keepalive_interval``."""
        ...

    def end_of_stream(self) -> list[Outgoing]:
        """No more audio in this session (no turn is open). May be empty: a service
        without such a message just stops hearing from us."""
        ...

    def reset(self) -> None:
        """A new session begins: forget per-session state."""
        ...

    def parse(self, message: str | bytes) -> Parsed:
        """One message from the service; raises ProtocolError for a malformed one."""
        ...

    def handshake_refused(self, status: int) -> ServiceError:
        """The HTTP upgrade was answered with ``status`` instead of 101."""
        ...

    def closed(self, code: int | None, reason: str, finished: bool) -> ServiceError | None:
        """The service closed the socket (``code`` None: the TCP connection just ended).
        ``finished``: the session had reached its end (SessionFinished came, or, for a codec
        without it, the link had ended the stream and was waiting out its grace). None
        means a normal end."""
        ...
