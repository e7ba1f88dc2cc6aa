"""The contract between the Link (sockets, threads, retries) and one service's codec.

A codec is pure translation between edgecap and one service's wire protocol: where to
connect and with which headers, what to send first, how audio, keepalive, finalize and end
of stream look on the wire, and what each message from the service means — including
whether an error is worth retrying. It owns no socket and no thread, so it is tested with
recorded messages alone (``../shared/protocol-traces``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from edgecap.captions.tokens import TokenUpdate
from edgecap.config.secrets import SecretValue


@dataclass(frozen=True)
class Handshake:
    """Where to connect. ``headers`` may hold a key: never log them (repr masks them)."""

    url: str
    headers: tuple[str, ...] = field(repr=False, default=())  # "Name: value"
    subprotocols: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outgoing:
    """One WebSocket message: ``str`` goes as a TEXT frame, ``bytes`` as a BINARY frame."""

    payload: str | bytes
    what: str  # for logs and counters: "start", "audio", "keepalive", "finalize", "end"


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
    """The service has sent everything for the audio it got and ends the session."""


ServiceEvent = TokenUpdate | ServiceError | SessionFinished


class ProtocolError(ValueError):
    """A message from the service that does not follow its protocol. The Link logs it,
    counts it and goes on: one bad message must not cost a session."""


class Codec(Protocol):
    name: str  # "soniox"
    keepalive_interval: float | None  # send keepalive() this often while no audio flows
    session_max: float  # renew the session after this many seconds, at a pause
    slow_retry_min: float  # Retry.SLOW waits at least this long
    audio_chunk_ms: int  # audio is sent in messages of about this length
    replay_speed: float  # buffered audio is sent at most this much faster than real time

    def handshake(self, key: SecretValue | None) -> Handshake: ...

    def start(self) -> list[Outgoing]:
        """Messages sent right after the connection opened (config, …)."""
        ...

    def audio(self, pcm: bytes) -> Outgoing:
        """16 kHz mono s16le → one message."""
        ...

    def keepalive(self) -> Outgoing | None: ...

    def finalize(self) -> Outgoing | None:
        """Ask for everything sent so far to be made final (at speech end)."""
        ...

    def end_of_stream(self) -> Outgoing:
        """No more audio in this session: the service finishes and closes."""
        ...

    def reset(self) -> None:
        """A new session begins: forget per-session state."""
        ...

    def parse(self, message: str | bytes) -> list[ServiceEvent]:
        """One message from the service; raises ProtocolError for a malformed one."""
        ...

    def handshake_refused(self, status: int) -> ServiceError:
        """The HTTP upgrade was answered with ``status`` instead of 101."""
        ...

    def closed(self, code: int | None, reason: str, finished: bool) -> ServiceError | None:
        """The service closed the socket (``code`` None: the TCP connection just ended).
        None means a normal end (e.g. after SessionFinished)."""
        ...
