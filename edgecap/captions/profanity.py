"""edgecap's own profanity filter: ``[daemon] profanity = mask | remove | off``.

Services without a filter of their own (Soniox, the offline engine, Sarvam) get the same
behaviour as Azure's: the caption board runs this filter on every line and every
translation it publishes, for every service (on Azure's already-masked text it finds
nothing: ``****`` is no word). It runs on a line's assembled text, never on tokens, because
a service may split a word across tokens ("fu" "ck").

The word list is the built-in English list below plus the words of ``profanity_words``
(any language and script). Every word is matched in text of *any* language: an English
swear word in a German talk is still one, and a Hindi word from the file is masked in an
English line too. Matching is by whole words, case-insensitive (a word that case-folds to
something else, "ß" → "ss", matches both spellings), in Unicode NFC: a word character is
a letter, digit, ``_``, combining mark (Devanagari vowel signs, viramas) or zero-width
joiner, so a word is never found inside a longer one ("Scunthorpe" keeps its name). A
trailing ``*`` matches any ending: ``fuck*`` also finds "fucking" and "fucker". Words of
scripts written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese) are found
anywhere, since there is no boundary to look for; a ``*`` after such a word means nothing.

- ``mask``: each letter of the word becomes ``*`` (combining marks go with their letter),
  the length Azure's masked form has: "fucking" → "*******".
- ``remove``: the word goes, with the space before it ("what the fuck is this" → "what the
  is this"). Punctuation after it stays with the word before ("what the fuck." → "what
  the."); a word that starts a sentence takes its own punctuation with it ("Shit, it
  broke." → "it broke."), and a comma left before a removed word's punctuation goes ("oh,
  shit." → "oh."). A line of nothing but removed words becomes empty.
- ``off``: text is left alone.

Speed: one compiled regex, built once per filter from a trie of the words (shared prefixes
are tried once), so ``apply`` costs microseconds on a caption line.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path

MODES = ("mask", "remove", "off")
MAX_FILE_BYTES = 1_000_000  # a words file is a list, not a dictionary of the language
MAX_WORD_CHARS = 64

# The built-in list: English swear words and slurs whose ordinary spoken use is the rude
# one. Left out on purpose (their innocent sense is common in captioned talk, or they are
# place or family names): ass (the animal; "ass" as a prefix would hit "assistant"), cock
# (the bird; "cockpit"), pussy (the cat), tit (the bird), prick, bloody, hell, damn, crap,
# fag (a cigarette), dyke (an embankment), coon, chink, cracker, retard, spastic, cum, and
# every anatomical or medical term (penis, vagina, anal …). "dick" is whole-word only
# ("Dickens"). Forms are listed one by one where a stem would reach an innocent word or a
# place: shit (Shittim), cunt (Cuntis), bitch (Bitche), twat (Twatt), wank (Wankie), slut
# (Slutsk), spic (spice). Add local words with ``profanity_words``.
BUILTIN_WORDS: tuple[str, ...] = (
    # fuck and its compounds
    "fuck*",
    "motherfuck*",
    "clusterfuck*",
    "mindfuck*",
    # shit
    "shit",
    "shits",
    "shite",
    "shitty",
    "shittier",
    "shittiest",
    "shitting",
    "shitted",
    "shitter",
    "shitters",
    "shithead*",
    "shithole*",
    "shitload*",
    "shitshow*",
    "shitstorm*",
    "shitface*",
    "bullshit*",
    "horseshit*",
    "chickenshit*",
    "batshit",
    "apeshit",
    "dipshit*",
    # cunt, twat
    "cunt",
    "cunts",
    "cunty",
    "cunting",
    "twat",
    "twats",
    # bitch, bastard, whore, slut
    "bitch",
    "bitches",
    "bitchy",
    "bitching",
    "bitched",
    "bitchin",
    "bastard",
    "bastards",
    "whore*",
    "slut",
    "sluts",
    "slutty",
    "skank",
    "skanks",
    "skanky",
    # dick, cock, arse and ass compounds (never the bare prefixes)
    "dick",
    "dicks",
    "dickhead*",
    "dickish",
    "dickwad*",
    "cocksucker*",
    "arse",
    "arses",
    "arsed",
    "arsehole*",
    "asshole*",
    "asshat*",
    "asswipe*",
    "dumbass*",
    "douchebag*",
    "knobhead*",
    "bellend*",
    # wank, jizz, piss, bollocks, bugger
    "wank",
    "wanks",
    "wanked",
    "wanking",
    "wanker*",
    "jizz*",
    "piss",
    "pissed",
    "pisses",
    "pissing",
    "pisser",
    "pisshead*",
    "bollock*",
    "bugger",
    "buggers",
    "buggered",
    "buggering",
    "goddamn*",
    "goddam",
    # slurs
    "nigger*",
    "nigga*",
    "faggot*",
    "kike",
    "kikes",
    "spic",
    "spics",
    "gook",
    "gooks",
    "wetback*",
    "raghead*",
    "towelhead*",
    "paki",
    "pakis",
    "wop",
    "wops",
    "dago",
    "dagos",
    "beaner*",
)

_JOINERS = "\u200c\u200d"  # zero-width non-joiner and joiner: inside Indic and Arabic words
_INNER = "-'’"  # may stand inside a word of the list ("f-ing"), never at its ends


class ProfanityWordsError(ValueError):
    """A ``profanity_words`` file that cannot be used (unreadable, not UTF-8, a bad line)."""


@functools.cache
def _marks() -> str:
    """The combining marks, as ranges for a character class. Python's ``\\w`` leaves them
    out, yet they are part of a word (Devanagari vowel signs). Computed once per process
    (some 20 ms on a PC): every mark lies in planes 0 and 1 or among the variation
    selectors of plane 14. The characters stand for themselves (none is special in a
    class), which keeps the class short: it appears a few times in the pattern."""
    points = [
        c
        for c in (*range(0x20000), *range(0xE0000, 0xE1000))
        if unicodedata.category(chr(c))[0] == "M"
    ]
    ranges: list[str] = []
    first = last = points[0]
    for c in [*points[1:], -1]:
        if c == last + 1:
            last = c
            continue
        ranges.append(chr(first) + (f"-{chr(last)}" if last > first else ""))
        first = last = c
    return "".join(ranges)


@functools.cache
def _word_class() -> str:
    """The body of a character class of word characters (for ``[...]`` and ``[^...]``)."""
    return "\\w" + _marks() + _JOINERS


@functools.cache
def _entry_pattern() -> re.Pattern[str]:
    w = _word_class()
    return re.compile(f"[{w}]+(?:[{_INNER}][{w}]+)*")


def _is_mark(ch: str) -> bool:
    return ch in _JOINERS or unicodedata.category(ch)[0] == "M"


def _spaceless(ch: str) -> bool:
    """Scripts written without spaces between words: there is no boundary to look for."""
    c = ord(ch)
    return (
        0x0E00 <= c <= 0x0EFF  # Thai, Lao
        or 0x1000 <= c <= 0x109F  # Myanmar
        or 0x1780 <= c <= 0x17FF  # Khmer
        or 0x3040 <= c <= 0x30FF  # Hiragana, Katakana
        or 0x31F0 <= c <= 0x31FF
        or 0x3400 <= c <= 0x4DBF  # CJK ideographs
        or 0x4E00 <= c <= 0x9FFF
        or 0xF900 <= c <= 0xFAFF
        or 0xFF66 <= c <= 0xFF9F  # halfwidth Katakana
        or 0x20000 <= c <= 0x3FFFF
    )


def _entry(raw: str) -> tuple[str, bool]:
    """``raw`` as (word, stem), NFC; ValueError saying what is wrong with it."""
    text = unicodedata.normalize("NFC", raw.strip())
    stem = text.endswith("*")
    word = text[:-1] if stem else text
    if not word:
        raise ValueError(f"{raw.strip()!r}: no word" + (" before the *" if stem else ""))
    if any(ch.isspace() for ch in word):
        raise ValueError(f"{word!r}: one word per line (no spaces)")
    if "*" in word:
        raise ValueError(f"{text!r}: * is special only at the end of a word")
    if len(word) > MAX_WORD_CHARS:
        raise ValueError(f"{word[:20]!r}…: longer than {MAX_WORD_CHARS} characters")
    if not _entry_pattern().fullmatch(word):
        raise ValueError(f"{word!r}: a word is letters, digits and marks (a - or ' only inside it)")
    return word, stem and not _spaceless(word[-1])


def load_words(path: Path) -> tuple[str, ...]:
    """The words of a ``profanity_words`` file: one per line, a trailing ``*`` for any
    ending, ``#`` starting a comment (a whole line or the rest of one), blank lines
    ignored, UTF-8 (a byte-order mark is allowed). ProfanityWordsError names the file, and
    the line when one is at fault."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ProfanityWordsError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ProfanityWordsError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ProfanityWordsError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from exc
    words: list[str] = []
    for number, line_text in enumerate(text.splitlines(), 1):
        entry = line_text.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            _entry(entry)
        except ValueError as exc:
            raise ProfanityWordsError(f"{path}: line {number}: {exc}") from exc
        words.append(entry)
    return tuple(words)


