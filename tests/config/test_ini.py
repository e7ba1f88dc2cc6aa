from edgecap.config.ini import parse_ini


def test_sections_keys_comments_quotes_and_continuations():
    ini = parse_ini(
        '\ufeff# top comment\n[audio]\nDevice = "USB Audio"\n'
        "; another comment\nsource=alsa\n[soniox]\nterms = one,\n  two\n"
        "  # an indented comment\n  three\n",
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


def test_only_a_whole_line_is_a_comment():
    """Issue 11 (6): `title = Council meeting #5` was cut to `Council meeting`."""
    ini = parse_ini(
        "[x]\ntitle = Council meeting #5\nnote = a ; b\ncolor = #ffcc00\n"
        "terms = one #1,\n  two ;2\n  # a comment, not an item\n  ; nor this\n",
        "t.ini",
    )
    assert ini.errors == []
    keys = ini.sections["x"]
    assert keys["title"].text == "Council meeting #5"
    assert keys["note"].text == "a ; b"
    assert keys["color"].text == "#ffcc00"
    assert keys["terms"].text == "one #1,\ntwo ;2"


def test_lines_end_only_at_newline():
    """splitlines() also broke lines at \\x0c, \\x1c, \\x85 and \\u2028: a value with one of
    them was cut in two and the line numbers were wrong."""
    ini = parse_ini("[x]\r\na = 1\u2028b\x85c\x0cd\r\nb = 2\n", "t.ini")
    assert ini.errors == []
    assert ini.sections["x"]["a"].text == "1\u2028b\x85c\x0cd"
    assert ini.sections["x"]["b"].line == 3


def test_a_file_of_garbage_gives_a_bounded_list_of_errors():
    ini = parse_ini("garbage\n" * 10_000, "t.ini")
    assert len(ini.errors) == 51
    assert ini.errors[-1] == "t.ini: 9950 more problems in this file not shown"
