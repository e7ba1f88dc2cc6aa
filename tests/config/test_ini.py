from edgecap.config.ini import parse_ini


def test_sections_keys_comments_quotes_and_continuations():
    ini = parse_ini(
        '\ufeff# top comment\n[audio]\nDevice = "USB Audio"  # the desk mic\n'
        "; another comment\nsource=alsa\n[soniox]\nterms = one,\n  two\n  three\n",
        "t.ini",
    )
    assert ini.errors == []
    assert ini.sections["audio"]["device"].text == "USB Audio"
    assert ini.sections["audio"]["device"].line == 3
    assert ini.sections["audio"]["source"].text == "alsa"
    assert ini.sections["soniox"]["terms"].text == "one,\ntwo\nthree"


def test_every_syntax_problem_is_reported_with_its_line():
    ini = parse_ini(
        "orphan = 1\n[audio\n[audio]\nsource = alsa\nsource = wav\njust some words\n"
        "bad key! = 3\n[gate]\nenabled = yes\n",
        "t.ini",
    )
    assert ini.errors == [
        "t.ini:1: key 'orphan' is outside any section; put a [section] header above it",
        "t.ini:2: a section header must end with ']'",
        "t.ini:5: audio.source: set twice in this file (first on line 4)",
        "t.ini:6: cannot read this line: expected 'key = value', '[section]' or a comment "
        "starting with #",
        "t.ini:7: a key name has only letters, digits, '_' and '-'",
    ]
    # What could be parsed still is: errors do not hide the rest of the file.
    assert ini.sections["gate"]["enabled"].text == "yes"


def test_a_pasted_key_on_its_own_line_is_not_echoed():
    ini = parse_ini("[soniox]\nsk_live_abcdef0123456789\n", "t.ini")
    assert len(ini.errors) == 1
    assert "sk_live" not in ini.errors[0]