class _Node:
    __slots__ = ("children", "exact", "stem")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.exact = False
        self.stem = False


def _trie_regex(node: _Node) -> str:
    """The words below ``node`` as one regex, longest first (shared prefixes are tried
    once); what follows the group decides where a word may end."""
    if node.stem:
        return ""  # a stem's endings: the [w]* after the group
    alts = [re.escape(ch) + _trie_regex(child) for ch, child in node.children.items()]
    if not alts:
        return ""
    body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
    if node.exact:
        return f"(?:{body})?"
    return body


def _first_chars(words: Iterable[str]) -> str:
    """A class body of the characters these words may begin with, in any case."""
    chars = set()
    for word in words:
        ch = word[0]
        for form in (ch, ch.lower(), ch.upper(), ch.title(), ch.casefold()):
            chars.add(form[0])
    return "".join(re.escape(ch) for ch in sorted(chars))


def _compile(words: Iterable[tuple[str, bool]]) -> re.Pattern[str]:
    """One regex for every word. The words are grouped by how they begin and end (at a
    word boundary or, in a script without spaces, anywhere; a stem runs on to the end of
    its word), one trie per group. A lookahead for the first letters comes first: it
    rules out most positions before the costlier boundary test."""
    tries: dict[tuple[bool, str], _Node] = {}
    firsts: dict[bool, list[str]] = {True: [], False: []}
    for word, stem in words:
        end = "stem" if stem else ("free" if _spaceless(word[-1]) else "bounded")
        bounded_start = not _spaceless(word[0])
        root = tries.setdefault((bounded_start, end), _Node())
        # "ß" matches "ß", "ẞ" and "ss"; IGNORECASE does the rest of the case folding
        for form in {unicodedata.normalize("NFC", f) for f in (word.lower(), word.casefold())}:
            firsts[bounded_start].append(form)
            node = root
            for ch in form:
                node = node.children.setdefault(ch, _Node())
            node.stem = node.stem or stem
            node.exact = True
    w = _word_class()
    suffix = {"stem": f"[{w}]*", "bounded": f"(?![{w}])", "free": ""}
    alts = []
    for bounded_start in (True, False):
        ends = [
            f"(?:{_trie_regex(root)}){suffix[end]}"
            for (start, end), root in sorted(tries.items())
            if start == bounded_start
        ]
        if ends:
            boundary = f"(?<![{w}])" if bounded_start else ""
            first = _first_chars(firsts[bounded_start])
            alts.append(f"(?=[{first}]){boundary}(?:{'|'.join(ends)})")
    return re.compile("|".join(alts), re.IGNORECASE)


