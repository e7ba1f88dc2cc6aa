"""The roll-up layout shared by screen, console and LCDs."""

from __future__ import annotations

import pytest

from edgecap.captions.events import CaptionLine
from edgecap.outputs.rollup import CaptionLines, Row, cell_width, layout, wrap


def line(seq, text, translation="", final=True):
    return CaptionLine(seq, text, translation, None, None, None, None, None, final, final)


def test_wrap_at_spaces_and_cut_overlong_words():
    assert wrap("the quick brown fox jumps", 10) == ["the quick", "brown fox", "jumps"]
    assert wrap("abcdefghijklmnop xy", 6) == ["abcdef", "ghijkl", "mnop", "xy"]
    assert wrap("", 5) == []
    with pytest.raises(ValueError):
        wrap("x", 0)


def test_wrap_counts_wide_characters_and_breaks_between_them():
    assert cell_width("日本語") == 6 and cell_width("नमस्ते") < 6
    assert wrap("日本語のテキスト", 6) == ["日本語", "のテキ", "スト"]
    assert all(cell_width(r) <= 6 for r in wrap("日本語 mixed text のテキスト", 6))


def test_layout_is_bottom_aligned_with_translation_below_its_line():
    lines = [line(1, "first line"), line(2, "second", "segundo"), line(3, "third", final=False)]
    rows = layout(lines, rows=3, width=20)
    assert rows == [
        Row("second", "final", 2),
        Row("segundo", "translation", 2),
        Row("third", "provisional", 3),
    ]
    assert [r.text for r in layout(lines, 10, 20, show="translation")] == ["segundo"]
    assert [r.text for r in layout(lines, 10, 20, show="original")] == [
        "first line",
        "second",
        "third",
    ]


def test_caption_lines_update_in_place_and_forget_old_ones():
    cl = CaptionLines(keep=2)
    assert cl.apply(line(1, "a", final=False))
    assert not cl.apply(line(1, "a", final=False))  # no change
    assert cl.apply(line(1, "a b"))
    assert cl.apply(line(2, "c"))
    assert cl.apply(line(3, "d"))
    assert [x.seq for x in cl.lines()] == [2, 3]
    assert not cl.apply(line(1, "late update"))  # scrolled away long ago
    assert not cl.apply(line(4, "", final=False))  # nothing to show
    assert cl.apply(line(4, "e", final=False))
    assert cl.apply(line(4, "", final=True))  # withdrawn
    assert [x.seq for x in cl.lines()] == [3]


def test_offline_lines_begin_with_the_mark_when_one_is_given():
    from dataclasses import replace

    lines = [line(1, "cloud words"), replace(line(2, "offline words here"), offline=True)]
    rows = layout(lines, rows=5, width=12, offline_mark="≈ ")
    assert [r.text for r in rows] == ["cloud words", "≈ offline", "words here"]
    # service = local: every line is offline, and no mark is given
    assert [r.text for r in layout(lines, 5, 12)] == ["cloud words", "offline", "words here"]
