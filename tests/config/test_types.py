from pathlib import Path

import pytest

from edgecap.config.types import (
    Bool,
    ChannelValue,
    Choice,
    Duration,
    Int,
    ListOf,
    PathValue,
    Secret,
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
    with pytest.raises(ValueError, match="hex colour"):
        Color().parse("#ffcc00", here)  # '#' would start a comment in the INI
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
