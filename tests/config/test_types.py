import re
from pathlib import Path

import pytest

from edgecap.config.types import (
    Bool,
    ChannelValue,
    Choice,
    Duration,
    Float,
    Int,
    IntChoice,
    ListOf,
    PathValue,
    Secret,
    Size,
    Str,
    format_duration,
)

BASE = Path("/etc/edgecap")


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("0", 0),
        ("500ms", 0.5),
        ("30s", 30),
        ("2m", 120),
        ("1h", 3600),
        ("1.5s", 1.5),
        (" 20 ms ", 0.02),
    ],
)
def test_duration_units(raw, seconds):
    assert Duration().parse(raw, BASE) == pytest.approx(seconds)


def test_duration_without_unit_suggests_one():
    with pytest.raises(ValueError, match=r"needs a unit: write '600ms' or '600s'"):
        Duration().parse("600", BASE)


def test_duration_range_is_reported_in_durations():
    with pytest.raises(ValueError, match=r"between 60ms and 10s, not 20s"):
        Duration(min=0.06, max=10).parse("20s", BASE)


@pytest.mark.parametrize("seconds", [0, 0.02, 0.3, 1, 1.5, 30, 60, 120, 3600, 5400])
def test_duration_format_round_trips(seconds):
    assert Duration().parse(format_duration(seconds), BASE) == pytest.approx(seconds)


def test_int_range_and_garbage():
    assert Int(min=0, max=3).parse(" 2 ", BASE) == 2
    with pytest.raises(ValueError, match="between 0 and 3, not 7"):
        Int(min=0, max=3).parse("7", BASE)
    with pytest.raises(ValueError, match="whole number"):
        Int().parse("2.5", BASE)


def test_bool_words():
    b = Bool()
    assert [b.parse(w, BASE) for w in ("yes", "On", "TRUE", "1")] == [True] * 4
    assert [b.parse(w, BASE) for w in ("no", "off", "False", "0")] == [False] * 4
    with pytest.raises(ValueError, match="yes or no"):
        b.parse("maybe", BASE)


def test_choice_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'soniox'"):
        Choice("soniox", "azure", "local").parse("sonix", BASE)
    assert Choice("a", "b").parse(" B ", BASE) == "b"


def test_relative_path_is_taken_from_the_config_files_directory():
    assert PathValue().parse("audio/demo.wav", Path("/srv/cfg")) == Path("/srv/cfg/audio/demo.wav")
    assert PathValue().parse("/abs.wav", Path("/srv/cfg")) == Path("/abs.wav")
    assert PathValue().parse("", BASE) is None
    assert PathValue(allow_stdin=True).parse("-", BASE) == Path("-")


def test_list_reports_the_bad_item():
    assert ListOf(Int()).parse("1, 2\n3", BASE) == (1, 2, 3)
    with pytest.raises(ValueError, match="item 'x' must be a whole number"):
        ListOf(Int()).parse("1, x", BASE)


def test_channel():
    assert ChannelValue().parse("mix", BASE) is None
    assert ChannelValue().parse("1", BASE) == 1
    with pytest.raises(ValueError):
        ChannelValue().parse("left", BASE)


def test_secret_refuses_an_inline_key_without_repeating_it():
    with pytest.raises(ValueError) as info:
        Secret().parse("sk-live-0123456789abcdef", BASE)
    assert "sk-live" not in str(info.value)
    assert "credential:NAME" in str(info.value)


def test_secret_sources_in_order_and_relative_files():
    ref = Secret().parse("credential:k env:K file:keys/k.txt", Path("/etc/edgecap"))
    assert ref.sources == ("credential:k", "env:K", "file:/etc/edgecap/keys/k.txt")


def test_size_mode_colour_url_language_pair():
    from edgecap.config.types import Color, FileMode, LanguageCode, Pair, Size, Url

    here = Path(".")
    assert Size().parse("64K", here) == 65536 and Size().parse("10M", here) == 10 * 1024**2
    assert Size().format(10 * 1024**2) == "10M"
    with pytest.raises(ValueError, match="size like"):
        Size().parse("10 parsecs", here)
    with pytest.raises(ValueError, match="at least 4K"):
        Size(min=4096).parse("1K", here)
    assert FileMode().parse("0660", here) == 0o660 and FileMode().format(0o640) == "0640"
    with pytest.raises(ValueError, match="octal"):
        FileMode().parse("0999", here)
    assert Color().parse("ffcc00", here) == (255, 204, 0)
    assert Color().parse("#ffcc00", here) == (255, 204, 0)  # only whole lines are comments
    with pytest.raises(ValueError, match="hex colour"):
        Color().parse("#ffcc0", here)
    assert Url(("wss",)).parse("wss://h:1/p", here) == "wss://h:1/p"
    with pytest.raises(ValueError, match="wss://"):
        Url(("wss",)).parse("ws://h/p", here)
    with pytest.raises(ValueError, match="user name or password") as info:
        Url(("http",)).parse("http://bob:hunter2@proxy:3128", here)
    assert "hunter2" not in str(info.value)
    assert Url(("http",), optional=True).parse("", here) is None
    assert LanguageCode().parse("pt-BR", here) == "pt-BR"
    with pytest.raises(ValueError, match="language code"):
        LanguageCode().parse("English", here)
    assert Pair().parse("domain = medicine", here) == ("domain", "medicine")
    with pytest.raises(ValueError, match="key=value"):
        Pair().parse("medicine", here)


