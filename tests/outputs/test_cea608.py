"""The character maps of caption encoders (CEA-608 basic set) and character LCDs."""

from __future__ import annotations

from edgecap.outputs.serial.cea608 import ascii_spelling, to_cea608, to_lcd


def test_the_nine_608_letters_go_at_their_608_positions():
    assert to_cea608("á é í ó ú ç ÷ Ñ ñ") == (b"\x2a \x5c \x5e \x5f \x60 \x7b \x7c \x7d \x7e", 0)


def test_ascii_that_608_shows_as_letters_is_never_sent_as_is():
    data, dropped = to_cea608("a*b\\c^d_e`f{g}h|i~j")
    assert data == b"a-b/cd e'f(g)h/i-j"
    assert dropped == 0
    assert not set(data) & set(b"*\\^_`{|}~")


def test_other_accents_are_transliterated_and_typography_made_plain():
    data, dropped = to_cea608("Crème brûlée “naïve” — Zoë’s café… Łódź straße Øre")
    # è û ë ï are not in the basic set: plain letters; é (0x5C) and ó (0x5F) are.
    assert data == b'Creme brul\x5ce "naive" - Zoe\'s caf\x5c... L\x5fdz strasse Ore'
    assert dropped == 0


def test_indic_scripts_are_transliterated_other_scripts_dropped_and_counted():
    data, dropped = to_cea608("नमस्ते world 你好 ४२")
    # Devanagari in Latin letters (transliterate.py); 你 好 have no 608 form; ४२ → 42.
    assert data == b"namaste world 42"
    assert dropped == 2
    assert to_cea608("வணக்கம் ñ", uppercase=True) == (b"VANAKKAM \x7d", 0)
    assert to_lcd("আমার সোনার বাংলা | 你") == ("amar sonar bangla /", 1)


def test_controls_never_reach_the_encoder_and_spaces_collapse():
    data, dropped = to_cea608("a\x03b\x01c\td  e\u00a0f")
    assert data == b"abc d e f"
    assert dropped == 2  # Ctrl-C and Ctrl-A: they would end or start encoder commands


def test_uppercase_keeps_the_608_capital_enye_and_spells_eszett():
    assert to_cea608("señor, straße", uppercase=True) == (b"SE\x7dOR, STRASSE", 0)
    assert to_cea608("él", uppercase=True) == (b"EL", 0)  # É is not in the basic set


def test_every_output_byte_is_printable_608():
    sample = "".join(chr(c) for c in range(0x20, 0x3000))
    data, _ = to_cea608(sample)
    assert all(0x20 <= b <= 0x7E for b in data)
    data, _ = to_cea608(sample, uppercase=True)
    assert all(0x20 <= b <= 0x7E for b in data)


def test_lcd_text_avoids_the_serlcd_command_byte_and_rom_a00_oddities():
    assert to_lcd("a|b\\c~d café ñ 你") == ("a/b/c-d cafe n", 1)


def test_ascii_spelling():
    assert ascii_spelling("é") == "e"
    assert ascii_spelling("ﬁ") == "fi"
    assert ascii_spelling("\u0301") == ""  # a combining accent belongs to its letter
    assert ascii_spelling("α") is None
    assert ascii_spelling("€") == "EUR"
