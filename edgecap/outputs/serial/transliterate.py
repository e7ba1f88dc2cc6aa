"""Indic scripts in Latin letters, for devices that show only Latin (docs/scripts.md).

A character LCD (HD44780 ROM) or a CEA-608 encoder cannot show Devanagari, Bengali,
Gurmukhi, Gujarati, Odia, Tamil, Telugu, Kannada or Malayalam. Dropping the text would
leave a viewer with nothing; a transliteration reads aloud close to what was said
("नमस्ते, आप कैसे हैं?" → "namaste, aap kaise hain?"). The romanisation is Hunterian in
spirit (India's own for place names) and plain ASCII, so both devices show every letter:

- no diacritics: retroflex and dental letters look alike (ट, त → t), as do the sibilants
  श, ष → sh; aspirates take an h (kh, gh, chh, th, dh, ph, bh);
- long ā is "aa" (aap, baat, vanakkam… kaalai), except in Bengali and Odia, where vowel
  length is not heard and ā is plain "a" (amar sonar bangla); ī, ū are i, u;
- the inherent vowel is "a" ("o" in Bengali); Hindi-like scripts (Devanagari, Gurmukhi,
  Gujarati, Bengali) drop it where it is not spoken — at the end of a word and between
  two consonants that each have a vowel (yojnaa, kolkata, gujraat) — as speakers do;
  Odia and the Dravidian scripts keep it, and write a silent one with the virama anyway;
- anusvara is the nasal of the consonant after it (n, m before p/b/m), at the end of a
  word "n", "ng" in Bengali and Odia, "m" in Telugu, Kannada and Malayalam;
- nukta letters are the Urdu/Persian sounds they stand for (क़ q, ज़ z, फ़ f, ड़ r);
- a few clusters are spelled as they sound (ज्ञ gy, Tamil ற்ற ttr, ன்ற ndr, Malayalam ന്റ nt).

Every table here is small and works by a letter's offset in its block: the nine blocks
share one layout (ISCII's), with a few letters of their own per script.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

FIRST, END = 0x0900, 0x0D80  # the nine blocks, 0x80 code points each, in SCRIPTS order
DANDAS = {"\u0964": ".", "\u0965": "."}  # । ॥: every script's full stop
_INDIC_RUN = re.compile("[\u0900-\u0d7f]+")

# The shared layout: offset in the block → Latin.
VOWELS: Mapping[int, str] = {
    0x05: "a", 0x06: "aa", 0x07: "i", 0x08: "i", 0x09: "u", 0x0A: "u", 0x0B: "ri",
    0x0C: "li", 0x0D: "e", 0x0E: "e", 0x0F: "e", 0x10: "ai", 0x11: "o", 0x12: "o",
    0x13: "o", 0x14: "au", 0x60: "ri", 0x61: "li",
}  # fmt: skip
SIGNS: Mapping[int, str] = {  # dependent vowel signs
    0x3E: "aa", 0x3F: "i", 0x40: "i", 0x41: "u", 0x42: "u", 0x43: "ri", 0x44: "ri",
    0x45: "e", 0x46: "e", 0x47: "e", 0x48: "ai", 0x49: "o", 0x4A: "o", 0x4B: "o",
    0x4C: "au", 0x57: "au", 0x62: "li", 0x63: "li",
}  # fmt: skip
CONSONANTS: Mapping[int, str] = {
    0x15: "k", 0x16: "kh", 0x17: "g", 0x18: "gh", 0x19: "ng",
    0x1A: "ch", 0x1B: "chh", 0x1C: "j", 0x1D: "jh", 0x1E: "n",
    0x1F: "t", 0x20: "th", 0x21: "d", 0x22: "dh", 0x23: "n",
    0x24: "t", 0x25: "th", 0x26: "d", 0x27: "dh", 0x28: "n", 0x29: "n",
    0x2A: "p", 0x2B: "ph", 0x2C: "b", 0x2D: "bh", 0x2E: "m",
    0x2F: "y", 0x30: "r", 0x31: "r", 0x32: "l", 0x33: "l", 0x34: "zh", 0x35: "v",
    0x36: "sh", 0x37: "sh", 0x38: "s", 0x39: "h",
}  # fmt: skip
NUKTA: Mapping[int, str] = {  # consonant + nukta: the sound it is borrowed for
    0x15: "q", 0x16: "kh", 0x17: "gh", 0x1C: "z", 0x21: "r", 0x22: "rh", 0x2B: "f",
    0x2F: "y", 0x28: "n", 0x30: "r", 0x33: "zh", 0x32: "l", 0x38: "sh",
}  # fmt: skip
CANDRABINDU, ANUSVARA, VISARGA, NUKTA_SIGN, VIRAMA = 0x01, 0x02, 0x03, 0x3C, 0x4D
DIGITS = range(0x66, 0x70)
LABIALS = range(0x2A, 0x2F)  # before these an anusvara is "m"
STOPS = range(0x15, 0x2F)  # before these it is the stop's own nasal: "n" (or "m")


@dataclass(frozen=True)
class Script:
    """How one script differs from the shared layout."""

    name: str
    inherent: str = "a"  # the vowel every consonant has unless told otherwise
    long_a: str = "aa"
    drops_schwa: bool = False  # the inherent vowel is silent at a word's end etc.
    nasal: str = "n"  # an anusvara not before a stop
    consonants: Mapping[int, str] = field(default_factory=dict)  # overrides and extras
    vowels: Mapping[int, str] = field(default_factory=dict)  # vowel letters: overrides
    signs: Mapping[int, str] = field(default_factory=dict)  # vowel signs: overrides
    dead: Mapping[int, str] = field(default_factory=dict)  # consonants without a vowel
    after_virama: Mapping[int, str] = field(default_factory=dict)  # a second consonant
    clusters: Mapping[str, str] = field(default_factory=dict)  # C + virama + C → Latin
    words: Mapping[int, str] = field(default_factory=dict)  # signs that are whole words


MALAYALAM_DEAD: Mapping[int, str] = {  # the dot reph, then the chillus (m y zh n n r l l k)
    0x4E: "r", 0x54: "m", 0x55: "y", 0x56: "zh",
    0x7A: "n", 0x7B: "n", 0x7C: "r", 0x7D: "l", 0x7E: "l", 0x7F: "k",
}  # fmt: skip

SCRIPTS: tuple[Script, ...] = (
    Script(
        "Devanagari",
        drops_schwa=True,
        clusters={"ज्ञ": "gy"},
        words={0x50: "om", 0x70: "."},
        consonants={0x78: "d", 0x79: "zh", 0x7A: "y", 0x7B: "g", 0x7C: "j", 0x7E: "d", 0x7F: "b"},
        vowels={0x04: "a", 0x72: "a", 0x73: "o", 0x74: "o", 0x75: "aw", 0x76: "u", 0x77: "u"},
    ),
    Script(
        "Bengali",
        inherent="o",
        long_a="a",
        drops_schwa=True,
        nasal="ng",
        consonants={0x2F: "j", 0x70: "r", 0x71: "w"},  # য is "j" (but য-phala, য় are "y")
        vowels={0x05: "o", 0x10: "oi", 0x14: "ou"},  # অ ঐ ঔ as they sound
        signs={0x48: "oi", 0x4C: "ou"},
        dead={0x4E: "t"},  # ৎ khanda ta
        after_virama={0x2F: "y"},
        clusters={"জ্ঞ": "gy"},
    ),
    Script(
        "Gurmukhi",
        drops_schwa=True,
        consonants={0x5C: "r", 0x72: "", 0x73: ""},  # ੜ; ੲ ੳ carry a vowel sign
        words={0x74: "ik onkar"},
    ),
    Script(
        "Gujarati",
        drops_schwa=True,
        consonants={0x79: "zh"},
        clusters={"જ્ઞ": "gn"},
        words={0x50: "om"},
    ),
    Script(
        "Odia",
        long_a="a",
        nasal="ng",
        consonants={0x2F: "j", 0x5F: "y", 0x71: "w"},  # ଯ "j", ୟ "y"
        after_virama={0x2F: "y"},
    ),
    Script(
        "Tamil",
        consonants={0x1A: "s", 0x1E: "nj", 0x24: "th"},
        clusters={"ற்ற": "ttr", "ன்ற": "ndr", "ங்க": "ng", "ஞ்ச": "nj", "ச்ச": "chch"},
        words={0x50: "om"},
    ),
    Script(
        "Telugu",
        nasal="m",
        consonants={0x58: "ts", 0x59: "dz", 0x5A: "r"},
        dead={0x5D: "n"},  # nakaara pollu
    ),
    Script("Kannada", nasal="m", consonants={0x5E: "zh"}, dead={0x5D: "n"}),
    Script(
        "Malayalam",
        nasal="m",
        consonants={0x1E: "nj", 0x24: "th", 0x3A: "tt"},
        dead=MALAYALAM_DEAD,
        clusters={"റ്റ": "tt", "ന്റ": "nt"},
    ),
)
GURMUKHI = SCRIPTS[2]
TIPPI, ADDAK, YAKASH = 0x70, 0x71, 0x75  # Gurmukhi: a nasal; doubles the next consonant; ੵ


def has_indic(text: str) -> bool:
    """``text`` has letters of one of the nine Indic scripts (to_latin changes it)."""
    return any(FIRST <= ord(ch) < END for ch in text)


# --- the pieces of a word ----------------------------------------------------------------
@dataclass
class _Syllable:
    """A consonant (or a cluster) and its vowel: None = the inherent one, "" = none."""

    script: Script
    consonant: str
    offset: int  # in the block: what a nukta or an anusvara before it makes of it
    vowel: str | None = None
    cluster: bool = False  # the second consonant of a conjunct


@dataclass
class _Vowel:
    text: str


@dataclass
class _Nasal:
    script: Script
    fixed: str = ""  # candrabindu: always "n"


_Piece = _Syllable | _Vowel | _Nasal


def to_latin(text: str) -> str:
    """``text`` with every Indic letter transliterated (see the module docstring);
    anything else (Latin, digits, punctuation, other scripts) stays as it is."""
    if not has_indic(text):
        return text
    text = _INDIC_RUN.sub(lambda m: unicodedata.normalize("NFC", m.group()), text)
    out: list[str] = []
    word: list[_Piece] = []
    i = 0
    double_next = False  # Gurmukhi addak
    while i < len(text):
        ch = text[i]
        cp = ord(ch)
        i += 1
        if ch in DANDAS or not FIRST <= cp < END:
            if ch in ("\u200c", "\u200d") and word:
                continue  # joiners pick a form of a letter: nothing to spell
            out.append(_spell(word))
            word = []
            out.append(DANDAS.get(ch, ch))
            continue
        script = SCRIPTS[(cp - FIRST) >> 7]
        off = (cp - FIRST) & 0x7F
        last = word[-1] if word else None
        open_syllable = last if isinstance(last, _Syllable) and last.vowel is None else None
        cluster = next((c for c in script.clusters if text.startswith(c, i - 1)), None)
        if cluster is not None:
            word.append(_Syllable(script, script.clusters[cluster], off, cluster=True))
            i += len(cluster) - 1
        elif off in script.dead:
            word.append(_Syllable(script, script.dead[off], off, vowel=""))
        elif off in script.consonants or off in CONSONANTS:
            after = isinstance(last, _Syllable) and last.vowel == ""
            latin = script.consonants.get(off, CONSONANTS.get(off, ""))
            if after and off in script.after_virama:
                latin = script.after_virama[off]
            if double_next and latin:
                latin, double_next = latin[0] + latin, False
            word.append(_Syllable(script, latin, off, cluster=after))
        elif off in SIGNS:
            sign = script.long_a if off == 0x3E else script.signs.get(off) or SIGNS[off]
            if open_syllable is not None:
                open_syllable.vowel = sign
            else:
                word.append(_Vowel(sign))
        elif off in VOWELS or off in script.vowels:
            vowel = script.vowels.get(off) or VOWELS[off]
            word.append(_Vowel(script.long_a if off == 0x06 else vowel))
        elif off == VIRAMA:
            if open_syllable is not None:
                open_syllable.vowel = ""
        elif off == NUKTA_SIGN:
            if isinstance(last, _Syllable) and last.offset in NUKTA:
                last.consonant = NUKTA[last.offset]
        elif off == ANUSVARA or (script is GURMUKHI and off == TIPPI):
            word.append(_Nasal(script))
        elif off == CANDRABINDU:
            word.append(_Nasal(script, fixed="n"))
        elif off == VISARGA:
            word.append(_Vowel("h"))
        elif script is GURMUKHI and off == ADDAK:
            double_next = True
        elif script is GURMUKHI and off == YAKASH:
            word.append(_Syllable(script, "y", 0x2F, cluster=True))
        elif off in DIGITS:
            out.append(_spell(word))
            word = []
            out.append(str(off - DIGITS.start))
        elif off in script.words:
            out.append(_spell(word))
            word = []
            out.append(script.words[off])
        # anything else (avagraha, stress marks, rare letters) has nothing to spell
    out.append(_spell(word))
    return "".join(out)


def _spell(word: list[_Piece]) -> str:
    """One word's pieces in Latin, with the silent inherent vowels dropped."""
    if not word:
        return ""
    _drop_schwa(word)
    out = []
    for i, piece in enumerate(word):
        if isinstance(piece, _Syllable):
            vowel = piece.script.inherent if piece.vowel is None else piece.vowel
            out.append(piece.consonant + vowel)
        elif isinstance(piece, _Vowel):
            out.append(piece.text)
        else:
            out.append(piece.fixed or _nasal(piece.script, word[i + 1 : i + 2]))
    return "".join(out)


