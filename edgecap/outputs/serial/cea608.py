"""Character maps for devices that cannot show Unicode: CEA-608 caption encoders and
HD44780 character LCDs (bytes per ../shared/HARDWARE.md).

The CEA-608 basic character set is ASCII with eleven positions changed: 0x27 shows ’,
0x2A á, 0x5C é, 0x5E í, 0x5F ó, 0x60 ú, 0x7B ç, 0x7C ÷, 0x7D Ñ, 0x7E ñ, 0x7F █. An encoder in
real-time mode puts the bytes it receives into the stream as they are, so those nine letters
are sent at their 608 positions, and the ASCII characters that live there (``* \\ ^ _ ` { |
} ~``) are replaced by something readable. Other accented Latin letters would need two-byte
extended codes that real-time text input does not translate: they lose their accents.
The Indic scripts Sarvam writes are transliterated to Latin letters first (transliterate.py,
docs/scripts.md); characters of other scripts (CJK, Arabic …) have no 608 form at all: they
are dropped and counted, so the owner can be told why a caption went missing.

An HD44780 LCD (ROM A00) has the same trouble in a smaller way: 0x5C shows ¥ and 0x7E →,
and the SparkFun SerLCD reads 0x7C (``|``) as the start of a settings command.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from edgecap.outputs.serial.transliterate import to_latin

# Letters of the 608 basic set that sit where ASCII has other characters.
CEA608_LETTERS: Mapping[str, int] = {
    "á": 0x2A,
    "é": 0x5C,
    "í": 0x5E,
    "ó": 0x5F,
    "ú": 0x60,
    "ç": 0x7B,
    "÷": 0x7C,
    "Ñ": 0x7D,
    "ñ": 0x7E,
}
# ASCII characters that a 608 decoder would show as one of those letters.
CEA608_UNSAFE: Mapping[str, str] = {
    "*": "-",  # profanity masks ("f***") read better as dashes than as "fááá"
    "\\": "/",
    "^": "",
    "_": " ",
    "`": "'",
    "{": "(",
    "}": ")",
    "|": "/",
    "~": "-",
}
# HD44780 ROM A00 shows 0x5C as ¥ and 0x7E as →; SerLCD takes 0x7C as a command.
LCD_UNSAFE: Mapping[str, str] = {"\\": "/", "|": "/", "~": "-"}

# Non-ASCII characters with an obvious ASCII spelling that Unicode decomposition misses.
ASCII_SPELLING: Mapping[str, str] = {
    "‘": "'",
    "’": "'",
    "‚": "'",
    "‛": "'",
    "′": "'",
    "“": '"',
    "”": '"',
    "„": '"',
    "‟": '"',
    "″": '"',
    "«": '"',
    "»": '"',
    "‹": "'",
    "›": "'",
    "‐": "-",
    "‑": "-",
    "‒": "-",
    "–": "-",
    "—": "-",
    "―": "-",
    "−": "-",
    "•": "-",
    "…": "...",
    "ß": "ss",
    "ẞ": "SS",
    "æ": "ae",
    "Æ": "AE",
    "œ": "oe",
    "Œ": "OE",
    "ø": "o",
    "Ø": "O",
    "ł": "l",
    "Ł": "L",
    "đ": "d",
    "Đ": "D",
    "ð": "d",
    "Ð": "D",
    "þ": "th",
    "Þ": "TH",
    "ı": "i",
    "€": "EUR",
    "£": "GBP",
}

_SPACES = re.compile(r" {2,}")


def ascii_spelling(ch: str) -> str | None:
    """Printable ASCII for one character, "" for marks and format characters that need no
    spelling, None when there is none (another script, a symbol)."""
    if " " <= ch <= "~":
        return ch
    if ch in ASCII_SPELLING:
        return ASCII_SPELLING[ch]
    category = unicodedata.category(ch)
    if category == "Zs" or ch in "\t\n\r":
        return " "
    if category == "Nd":  # digits of other scripts: ४२ → 42
        return str(unicodedata.decimal(ch))
    if category.startswith("L"):  # è → e, Ａ → A, ﬁ → fi
        base = "".join(c for c in unicodedata.normalize("NFKD", ch) if " " <= c <= "~")
        return base or None
    if category in ("Mn", "Mc", "Me", "Cf"):
        return ""  # combining marks, joiners: they belong to a letter counted already
    return None


def _fold(text: str, letters: Mapping[str, int], unsafe: Mapping[str, str]) -> tuple[bytes, int]:
    out = bytearray()
    dropped = 0
    for ch in unicodedata.normalize("NFC", text):
        code = letters.get(ch)
        if code is not None:
            out.append(code)
            continue
        spelled = ascii_spelling(ch)
        if spelled is None:
            dropped += 1
            continue
        for c in spelled:
            out += unsafe.get(c, c).encode("ascii")
    return _SPACES.sub(" ", out.decode("ascii")).strip().encode("ascii"), dropped


def to_cea608(text: str, *, uppercase: bool = False) -> tuple[bytes, int]:
    """``text`` as the bytes a 608 encoder in real-time mode shows as that text, and how
    many characters could not be shown at all (dropped). Runs of spaces become one."""
    text = to_latin(text)  # Indic scripts in Latin letters
    if uppercase:
        text = text.upper()  # before mapping: ñ → Ñ is in the basic set, ß → SS
    return _fold(text, CEA608_LETTERS, CEA608_UNSAFE)


def to_lcd(text: str) -> tuple[str, int]:
    """``text`` in the characters a character LCD shows as themselves (printable ASCII
    without ``\\ | ~``), and how many characters were dropped."""
    data, dropped = _fold(to_latin(text), {}, LCD_UNSAFE)
    return data.decode("ascii"), dropped
