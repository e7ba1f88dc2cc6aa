"""What the Azure fault tests (test_azure_faults.py) share: the strict Azure emulator with
the time of every upgrade recorded, the codec pointed at it (directly or through the fault
proxy), and what the emulator's records say about the speech.

The emulator's recognition is a pure function of a turn's audio (``turn_words``, 20 ms
units counted from the turn's first byte), and every utterance here is whole 20 ms frames,
so the words of the audio the gate forwarded are known whatever turns it was cut into: a
turn boundary at a frame boundary never moves a unit. The audio the service made final is
the audio of the turns it answered with ``turn.end``; nothing lost and nothing doubled is
then exactly: those turns, in order, are the forwarded audio.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from edgecap.captions.tokens import Token, TokenUpdate
from edgecap.config.schema import AzureConfig
from edgecap.runtime.speech import GateEvent, SpeechAudio
from edgecap.services.azure import AzureCodec
from tests.emulators.azure import AzureEmulator, translation_of, turn_words
from tests.emulators.fault_proxy import FaultProxy
from tests.link.harness import LinkRun, RecordingSink


class TimedAzureEmulator(AzureEmulator):
    """The strict Azure emulator, also recording when each upgrade request came
    (``time.monotonic()``, refused ones included): retry timing is read from the service's
    side, as the service would see it."""

    def __init__(self, tmp_dir: str | Path, **options: Any) -> None:
        # set before the server starts: its handler threads read them
        self._upgrades: list[float] = []
        self._upgrades_lock = threading.Lock()
        super().__init__(tmp_dir, **options)

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        with self._upgrades_lock:
            self._upgrades.append(time.monotonic())
        return super()._process_request(conn, request)

    @property
    def upgrades(self) -> list[float]:
        with self._upgrades_lock:
            return list(self._upgrades)


def base_url(port: int) -> str:
    """The ``host`` form of the emulator's address at ``port`` (its own or the proxy's)."""
    return f"wss://127.0.0.1:{port}"


def through(proxy: FaultProxy) -> str:
    return base_url(proxy.port)


def azure_codec(
    host: str,
    *,
    session_max: float | None = None,
    replay_speed: float = 10.0,
    **changes: Any,
) -> AzureCodec:
    """An AzureCodec for ``host``; ``changes`` to the [azure] config (mode, targets, …).
    ``session_max`` is set on the instance (the config's floor is 10 s)."""
    cfg = replace(AzureConfig(host=host, language="en-US"), **changes)
    codec = AzureCodec(cfg, replay_speed=replay_speed)
    if session_max is not None:
        codec.session_max = session_max
    return codec


def azure_run(
    emu: AzureEmulator, host: str, *, codec: AzureCodec | None = None, **settings: Any
) -> LinkRun:
    """A LinkRun speaking Azure to ``host`` (not started); ``settings``: LinkRun's."""
    return LinkRun(emu, codec=codec or azure_codec(host), **settings)


# -- what the emulator's records say -----------------------------------------------------


def words(pcm: bytes) -> list[str]:
    """The words the emulator recognizes in ``pcm`` (whole frames, in turns cut at frames)."""
    return [w.strip() for _, w in turn_words(pcm)]


def captioned(sink: RecordingSink) -> list[str]:
    """The final spoken words the link delivered, in order (a phrase is one token)."""
    with sink.lock:
        return " ".join(sink.finals).split()


def finalized(emu: AzureEmulator) -> list[bytes]:
    """The audio of every turn the service answered with ``turn.end``, in order."""
    with emu._cond:
        return [bytes(t.audio) for s in emu.sessions for t in s.turns if t.turn_end_sent]


def finalized_bytes(emu: AzureEmulator) -> int:
    return sum(len(a) for a in finalized(emu))


def received(emu: AzureEmulator) -> list[bytes]:
    """The audio of every turn the service received, ended or not, in order."""
    with emu._cond:
        return [bytes(t.audio) for s in emu.sessions for t in s.turns]


def acknowledged(emu: AzureEmulator) -> int:
    """Turns whose ``turn.end`` the client answered with telemetry."""
    with emu._cond:
        return sum(1 for s in emu.sessions for t in s.turns if t.telemetry is not None)


def violations(emu: AzureEmulator) -> list[str]:
    with emu._cond:
        return [v for s in emu.sessions for v in s.violations]


def by_utterance(events: list[GateEvent]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, SpeechAudio):
            out[e.utterance] = out.get(e.utterance, b"") + e.frame.pcm
    return out


def utterance_bounds(events: list[GateEvent]) -> set[int]:
    """Byte offsets in the forwarded audio where an utterance ends."""
    bounds, pos = set(), 0
    for pcm in by_utterance(events).values():
        pos += len(pcm)
        bounds.add(pos)
    return bounds


def session_ends(emu: AzureEmulator) -> list[int]:
    """Byte offsets in the finalized audio where each session's last turn ended (the
    sessions that had turns, in order)."""
    ends, pos = [], 0
    with emu._cond:
        for s in emu.sessions:
            turns = [t for t in s.turns if t.turn_end_sent]
            if turns:
                pos += sum(len(t.audio) for t in turns)
                ends.append(pos)
    return ends


@dataclass
class LineSink(RecordingSink):
    """A RecordingSink that also keeps each final line (the final tokens of one update)."""

    lines: list[tuple[Token, ...]] = field(default_factory=list)

    def update(self, u: TokenUpdate, clock) -> None:  # type: ignore[no-untyped-def]
        super().update(u, clock)
        if u.final:
            with self.lock:
                self.lines.append(tuple(u.final))


def use_line_sink(run: LinkRun) -> LineSink:
    """Give a run (not started) a LineSink."""
    sink = LineSink()
    run.sink = sink
    run.link.sink = sink
    return sink


def translated_line(line: tuple[Token, ...], targets: tuple[str, ...]) -> bool:
    """A final line is the spoken phrase, then its translation into every target, in the
    targets' order, each the translation of exactly the phrase's words."""
    spoken, *rest = line
    phrase = spoken.text.split()
    if not spoken.spoken or [t.language for t in rest] != list(targets):
        return False
    return all(
        not t.spoken and t.text.split() == [translation_of(f" {w}", lang).strip() for w in phrase]
        for t, lang in zip(rest, targets, strict=True)
    )