def _nasal(script: Script, after: list[_Piece]) -> str:
    """An anusvara: the nasal of the stop after it, else the script's own."""
    following = after[0] if after else None
    if isinstance(following, _Syllable) and following.offset in STOPS:
        return "m" if following.offset in LABIALS else "n"
    return script.nasal


def _sounded(piece: _Piece) -> bool:
    """The piece ends in a vowel that is spoken."""
    if isinstance(piece, _Vowel):
        return piece.text != "h"
    return isinstance(piece, _Syllable) and piece.vowel != ""


def _drop_schwa(word: list[_Piece]) -> None:
    """Silence the inherent vowels a speaker of a Hindi-like language does not say: the
    last one of a word of two syllables or more (not after a conjunct: mitra, dharma;
    not in "-iya": kshatriya), then, from the right, one between two consonants that each
    have a spoken vowel around it (ka-la-ka-ta → kalkata, yo-ja-naa → yojnaa)."""
    syllables = [p for p in word if isinstance(p, _Syllable)]
    if not syllables or not syllables[0].script.drops_schwa:
        return
    last = word[-1]
    vowels = sum(1 for p in word if _sounded(p))
    if isinstance(last, _Syllable) and last.vowel is None and not last.cluster and vowels > 1:
        before = word[-2] if len(word) > 1 else None
        iya = last.consonant == "y" and isinstance(before, _Syllable) and before.vowel == "i"
        if not iya:
            last.vowel = ""
    for j in range(len(word) - 2, 0, -1):
        piece, before, after = word[j], word[j - 1], word[j + 1]
        if (
            isinstance(piece, _Syllable)
            and piece.vowel is None
            and not piece.cluster
            and _sounded(before)
            and isinstance(after, _Syllable)
            and not after.cluster
            and after.vowel != ""
        ):
            piece.vowel = ""


class TransliterationNote:
    """The status note of a Latin-only device: the first caption with Indic letters is
    logged (once per output: the device shows it transliterated, not missing)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.count = 0  # captions with Indic letters

    def check(self, text: str) -> bool:
        """``text`` has Indic letters (it is shown transliterated); logs the first."""
        if not has_indic(text):
            return False
        self.count += 1
        if self.count == 1:
            log.info(
                "%s: Indic text transliterated to Latin letters (the device cannot show "
                "Indic scripts; see docs/scripts.md)",
                self.device,
            )
        return True
