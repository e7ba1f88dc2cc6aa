"""Indic scripts in Latin letters for Latin-only serial devices (docs/scripts.md): known
words of the nine scripts, the silent inherent vowel, nasals, nukta letters, clusters
spelled as they sound; Latin and other text untouched; any Indic text comes out as plain
ASCII; and the once-only note in the log."""

from __future__ import annotations

import logging
import string
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgecap.outputs.serial.transliterate import TransliterationNote, has_indic, to_latin

WORDS = {
    "Devanagari": [
        ("नमस्ते, आप कैसे हैं?", "namaste, aap kaise hain?"),
        ("आज हम नई योजना पर बात करेंगे।", "aaj ham nai yojnaa par baat karenge."),
        ("कलकत्ता", "kalkattaa"),  # the inherent vowel between l and k is not said
        ("मित्र धर्म क्षत्रिय", "mitra dharma kshatriya"),  # kept after a conjunct, in -iya
        ("ज्ञान", "gyaan"),
        ("कृष्ण हृदय", "krishna hriday"),
        ("हिंदी संगम हाँ", "hindi sangam haan"),  # anusvara before d, g; candrabindu
        ("ऑफ़लाइन क़िला ज़रूर", "oflaain qilaa zarur"),  # nukta: f, q, z
    ],
    "Bengali": [
        ("আমার সোনার বাংলা", "amar sonar bangla"),  # ā is a; the inherent vowel is o
        ("কলকাতা", "kolkata"),
        ("ধন্যবাদ", "dhonyobad"),  # য after a virama is y
        ("সময় যদি", "somoy jodi"),  # য় is y, য is j
        ("বিজ্ঞান", "bigyan"),
        ("অনুবাদ ঐক্য নৌকা", "onubad oikyo nouka"),  # অ is o; ঐ ৌ are oi, ou
    ],
    "Gurmukhi": [
        ("ਸਤ ਸ੍ਰੀ ਅਕਾਲ", "sat sri akaal"),
        ("ਪੰਜਾਬੀ", "panjaabi"),  # tippi
        ("ਸੱਤ", "satt"),  # addak doubles the next consonant
    ],
    "Gujarati": [
        ("નમસ્તે", "namaste"),
        ("ગુજરાત", "gujraat"),
        ("કેમ છો", "kem chho"),
    ],
    "Odia": [
        ("ଓଡ଼ିଆ", "oria"),
        ("ନମସ୍କାର", "namaskara"),  # the inherent vowel is said in Odia
        ("ଧନ୍ୟବାଦ", "dhanyabada"),
        ("ଏବଂ", "ebang"),
    ],
    "Tamil": [
        ("வணக்கம்", "vanakkam"),
        ("காலை வணக்கம்", "kaalai vanakkam"),
        ("தமிழ்", "thamizh"),
        ("நன்றி", "nandri"),  # ன்ற as it sounds
        ("வெற்றி", "vettri"),  # ற்ற as it sounds
    ],
    "Telugu": [
        ("తెలుగు", "telugu"),
        ("నమస్కారం", "namaskaaram"),  # anusvara at the end: m
        ("ధన్యవాదాలు", "dhanyavaadaalu"),
    ],
    "Kannada": [
        ("ಕನ್ನಡ", "kannada"),
        ("ನಮಸ್ಕಾರ", "namaskaara"),
        ("ಕಾರ್ಯಕ್ರಮ", "kaaryakrama"),
    ],
    "Malayalam": [
        ("മലയാളം", "malayaalam"),
        ("കേരളം", "keralam"),
        ("എന്റെ", "ente"),  # ന്റ as it sounds
        ("എല്ലാവർക്കും", "ellaavarkkum"),  # chillu r
    ],
}


@pytest.mark.parametrize("script", sorted(WORDS))
def test_known_words_in_each_script(script):
    for text, latin in WORDS[script]:
        assert has_indic(text)
        assert to_latin(text) == latin, text


def test_latin_and_other_text_is_untouched():
    for text in ("Good morning, everyone.", "Café — naïve 42 €", "مرحبا", "字幕", ""):
        assert not has_indic(text)
        assert to_latin(text) is text
    # decomposed Latin next to Indic text stays decomposed: only the Indic text is touched
    assert to_latin("Cafe\u0301 नमस्ते") == "Cafe\u0301 namaste"


def test_mixed_text_keeps_its_latin_digits_and_punctuation():
    assert to_latin("मैं Soniox से ४२ बार मिला।") == "main Soniox se 42 baar milaa."
    assert to_latin("Meeting at 10: வணக்கம்!") == "Meeting at 10: vanakkam!"
    assert to_latin("सभी को सुप्रभात। Good morning") == "sabhi ko suprabhaat. Good morning"


def test_composed_and_decomposed_letters_spell_the_same():
    # क़ as one code point and as क + nukta; ো as one and as ে + া
    assert to_latin("\u0958") == to_latin("\u0915\u093c") == "qa"
    assert to_latin("\u09b8\u09cb\u09a8\u09be") == to_latin("\u09b8\u09c7\u09be\u09a8\u09be")
    assert to_latin("\u09b8\u09cb\u09a8\u09be") == "sona"


def test_joiners_and_half_forms_add_nothing():
    assert to_latin("क्\u200dष") == to_latin("क्ष") == "ksha"
    assert to_latin("न्\u200cह") == "nha"


ASCII_AND_SPACE = string.ascii_letters + string.digits + " ,.?!"


@given(
    st.text(
        alphabet=st.one_of(
            st.characters(min_codepoint=0x0900, max_codepoint=0x0D7F),
            st.sampled_from(ASCII_AND_SPACE),
        ),
        max_size=40,
    )
)
def test_any_indic_text_becomes_plain_ascii(text):
    latin = to_latin(text)
    assert all(" " <= ch <= "~" for ch in latin), (text, latin)
    assert not has_indic(latin)


@given(st.text(max_size=40))
def test_text_without_indic_letters_is_returned_as_it_is(text):
    if not has_indic(text):
        assert to_latin(text) is text
    else:
        assert not has_indic(to_latin(text))


def test_every_letter_of_the_nine_scripts_has_a_spelling():
    """Every consonant and vowel letter the Unicode database names in the nine blocks
    (but those of Vedic or historical use) spells as something."""
    missing = []
    for cp in range(0x0900, 0x0D80):
        ch = chr(cp)
        name = unicodedata.name(ch, "")
        if " LETTER " not in name or "VEDIC" in name or "ARCHAIC" in name:
            continue
        if any(word in name for word in ("VOCALIC", "GLOTTAL", "HEAVY", "INVERTED")):
            continue
        if not to_latin(ch).strip():
            missing.append(f"U+{cp:04X} {name}")
    assert missing == []


def test_the_note_is_logged_once_per_output(caplog):
    note = TransliterationNote("serial encoder")
    with caplog.at_level(logging.INFO, logger="edgecap.outputs.serial.transliterate"):
        assert note.check("Good morning") is False
        assert note.check("नमस्ते") is True
        assert note.check("வணக்கம்") is True
    assert note.count == 2
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        "serial encoder: Indic text transliterated to Latin letters (the device cannot show "
        "Indic scripts; see docs/scripts.md)"
    ]
