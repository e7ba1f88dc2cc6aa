"""Where a speech consumer (the Link, the offline engine) delivers what it recognised.

The CaptionBoard implements this; tests record with it. It sits at the bottom floor so the
link and the services both write to it without knowing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from edgecap.captions.events import SynthesizedAudio
from edgecap.captions.tokens import TokenUpdate

SessionClock = Callable[[int], float | None]  # session ms → capture seconds (None: unknown)


class CaptionSink(Protocol):
    def update(self, u: TokenUpdate, clock: SessionClock) -> None:
        """One step of recognition; ``clock`` maps the update's session times."""
        ...

    def synthesized(self, audio: SynthesizedAudio) -> None:
        """A chunk of speech the service synthesized (a spoken translation)."""
        ...

    def session_ended(self) -> None:
        """The session ended: its provisional tail will not be confirmed."""
        ...

    def loss(self, seconds: float, start: float | None, end: float | None, reason: str) -> None:
        """Speech that was captured and will never be captioned, and why."""
        ...

    def close(self) -> None:
        """Nothing more comes: every open line becomes final."""
        ...