_SENTENCE_END = ".?!…。？！।॥"
_AFTER_FIRST = re.compile(r"[,;:.?!…。？！।॥]*\s*")  # what a sentence's first word takes along
_PUNCTUATION = ",;:.?!…"


def _masked(m: re.Match[str]) -> str:
    return "".join("" if _is_mark(ch) else "*" for ch in m.group())


class ProfanityFilter:
    """Masks or removes the words of the list in caption text. Immutable and thread-safe:
    one filter serves every caption board of the daemon."""

    def __init__(self, mode: str, extra_words: Iterable[str] = ()) -> None:
        """``mode``: mask, remove or off. ``extra_words``: more words, as in a
        ``profanity_words`` file (``*`` at the end = any ending); ValueError for a bad one."""
        if mode not in MODES:
            raise ValueError(f"profanity mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.extra_words = tuple(extra_words)
        entries = [_entry(word) for word in (*BUILTIN_WORDS, *self.extra_words)]
        self._pattern = None if mode == "off" else _compile(entries)

    @classmethod
    def load(cls, mode: str, words_file: Path | None = None) -> ProfanityFilter:
        """The filter for ``[daemon] profanity`` and ``profanity_words`` (None: none);
        ProfanityWordsError for a file that cannot be used."""
        return cls(mode, load_words(words_file) if words_file is not None else ())

    def apply(self, text: str, language: str | None = None) -> str:
        """``text`` with the listed words masked or removed.

        ``language`` is the text's language code, or None. It does not choose the words:
        the whole list applies to text in any language (an English swear word in a German
        talk is still one). Text that is not NFC is returned normalised to NFC.
        """
        if self._pattern is None or not text:
            return text
        if not text.isascii() and not unicodedata.is_normalized("NFC", text):
            text = unicodedata.normalize("NFC", text)
        if self.mode == "mask":
            return self._pattern.sub(_masked, text)
        return self._removed(text)

    def _removed(self, text: str) -> str:
        assert self._pattern is not None
        out = ""
        pos = 0
        for m in self._pattern.finditer(text):
            out += text[pos : m.start()]
            before = out.rstrip()
            if not before or before[-1] in _SENTENCE_END:
                # it starts a sentence: its punctuation and the space after it go with it
                after = _AFTER_FIRST.match(text, m.end())
                pos = after.end() if after else m.end()
                continue
            out = before  # the space before the word goes with it
            pos = m.end()
            if out[-1] in ",;:" and text[pos : pos + 1] and text[pos] in _PUNCTUATION:
                out = out[:-1]  # "oh, shit." → "oh." (not "oh,.")
        if pos == 0:
            return text  # nothing found
        out += text[pos:]
        return out if any(ch.isalnum() for ch in out) else ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProfanityFilter):
            return NotImplemented
        return (self.mode, self.extra_words) == (other.mode, other.extra_words)

    def __hash__(self) -> int:
        return hash((self.mode, self.extra_words))

    def __repr__(self) -> str:
        return f"ProfanityFilter({self.mode!r}, {len(self.extra_words)} extra words)"
