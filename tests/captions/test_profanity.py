"""ProfanityFilter: the built-in list and its innocent neighbours, the three modes,
punctuation, case, Unicode words from a file, stems, file errors and speed."""

from __future__ import annotations

import re
import time
import unicodedata
from pathlib import Path

import pytest

from edgecap.captions.profanity import (
    BUILTIN_WORDS,
    ProfanityFilter,
    ProfanityWordsError,
    _marks,
    load_words,
)

MASK = ProfanityFilter("mask")
REMOVE = ProfanityFilter("remove")


def stars(word: str) -> str:
    return "*" * len(word)


# --- the built-in list ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "word",
    [
        "fuck",
        "fucking",
        "fucked",
        "Motherfucker",
        "clusterfuck",
        "shit",
        "bullshit",
        "shithead",
        "cunt",
        "twat",
        "bitch",
        "bitches",
        "bastard",
        "whore",
        "slut",
        "dick",
        "dickhead",
        "cocksucker",
        "arsehole",
        "asshole",
        "dumbass",
        "wanker",
        "bollocks",
        "pissed",
        "goddamn",
        "nigger",
        "faggot",
        "spic",
    ],
)
def test_a_word_of_the_list_is_masked_letter_for_letter(word):
    assert MASK.apply(f"you {word} there") == f"you {stars(word)} there"


@pytest.mark.parametrize(
    "text",
    [
        "the assistant in class came from Essex to pass the bass",
        "an assassin on the cockpit of the cockatoo",
        "Dickens wrote it in Dickensian London",
        "the penis, the vagina and anal fissures",  # a clinic's words
        "Scunthorpe, Cuntis, Bitche, Twatt, Slutsk, Wankie and Shittim",  # places
        "shiitake and spice, a spick and span dagoba",
        "a pussy cat, a cock crowing, a blue tit, a bloody nose, hell and damnation",
        "a bastardised version of the method",
        "what the **** is this",  # Azure's masked text: stars are no word
    ],
)
def test_innocent_words_and_names_are_left_alone(text):
    assert MASK.apply(text) == text
    assert REMOVE.apply(text) == text


def test_the_builtin_list_is_well_formed_and_left_out_words_stay_out():
    ProfanityFilter("mask", ())  # every built-in entry is validated when a filter is made
    stems = {w.removesuffix("*") for w in BUILTIN_WORDS}
    for innocent in ("ass", "cock", "pussy", "tit", "penis", "vagina", "anal", "hell", "damn"):
        assert innocent not in stems
    # a bare prefix would reach innocent words or places
    for no_prefix in ("ass*", "cock*", "dick*", "shit*", "cunt*", "bitch*", "twat*", "spic*"):
        assert no_prefix not in BUILTIN_WORDS


def test_whole_words_only_but_punctuation_and_apostrophes_are_boundaries():
    assert MASK.apply("shit's fine, (fuck) fuck-up ok") == "****'s fine, (****) ****-up ok"
    # letters, digits and _ continue a word: "shit" is not found in them
    assert MASK.apply("shit_it shit2 shitake") == "shit_it shit2 shitake"


def test_case_does_not_matter_and_the_case_of_the_rest_is_kept():
    assert MASK.apply("FUCK Fuck fUcK MotherFucking Hello") == "**** **** **** ************* Hello"


def test_a_stem_matches_any_ending_and_an_exact_word_only_itself():
    masked = MASK.apply("wanker wankers wankery wank wanks wanky")
    assert masked == "****** ******* ******* **** ***** wanky"


# --- modes ---------------------------------------------------------------------------------


def test_off_leaves_the_text_alone():
    text = "what the fuck"
    assert ProfanityFilter("off").apply(text) is text


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mask, remove, off"):
        ProfanityFilter("bleep")


@pytest.mark.parametrize(
    ("text", "removed"),
    [
        ("what the fuck is this", "what the is this"),
        ("what the fuck.", "what the."),  # the punctuation stays with the word before
        ("what the fuck?!", "what the?!"),
        ("oh, shit.", "oh."),  # not "oh,."
        ("oh, fuck, no", "oh, no"),
        ("Shit, it broke.", "it broke."),  # a sentence's first word takes its comma along
        ("It broke. Fuck! Again.", "It broke. Again."),
        ("fucking bullshit", ""),  # nothing but removed words: an empty line
        ("Fuck!", ""),
        ("no swearing here.", "no swearing here."),
    ],
)
def test_remove_drops_the_word_and_closes_up_the_space(text, removed):
    assert REMOVE.apply(text) == removed


def test_a_clean_text_is_returned_as_it_is():
    text = "nothing to see here"
    assert MASK.apply(text) is text
    assert REMOVE.apply(text) is text


def test_the_language_does_not_choose_the_words():
    assert MASK.apply("das ist fucking gut", "de") == "das ist ******* gut"
    assert MASK.apply("fuck", None) == MASK.apply("fuck", "hi") == "****"


