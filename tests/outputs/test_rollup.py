"""The roll-up layout shared by screen, console and LCDs."""

from __future__ import annotations

import pytest

from edgecap.captions.events import CaptionLine
from edgecap.outputs.rollup import (
    CaptionLines,
    Row,
    cell_width,
    choose_translations,
    layout,
    wrap,
)


def line(seq, text, translation="", final=True, **translations):
    """A caption line; ``translation`` is its Spanish one, ``translations`` others."""
    return CaptionLine(
        seq=seq,
        text=text,
        speaker=None,
        language="en",
        start=None,
        end=None,
        final=final,
        translation_final=final,
        translations=({"es": translation} if translation else {}) | translations,
    )


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
        Row("segundo", "translation", 2, "es"),
        Row("third", "provisional", 3),
    ]
    assert [r.text for r in layout(lines, 10, 20, show="translation")] == ["segundo"]
    assert [r.text for r in layout(lines, 10, 20, show="original")] == [
        "first line",
        "second",
        "third",
    ]


def test_translations_stack_under_their_line_in_order_each_on_its_own_rows():
    lines = [line(1, "good morning", "buenos días", de="guten Morgen", hi="सुप्रभात")]
    rows = layout(lines, rows=10, width=12)
    assert [(r.text, r.style, r.language, r.order) for r in rows] == [
        ("good morning", "final", "", 0),
        ("buenos días", "translation", "es", 0),
        ("guten Morgen", "translation", "de", 1),
        ("सुप्रभात", "translation", "hi", 2),
    ]
    # a chosen list: only those languages, in that order (case does not matter)
    rows = layout(lines, 10, 12, languages=("HI", "de"))
    assert [(r.text, r.language, r.order) for r in rows] == [
        ("good morning", "", 0),
        ("सुप्रभात", "hi", 0),
        ("guten Morgen", "de", 1),
    ]
    assert "buenos días" not in [r.text for r in rows]
    # at most two of them; a long one wraps on rows of its own
    rows = layout(lines, 10, 8, show="translation", max_translations=2)
    assert [(r.text, r.language) for r in rows] == [
        ("buenos", "es"),
        ("días", "es"),
        ("guten", "de"),
        ("Morgen", "de"),
    ]


def test_choose_translations_skips_languages_the_line_lacks_and_empty_texts():
    tr = {"de": "hallo", "fr": "", "hi": "नमस्ते"}
    assert choose_translations(tr) == [("de", "hallo"), ("hi", "नमस्ते")]
    assert choose_translations(tr, ("fr", "ja", "hi", "hi")) == [("hi", "नमस्ते")]
    assert choose_translations(tr, (), limit=1) == [("de", "hallo")]
    assert choose_translations({}, ("de",)) == []


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


def test_a_line_with_translations_only_is_shown_not_withdrawn():
    cl = CaptionLines()
    assert cl.apply(line(1, "", de="nur die Übersetzung"))  # a translation-only service
    assert [r.text for r in layout(cl.lines(), 5, 40)] == ["nur die Übersetzung"]
    assert cl.apply(line(1, "", de=""))  # nothing left to show: withdrawn
    assert len(cl) == 0