# Issue 11: whatever the text, a type raises ValueError (a config error), nothing else.


@pytest.mark.parametrize(
    ("type_", "raw", "problem"),
    [
        (Duration(min=1, max=86400), "9" * 400 + "s", "1s to 24h, not a number of 400 digits"),
        (Duration(), "9" * 400 + ".5ms", "must be a duration, not a number of 400 digits"),
        (Int(), "9" * 30, "not a number of 30 digits"),
        (Float(), "1e999", "too large"),
        (Float(), "9" * 400, "too large"),
        (Size(min=4096), "9" * 5000 + "K", "at least 4K, not a number of 5000 digits"),
        (IntChoice((10, 20)), "²", "must be one of 10, 20, not '²'"),
        (ChannelValue(), "²", "must be 'mix' or a channel number"),
        (Int(), "١٢", "must be a whole number"),
    ],
)
def test_huge_and_odd_numbers_are_config_errors(type_, raw, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        type_.parse(raw, BASE)


def test_format_duration_never_raises():
    assert format_duration(float("inf")) == "infs"
    assert format_duration(float("nan")) == "nans"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("~nosuchuser-edgecap/ca.pem", "names the home of an unknown user ('~nosuchuser-edgecap')"),
        ("/" + "a" * 5000, "is too long for a path (5001 bytes, at most 4095)"),
        ("/srv/" + "b" * 300 + "/x", "has a name of 300 bytes in it (at most 255)"),
        ("/tmp/a\x1b[2Jb", "must be a path without control characters"),
        ("/tmp/a\nb", "must be a path without control characters"),
        ("/tmp/a\x00b", "NUL"),
    ],
)
def test_paths_the_kernel_would_refuse_are_config_errors(raw, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        PathValue(must_exist=True).parse(raw, BASE)


def test_a_path_of_exactly_the_limits_is_accepted():
    name = "n" * 255
    assert PathValue().parse(f"/{name}", BASE) == Path(f"/{name}")


def test_secret_sources_refuse_control_characters_and_odd_names():
    for raw, problem in [
        ("file:/tmp/a\x00b", "file: names must not contain control characters"),
        ("env:A\x1bB", "env: names must not contain control characters"),
        ("credential:../../etc/shadow", "a credential name is a plain name"),
        ("file:/" + "k" * 300, "has a name of 300 bytes"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            Secret().parse(raw, BASE)


def test_text_refuses_control_characters_and_joins_continuation_lines():
    assert Str().parse("Council\nmeeting  #5", BASE) == "Council meeting  #5"
    assert Str().parse("a\tb", BASE) == "a\tb"
    for raw in ("a\x1b[31mb", "a\rb", "a\x00", "a\u2028b", "a\x85b"):
        with pytest.raises(ValueError, match="control characters"):
            Str().parse(raw, BASE)


def test_error_messages_quote_values_with_their_controls_escaped():
    with pytest.raises(ValueError) as info:
        Choice("a", "b").parse("x\x1b]0;owned\x07", BASE)
    assert "\x1b" not in str(info.value) and "\x07" not in str(info.value)
    assert "x\\x1b]0;owned\\x07" in str(info.value)


def test_url_refuses_spaces_and_controls():
    from edgecap.config.types import Url

    for raw in ("wss://h/a b", "wss://h/\x00", "wss://h\r\nX: 1/"):
        with pytest.raises(ValueError, match="not a valid URL"):
            Url(("wss",)).parse(raw, BASE)


def test_comma_lists_also_split_at_line_ends():
    terms = ListOf(Str(allow_empty=False), commas_only=True)
    assert terms.parse("Ana Ruiz,\nPi Zero\nZürich", BASE) == ("Ana Ruiz", "Pi Zero", "Zürich")


@pytest.mark.parametrize(
    ("raw", "seconds"), [("0.1m", 6.0), ("0.3s", 0.3), ("300ms", 0.3), ("1.1h", 3960.0)]
)
def test_durations_are_computed_exactly(raw, seconds):
    """0.1m was 6.000000000000001 s, printed by `edgecap config` as 6s: not the same config."""
    value = Duration().parse(raw, BASE)
    assert value == seconds
    assert Duration().parse(format_duration(value), BASE) == value


def test_float_format_keeps_every_digit():
    """{:g} printed 1.2345678 as 1.23457: `edgecap config` changed the value."""
    assert Float().parse(Float().format(1.2345678), BASE) == 1.2345678
