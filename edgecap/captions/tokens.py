"""A recognised word or word piece, as every service codec reports it.

Services differ in how they say it; a codec turns its service's messages into ``Token``s and
``TokenUpdate``s so that the caption model never needs to know which service spoke.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# original: spoken text; translation: a translation of spoken text; none: spoken text that
# is not being translated (e.g. a third language in two-way translation, or no translation).
TokenKind = Literal["original", "translation", "none"]


@dataclass(frozen=True, slots=True)
class Token:
    text: str  # as the service sent it, leading space included (" hello")
    is_final: bool
    kind: TokenKind = "none"
    start_ms: int | None = None  # within the session's audio; translations have none
    end_ms: int | None = None
    speaker: str | None = None
    language: str | None = None
    source_language: str | None = None  # translation tokens: the language translated from
    confidence: float | None = None
    # how sure the service is of ``language`` (Sarvam's language_probability), 0..1
    language_confidence: float | None = None

    @property
    def spoken(self) -> bool:
        """True for what was said (original or untranslated), False for a translation."""
        return self.kind != "translation"


@dataclass(frozen=True, slots=True)
class TokenUpdate:
    """One step of the recognition of one session.

    ``final``: tokens that became final with this update, in order; each is reported exactly
    once over a session. ``provisional``: the current non-final tail; it *replaces* the tail
    of the previous update (an empty tuple clears it). ``endpoint``: the service decided the
    speaker finished a phrase (Soniox ``<end>``). ``finalized``: the reply to a finalize
    request — all audio sent before it is final now (Soniox ``<fin>``).
    ``final_audio_ms``: audio of this session, from its start, whose recognition is final;
    None when the service does not say.
    """

    final: tuple[Token, ...] = ()
    provisional: tuple[Token, ...] = ()
    endpoint: bool = False
    finalized: bool = False
    final_audio_ms: int | None = None
    total_audio_ms: int | None = None