def test_filters_with_the_same_words_are_equal():
    assert ProfanityFilter("mask", ["a*"]) == ProfanityFilter("mask", ["a*"])
    assert hash(ProfanityFilter("mask")) == hash(ProfanityFilter("mask"))
    assert ProfanityFilter("mask") != ProfanityFilter("remove")
    assert ProfanityFilter("mask", ["a"]) != ProfanityFilter("mask", ["b"])


# --- words of any script, from a file ------------------------------------------------------

HINDI = """\
# Hindi words (a test list)
हरामी
कमीन*   # any ending: कमीना, कमीने, कमीनी

ना
कम
"""


@pytest.fixture
def hindi(tmp_path: Path) -> ProfanityFilter:
    path = tmp_path / "words.txt"
    path.write_text(HINDI, encoding="utf-8")
    return ProfanityFilter.load("mask", path)


def test_devanagari_words_from_a_file_are_masked_whole(hindi):
    # a mark (vowel sign) goes with its letter: हरामी = ह, रा, मी → three stars
    assert hindi.apply("वह हरामी है", "hi") == "वह *** है"
    assert hindi.apply("कमीना कमीने कमीनी!", "hi") == "*** *** ***!"
    assert hindi.apply("he is a हरामी", "en") == "he is a ***"  # any language


def test_a_vowel_sign_is_part_of_the_word(hindi):
    # "कम" is not found in "कमी" (the vowel sign ी continues it), "ना" not in "सीना"
    # (ी before न belongs to the same word); alone each is found
    assert hindi.apply("कमी सीना", "hi") == "कमी सीना"
    assert hindi.apply("ना कम", "hi") == "* **"


def test_devanagari_words_are_removed(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text(HINDI, encoding="utf-8")
    assert ProfanityFilter.load("remove", path).apply("वह हरामी है।") == "वह है।"


def test_a_word_of_a_script_without_spaces_is_found_inside_a_sentence():
    f = ProfanityFilter("mask", ["馬鹿", "バカ"])
    assert f.apply("这是馬鹿吗？お前はバカだ") == "这是**吗？お前は**だ"


def test_extra_words_fold_case_like_the_builtin_ones():
    f = ProfanityFilter("mask", ["Scheiße", "crétin*"])
    assert f.apply("Scheiße SCHEISSE scheisse") == "******* ******** ********"
    assert f.apply("CRÉTINS") == "*******"
    # text in decomposed form (e + combining accent) is matched as the word, in NFC
    assert f.apply(unicodedata.normalize("NFD", "un crétin")) == "un ******"


def test_the_word_class_holds_every_combining_mark():
    cls = re.compile(f"[{_marks()}]")
    marks = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c))[0] == "M"]
    assert all(cls.fullmatch(m) for m in marks)
    assert not cls.search("a.,!?।0 \u200b")


def test_a_words_file_allows_comments_blank_lines_and_a_bom(tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes("\ufeff# mine\n\n  frak*  # from a series\nsmeg\n".encode())
    assert load_words(path) == ("frak*", "smeg")
    f = ProfanityFilter.load("mask", path)
    assert f.apply("frakking smeg smegma") == "******** **** smegma"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ok\ncaf\xe9\n".encode("latin-1"), r"line 2: not UTF-8 text \(byte 0xe9\)"),
        (b"ok\nson of a bitch\n", "line 2: 'son of a bitch': one word per line"),
        (b"*\n", r"line 1: '\*': no word before the \*"),
        (b"f*ck\n", r"line 1: 'f\*ck': \* is special only at the end"),
        (b"ok\n-ing\n", "line 2: '-ing': a word is letters, digits and marks"),
        (b"x" * 65 + b"\n", "line 1: 'x+'…: longer than 64 characters"),
    ],
)
def test_a_bad_words_file_is_refused_with_its_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ProfanityWordsError, match=message) as info:
        ProfanityFilter.load("mask", path)
    assert str(path) in str(info.value)


def test_a_missing_or_unreadable_words_file_is_refused(tmp_path):
    with pytest.raises(ProfanityWordsError, match="cannot be read"):
        load_words(tmp_path / "missing.txt")
    with pytest.raises(ProfanityWordsError, match="cannot be read"):
        load_words(tmp_path)  # a directory


def test_a_huge_words_file_is_refused(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"word\n" * 250_000)
    with pytest.raises(ProfanityWordsError, match="larger than"):
        load_words(path)


def test_a_bad_extra_word_is_refused_by_the_constructor():
    with pytest.raises(ValueError, match="one word per line"):
        ProfanityFilter("mask", ["two words"])


# --- speed ---------------------------------------------------------------------------------


def test_apply_on_a_caption_line_takes_microseconds():
    line = (
        "And then the speaker said that the whole committee was, frankly, a bunch of "
        "fucking idiots who never read a single page of it"
    )
    assert len(line) >= 120
    for f in (MASK, REMOVE):
        best = min(_timed(f, line) for _ in range(5))
        assert best < 100e-6, f"{f.mode}: {best * 1e6:.1f} µs per line"


def _timed(f: ProfanityFilter, line: str, n: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(n):
        f.apply(line)
    return (time.perf_counter() - start) / n
