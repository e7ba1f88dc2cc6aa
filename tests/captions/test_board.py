"""CaptionBoard: tokens in, caption lines out — rule by rule, then a property over random
streams shaped the way a service sends them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecap.captions.board import TRANSLATION_LIMIT, CaptionBoard
from edgecap.captions.events import AudioLoss, CaptionEvent, CaptionLine, SynthesizedAudio
from edgecap.captions.profanity import ProfanityFilter
from edgecap.captions.tokens import Token, TokenKind, TokenUpdate


def tok(
    text: str,
    final: bool = True,
    kind: TokenKind = "none",
    speaker: str | None = None,
    language: str | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    source_language: str | None = None,
) -> Token:
    return Token(text, final, kind, start_ms, end_ms, speaker, language, source_language)


def words(text: str, final: bool = True, **kw) -> tuple[Token, ...]:
    """' hello world' → (' hello', ' world'), every word a token."""
    return tuple(tok(" " + w, final, **kw) for w in text.split())


def line(
    seq: int,
    text: str,
    final: bool = False,
    translations: dict[str, str] | None = None,
    translation_final: bool = False,
    **kw,
) -> CaptionLine:
    fields: dict = {"speaker": None, "language": None, "start": None, "end": None}
    fields.update(kw)
    return CaptionLine(
        seq=seq,
        text=text,
        final=final,
        translation_final=translation_final,
        translations=translations or {},
        **fields,
    )


def make(**kw) -> tuple[CaptionBoard, list[CaptionEvent]]:
    events: list[CaptionEvent] = []
    return CaptionBoard(events.append, **kw), events


def U(*final: Token, provisional: tuple[Token, ...] = (), **flags) -> TokenUpdate:
    return TokenUpdate(final=final, provisional=provisional, **flags)


# --- spoken text ---------------------------------------------------------------------------


def test_finals_append_and_the_provisional_tail_is_replaced():
    board, events = make()
    board.update(U(provisional=(tok(" hel", False),)))
    board.update(U(tok(" hel"), tok("lo"), provisional=(tok(" wor", False),)))
    board.update(U(tok(" world"), provisional=()))
    assert events == [line(1, "hel"), line(1, "hello wor"), line(1, "hello world")]


def test_an_unchanged_line_and_an_empty_update_publish_nothing():
    board, events = make()
    board.update(U(tok(" hi"), provisional=(tok(" there", False),)))
    board.update(U(provisional=(tok(" there", False),)))
    board.update(TokenUpdate())
    assert events == [line(1, "hi there")]


def test_endpoint_closes_the_line_after_appending_the_finals():
    board, events = make()
    board.update(U(tok(" good"), provisional=(tok(" morn", False),)))
    board.update(U(tok(" morning"), endpoint=True))
    board.update(U(tok(" again")))
    assert events == [
        line(1, "good morn"),
        line(1, "good morning", final=True, translation_final=True),
        line(2, "again"),
    ]


def test_a_finalize_reply_closes_the_line():
    board, events = make()
    board.update(U(*words("one two")))
    board.update(U(finalized=True))
    board.update(U(finalized=True))  # nothing left to close
    assert events == [line(1, "one two"), line(1, "one two", final=True, translation_final=True)]


def test_a_provisional_tail_after_an_endpoint_opens_the_next_line():
    board, events = make()
    board.update(U(*words("yes"), endpoint=True, provisional=(tok(" and", False),)))
    assert events == [line(1, "yes", final=True, translation_final=True), line(2, "and")]


def test_a_speaker_change_starts_a_new_line():
    board, events = make()
    board.update(U(tok(" hi", speaker="1"), tok(" you", speaker="2"), tok(" there", speaker="2")))
    board.update(U(endpoint=True))
    assert events == [
        line(1, "hi", final=True, translation_final=True, speaker="1"),
        line(2, "you there", speaker="2"),
        line(2, "you there", final=True, translation_final=True, speaker="2"),
    ]


def test_a_token_without_a_speaker_is_not_a_speaker_change():
    board, events = make()
    board.update(U(tok(" hel", speaker="1"), tok("lo"), tok(" you", speaker="1")))
    board.update(U(tok(" all", speaker=None), tok(" there", speaker="2")))
    assert events == [
        line(1, "hello you", speaker="1"),
        line(1, "hello you all", final=True, translation_final=True, speaker="1"),
        line(2, "there", speaker="2"),
    ]


def test_a_language_change_is_not_a_break_and_the_majority_language_wins():
    board, events = make()
    board.update(
        U(tok(" hola", language="es"), tok(" my", language="en"), tok(" friend", language="en"))
    )
    assert events == [line(1, "hola my friend", language="en")]


def test_max_line_chars_breaks_before_the_word_that_would_overflow():
    board, events = make(max_line_chars=12)
    # " hel" "lo" is one word: the break comes before it, not inside it
    board.update(U(tok(" one"), tok(" two"), tok(" hel"), tok("lo"), tok(" x")))
    assert events == [
        line(1, "one two", final=True, translation_final=True),
        line(2, "hello x"),
    ]


def test_a_word_too_long_for_any_line_is_broken_at_the_hard_limit():
    board, events = make(max_line_chars=8)  # hard limit 10
    board.update(U(tok(" abc"), *(tok("defg") for _ in range(3))))
    assert events == [
        line(1, "abcdefg", final=True, translation_final=True),
        line(2, "defgdefg"),
    ]


def test_bare_space_tokens_mark_word_boundaries():
    board, events = make(max_line_chars=11)
    board.update(U(tok("How"), tok(" "), tok("are"), tok(" "), tok("you"), tok(" "), tok("doing")))
    assert events == [
        line(1, "How are you", final=True, translation_final=True),
        line(2, "doing"),
    ]


def test_a_sentence_end_breaks_a_long_enough_line_before_the_next_word():
    board, events = make()
    long = "this sentence is long enough to stand alone."
    board.update(U(*words(long)))
    assert events == [line(1, long)]  # the next word may still continue it ("3." "14")
    board.update(U(tok(" Next")))
    assert events[1:] == [line(1, long, final=True, translation_final=True), line(2, "Next")]


def test_a_sentence_end_does_not_break_a_short_line_or_a_number():
    board, events = make()
    board.update(U(*words("Short. Still one line."), tok(" the"), tok(" value"), tok(" is")))
    board.update(U(*words("roughly three point one four or"), tok(" 3."), tok("14")))
    assert [e.text for e in events] == [
        "Short. Still one line. the value is",
        "Short. Still one line. the value is roughly three point one four or 3.14",
    ]
    assert not any(e.final for e in events if isinstance(e, CaptionLine))


def test_cjk_sentences_break_without_spaces():
    board, events = make(max_line_chars=10)
    board.update(U(*(tok(c, language="zh") for c in "今天天气很好。我们去公园吧")))
    assert events == [
        line(1, "今天天气很好。我们去", final=True, translation_final=True, language="zh"),
        line(2, "公园吧", language="zh"),
    ]


def test_cjk_sentence_end_at_forty_chars():
    board, events = make()
    first = "一" * 39 + "。"
    board.update(U(*(tok(c) for c in first + "好")))
    assert events == [line(1, first, final=True, translation_final=True), line(2, "好")]


def test_capture_times_come_from_the_clock():
    board, events = make()
    clock = {0: 10.0, 300: 10.3, 400: 10.4, 800: 10.8}.get
    board.update(
        U(
            tok(" hi", start_ms=0, end_ms=300),
            provisional=(tok(" yo", False, start_ms=400, end_ms=800),),
        ),
        clock,
    )
    board.update(U(endpoint=True))
    assert events == [
        line(1, "hi yo", start=10.0, end=10.8),
        line(1, "hi", final=True, translation_final=True, start=10.0, end=10.3),
    ]


def test_a_clock_that_says_zero_is_a_time():
    board, events = make()
    board.update(U(provisional=(tok(" a", False, start_ms=0, end_ms=0),)), lambda ms: 0.0)
    assert events == [line(1, "a", start=0.0, end=0.0)]


def test_session_ended_drops_the_tail_and_keeps_the_line_open():
    board, events = make()
    board.update(U(tok(" we"), tok(" said"), provisional=(tok(" some", False),)))
    board.session_ended()
    board.session_ended()  # nothing changed: nothing published
    board.update(U(tok(" something")))
    assert events == [line(1, "we said some"), line(1, "we said"), line(1, "we said something")]


def test_session_ended_withdraws_a_tail_only_line_and_close_ends_it():
    board, events = make()
    board.update(U(provisional=(tok(" maybe", False),)))
    board.session_ended()
    board.close()
    assert events == [
        line(1, "maybe"),
        line(1, ""),
        line(1, "", final=True, translation_final=True),
    ]


def test_a_tail_only_line_takes_the_next_finals_even_from_another_speaker():
    board, events = make()
    board.update(U(provisional=(tok(" ok", False, speaker="1"),)))
    board.update(U(tok(" okay", speaker="2")))
    assert events == [line(1, "ok", speaker="1"), line(1, "okay", speaker="2")]


def test_close_finalises_the_open_line_without_its_tail():
    board, events = make()
    board.update(U(tok(" last"), tok(" words"), provisional=(tok(" unfinished", False),)))
    board.close()
    board.close()
    assert events == [
        line(1, "last words unfinished"),
        line(1, "last words", final=True, translation_final=True),
    ]


def test_loss_is_published():
    board, events = make()
    board.loss(12.4, 10.0, 22.4, "network down")
    assert events == [AudioLoss(12.4, 10.0, 22.4, "network down")]


def test_a_failing_listener_does_not_break_the_board():
    seen: list[CaptionEvent] = []

    def publish(event: CaptionEvent) -> None:
        seen.append(event)
        raise RuntimeError("output broke")

    board = CaptionBoard(publish)
    board.update(U(tok(" a")))
    board.update(U(tok(" b"), endpoint=True))
    assert [e.text for e in seen if isinstance(e, CaptionLine)] == ["a", "a b"]


# --- translation ---------------------------------------------------------------------------


def orig(text: str, final: bool = True, **kw) -> tuple[Token, ...]:
    return words(text, final, kind="original", **kw)


def trans(text: str, final: bool = True, language: str = "es", **kw) -> tuple[Token, ...]:
    return words(text, final, kind="translation", language=language, **kw)


ES = ("es",)


def done_lines(events: list[CaptionEvent]) -> list[CaptionLine]:
    return [e for e in events if isinstance(e, CaptionLine) and e.done]


def test_one_way_translation_with_a_provisional_tail():
    board, events = make(targets=ES)
    board.update(U(*orig("hello"), provisional=orig("every", False) + trans("hola", False)))
    board.update(U(*orig("everyone"), *trans("hola a"), provisional=trans("todos", False)))
    board.update(U(*trans("todos"), endpoint=True))
    assert events == [
        line(1, "hello every", translations={"es": "hola"}),
        line(1, "hello everyone", translations={"es": "hola a todos"}),
        line(1, "hello everyone", True, {"es": "hola a todos"}, True),
    ]


def test_two_way_translation_pairs_each_line_with_its_own_translation():
    board, events = make(targets=("en", "es"))  # Soniox two-way: each line to the other
    en, es = {"speaker": "1", "language": "en"}, {"speaker": "2", "language": "es"}
    board.update(U(*orig("how are you", **en), *trans("cómo estás", speaker="1")))
    board.update(U(*orig("muy bien", **es), *trans("very well", language="en", speaker="2")))
    board.update(U(endpoint=True))
    assert events == [
        line(1, "how are you", translations={"es": "cómo estás"}, **en),
        line(1, "how are you", True, {"es": "cómo estás"}, True, **en),
        line(2, "muy bien", translations={"en": "very well"}, **es),
        line(2, "muy bien", True, {"en": "very well"}, True, **es),
    ]


def test_a_translation_arriving_after_the_next_line_started_goes_to_its_line():
    board, events = make(targets=ES)
    board.update(U(*orig("first", speaker="1")))
    board.update(U(*orig("second", speaker="2")))  # line 1 closes, no translation yet
    board.update(U(*trans("primero")))
    board.update(U(*orig("line", speaker="2"), *trans("segunda línea")))
    board.update(U(endpoint=True))
    s1, s2 = {"speaker": "1"}, {"speaker": "2"}
    assert events == [
        line(1, "first", **s1),
        line(1, "first", final=True, **s1),
        line(2, "second", **s2),
        line(1, "first", True, {"es": "primero"}, **s1),
        # a spoken token of a later line after the translation: line 1's is final
        line(1, "first", True, {"es": "primero"}, True, **s1),
        line(2, "second line", translations={"es": "segunda línea"}, **s2),
        line(2, "second line", True, {"es": "segunda línea"}, True, **s2),
    ]


def test_translation_grows_on_a_closed_line_until_a_later_line_speaks():
    board, events = make(targets=ES, max_line_chars=12)
    board.update(U(*orig("one two three")))  # "one two" | "three"
    board.update(U(*trans("uno dos"), provisional=trans("tres", False)))
    board.update(U(*trans("tres"), *orig("four")))
    board.update(U(endpoint=True))
    assert events == [
        line(1, "one two", final=True),
        line(2, "three"),
        line(1, "one two", True, {"es": "uno dos tres"}),
        line(1, "one two", True, {"es": "uno dos tres"}, True),
        line(2, "three four"),
        line(2, "three four", final=True),
    ]
    board.close()
    assert events[-1] == line(2, "three four", True, {}, True)


def test_untranslated_lines_never_wait_for_a_translation():
    board, events = make(targets=ES)
    board.update(U(tok(" bonjour", speaker="3", language="fr"), *orig("hi", speaker="1")))
    board.update(U(*trans("hola", speaker="1")))
    board.update(U(endpoint=True))
    assert events == [
        line(1, "bonjour", True, {}, True, speaker="3", language="fr"),
        line(2, "hi", speaker="1"),
        line(2, "hi", translations={"es": "hola"}, speaker="1"),
        line(2, "hi", True, {"es": "hola"}, True, speaker="1"),
    ]


def test_untranslated_words_do_not_end_the_wait_of_an_older_line():
    board, events = make(targets=ES)
    board.update(U(*orig("one two", speaker="1"), *trans("uno", speaker="1")))
    board.update(U(tok(" bonjour", speaker="3")))  # a third language, not translated
    board.update(U(*trans("dos", speaker="1"), endpoint=True))
    assert [(e.seq, e.text, e.translations) for e in done_lines(events)] == [
        (1, "one two", {"es": "uno dos"}),
        (2, "bonjour", {}),
    ]


def test_without_translation_translation_tokens_are_ignored():
    board, events = make()
    board.update(U(*orig("hello"), *trans("hola"), endpoint=True))
    assert events == [line(1, "hello", final=True, translation_final=True)]
    assert board.orphan_translations == 0  # not orphans: nobody asked for them


def test_a_line_never_translated_does_not_shift_later_translations():
    board, events = make(targets=ES)
    board.update(U(*orig("ahem"), endpoint=True))  # the service never translates it
    board.update(U(*orig("good night"), *trans("buenas noches"), endpoint=True))
    assert [(e.text, e.translations) for e in done_lines(events)] == [
        ("ahem", {}),
        ("good night", {"es": "buenas noches"}),
    ]


def test_a_translation_right_after_an_endpoint_still_reaches_its_line():
    board, events = make(targets=ES)
    board.update(U(*orig("see you"), endpoint=True))
    assert events == [line(1, "see you", final=True)]  # the translation may still come
    board.update(U(*trans("hasta luego")))
    board.update(U(endpoint=True))
    assert events[1:] == [
        line(1, "see you", True, {"es": "hasta luego"}),
        line(1, "see you", True, {"es": "hasta luego"}, True),
    ]


def test_session_ended_ends_the_wait_of_closed_lines():
    board, events = make(targets=ES)
    board.update(U(*orig("closed", speaker="1"), *orig("open", speaker="2")))
    board.session_ended()
    assert events[-1] == line(1, "closed", True, {}, True, speaker="1")
    board.update(U(*orig("more", speaker="2"), *trans("abierto más", speaker="2")))
    board.close()
    assert events[-1] == line(2, "open more", True, {"es": "abierto más"}, True, speaker="2")


def test_close_makes_every_translation_final():
    board, events = make(targets=ES)
    board.update(U(*orig("a b"), provisional=trans("x", False)))
    board.close()
    assert events == [
        line(1, "a b", translations={"es": "x"}),
        line(1, "a b", True, {}, True),
    ]


# --- several languages per line --------------------------------------------------------------


def azure(original: str, **texts: str) -> TokenUpdate:
    """One recognized phrase as Azure Speech gives it: the final originals, one final
    translation token per target language, then the endpoint."""
    finals = [tok(" " + original, kind="original", language="en")]
    finals += [tok(" " + t, kind="translation", language=lang) for lang, t in texts.items()]
    return U(*finals, endpoint=True)


def azure_partial(original: str, **texts: str) -> TokenUpdate:
    tail = [tok(" " + original, False, kind="original", language="en")]
    tail += [tok(" " + t, False, kind="translation", language=lang) for lang, t in texts.items()]
    return U(provisional=tuple(tail))


def test_several_languages_of_one_phrase_land_on_one_line():
    board, events = make(targets=("de", "fr"))
    board.update(azure("Good morning.", de="Guten Morgen.", fr="Bonjour."))
    board.update(azure("See you.", de="Bis bald.", fr="À bientôt."))
    en = {"language": "en"}
    assert events == [
        line(1, "Good morning.", True, {"de": "Guten Morgen.", "fr": "Bonjour."}, True, **en),
        line(2, "See you.", True, {"de": "Bis bald.", "fr": "À bientôt."}, True, **en),
    ]
    assert board.orphan_translations == 0


def test_each_language_goes_from_partial_to_final_on_its_own():
    board, events = make(targets=("de", "fr"))
    board.update(azure_partial("Good", de="Gut"))  # French comes later
    board.update(azure_partial("Good morning", de="Guten Morgen", fr="Bon"))
    board.update(azure("Good morning everyone.", de="Guten Morgen allerseits.", fr="Bonjour."))
    assert [(e.text, e.translations, e.final, e.done) for e in events] == [
        ("Good", {"de": "Gut"}, False, False),
        ("Good morning", {"de": "Guten Morgen", "fr": "Bon"}, False, False),
        (
            "Good morning everyone.",
            {"de": "Guten Morgen allerseits.", "fr": "Bonjour."},
            True,
            True,
        ),
    ]


def test_an_endpoint_ends_the_wait_also_for_a_language_that_did_not_come():
    board, events = make(targets=("de", "fr"))
    board.update(U(*orig("good night"), *trans("gute Nacht", language="de"), endpoint=True))
    # the endpoint made German final; French had not come: the line waits no longer
    assert events == [line(1, "good night", True, {"de": "gute Nacht"}, True)]


def test_translations_are_ordered_by_the_targets_then_by_arrival():
    board, events = make(targets=("fr", "de"))
    board.update(
        U(
            *orig("thanks"),
            *trans("danke", language="de"),
            *trans("grazie", language="it"),  # not configured: after the targets
            *trans("merci", language="fr"),
            *trans("gracias", language="es"),
            endpoint=True,
        )
    )
    (done,) = done_lines(events)
    assert list(done.translations.items()) == [
        ("fr", "merci"),
        ("de", "danke"),
        ("it", "grazie"),
        ("es", "gracias"),
    ]


def test_a_translation_token_without_a_language_is_keyed_by_the_empty_string():
    board, events = make(targets=("en",))
    board.update(U(*orig("namaste"), *words("hello", kind="translation"), endpoint=True))
    assert done_lines(events)[0].translations == {"": "hello"}


def test_the_translation_limit_applies_to_each_language_alone():
    board, events = make(targets=("de", "fr"))
    long_de = tuple(
        tok(" wort" + str(i % 10), kind="translation", language="de") for i in range(600)
    )
    board.update(U(*orig("a long speech"), *long_de, *trans("court", language="fr"), endpoint=True))
    (done,) = done_lines(events)
    assert len(done.translations["de"]) == TRANSLATION_LIMIT
    assert done.translations["de"] == "".join(t.text for t in long_de).strip()[:TRANSLATION_LIMIT]
    assert done.translations["fr"] == "court"


def test_synthesized_speech_is_tagged_with_the_newest_line_translated_into_its_language():
    board, events = make(targets=("de", "fr"))
    board.update(azure("One.", de="Eins.", fr="Un."))
    board.update(azure("Two.", de="Zwei."))  # no French for this one
    board.synthesized(SynthesizedAudio("de", "riff", b"x", end=False))
    board.synthesized(SynthesizedAudio("fr", "riff", b"y", end=True))
    board.synthesized(SynthesizedAudio("es", "riff", b"z", end=True))  # never translated
    board.synthesized(SynthesizedAudio("de", "riff", b"w", end=True, seq=7))  # already known
    audio = [e for e in events if isinstance(e, SynthesizedAudio)]
    assert [(a.language, a.data, a.seq) for a in audio] == [
        ("de", b"x", 2),
        ("fr", b"y", 1),
        ("es", b"z", None),
        ("de", b"w", 7),
    ]


# --- translation only ------------------------------------------------------------------------


def test_translation_only_lines_have_no_text_and_are_final_at_the_endpoint():
    board, events = make(targets=("en",), translation_only=True)
    hi = {"source_language": "hi"}
    board.update(U(provisional=trans("Hello", False, language="en", **hi)))
    board.update(
        U(
            *trans("Hello there,", language="en", **hi),
            provisional=trans("how", False, language="en"),
        )
    )
    board.update(U(*trans("how are you?", language="en", **hi), endpoint=True))
    board.update(U(*trans("Fine.", language="en", speaker="2"), finalized=True))
    assert events == [
        line(1, "", translations={"en": "Hello"}, language="hi"),
        line(1, "", translations={"en": "Hello there, how"}, language="hi"),
        line(1, "", True, {"en": "Hello there, how are you?"}, True, language="hi"),
        line(2, "", True, {"en": "Fine."}, True, speaker="2"),
    ]
    assert board.orphan_translations == 0


def test_translation_only_lines_break_by_the_length_of_the_translated_text():
    board, events = make(targets=("en",), translation_only=True, max_line_chars=12)
    en = {"kind": "translation", "language": "en"}
    board.update(U(tok(" one", **en), tok(" two", **en)))
    board.update(U(tok(" thr", **en), tok("ee", **en)))  # "three" does not fit: a new line
    board.update(U(endpoint=True))
    assert [(e.seq, e.text, e.translations, e.done) for e in events] == [
        (1, "", {"en": "one two"}, False),
        (1, "", {"en": "one two"}, True),
        (2, "", {"en": "three"}, False),
        (2, "", {"en": "three"}, True),
    ]


def test_translation_only_lines_break_at_a_sentence_end_and_a_speaker_change():
    board, events = make(targets=("en",), translation_only=True)
    long = "this translated sentence is long enough to stand."
    board.update(
        U(*trans(long, language="en", speaker="1"), *trans("Next", language="en", speaker="1"))
    )
    board.update(U(*trans("Other", language="en", speaker="2"), endpoint=True))
    assert [(e.translations["en"], e.speaker) for e in done_lines(events)] == [
        (long, "1"),
        ("Next", "1"),
        ("Other", "2"),
    ]


def test_a_translation_only_tail_is_withdrawn_when_the_session_ends():
    board, events = make(targets=("en",), translation_only=True)
    board.update(U(provisional=trans("maybe", False, language="en")))
    board.session_ended()
    board.close()
    assert events == [
        line(1, "", translations={"en": "maybe"}),
        line(1, ""),
        line(1, "", True, {}, True),
    ]


def test_translation_only_still_pairs_translations_with_originals_when_they_come():
    board, events = make(targets=("en",), translation_only=True)
    board.update(U(*orig("namaste", language="hi"), *trans("hello", language="en"), endpoint=True))
    board.update(U(*trans("alone", language="en"), endpoint=True))
    assert [(e.text, e.translations) for e in done_lines(events)] == [
        ("namaste", {"en": "hello"}),
        ("", {"en": "alone"}),
    ]


# --- the property --------------------------------------------------------------------------

WORDS = ["a", "hello", "world.", "ok?", "3.", "14", "x" * 12, "yes!", "是", "好。"]
TARGETS = ("es", "de")
TRANSLATED_INTO = st.sampled_from(["es", "de", "fr", None])  # fr and None: not in TARGETS


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[object], set[int], bool, int]:
    """A service's final token stream as items (tokens and "END" markers), then the updates.

    Chunks of speech, each by one speaker, either translated ("original") or not ("none");
    a translated chunk's translation follows it, at once or only after later chunks'
    originals (translation lag). An endpoint comes only when no translation is pending; so
    does a session end (``safe``: the item counts after which one may come).
    """
    translated = draw(st.booleans())
    items: list[object] = []
    safe: set[int] = set()
    pending: list[Token] = []
    for _ in range(draw(st.integers(1, 8))):
        speaker = draw(st.sampled_from(["1", "2", None]))
        kind: TokenKind = "original" if translated and draw(st.booleans()) else "none"
        for word in draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6)):
            split = draw(st.integers(0, 2))
            if split == 1 and len(word) > 1:  # " hel" "lo"
                pieces = [" " + word[:1], word[1:]]
            elif split == 2:  # " " "hello"
                pieces = [" ", word]
            else:
                pieces = [" " + word]
            language = draw(st.sampled_from(["en", "es", None]))
            items += [tok(p, kind=kind, speaker=speaker, language=language) for p in pieces]
        # translations may lag: any number of chunks later, but always after their originals
        if pending and draw(st.booleans()):
            items += pending
            pending = []
        if kind == "original":
            n = draw(st.integers(1, 3))
            pending += [
                tok(f" t{len(items)}.{i}", kind="translation", language=language)
                for i, language in enumerate(
                    draw(st.lists(TRANSLATED_INTO, min_size=n, max_size=n))
                )
            ]
        if pending and draw(st.booleans()):
            items += pending
            pending = []
        if not pending:
            if draw(st.booleans()):
                items.append("END")
            safe.add(len(items))
    items += pending
    return items, safe, translated, draw(st.sampled_from([20, 40, 120]))


@st.composite
def scripts(draw: st.DrawFn) -> tuple[list[object], bool, int]:
    """The stream cut into updates with provisional tails, and some session ends."""
    items, safe, translated, max_chars = draw(streams())
    script: list[object] = []
    i = 0
    while i < len(items):
        n = draw(st.integers(1, 5))
        chunk = items[i : i + n]
        if "END" in chunk:
            chunk = chunk[: chunk.index("END") + 1]
        i += len(chunk)
        finals = tuple(t for t in chunk if isinstance(t, Token))
        upcoming = [t for t in items[i : i + draw(st.integers(0, 4))] if isinstance(t, Token)]
        tail = tuple(
            replace(t, is_final=False, text=t.text + draw(st.sampled_from(["", "zz"])))
            for t in upcoming
        )
        script.append(TokenUpdate(final=finals, provisional=tail, endpoint="END" in chunk))
        if i in safe and draw(st.integers(0, 3)) == 0:
            script.append("SESSION_END")
    return script, translated, max_chars


def squash(text: str) -> str:
    return "".join(text.split())


def in_target_order(translations: dict[str, str]) -> bool:
    """The configured targets first, in their order; other languages after them."""
    ranks = [TARGETS.index(k) if k in TARGETS else len(TARGETS) for k in translations]
    return ranks == sorted(ranks)


def check_lines(
    events: list[CaptionEvent], max_chars: int
) -> tuple[list[int], dict[int, str], dict[int, dict[str, str]]]:
    """What holds for every run: a line is never emitted after it is done, final text never
    changes, texts are stripped, final lines fit, translations are in target order, and
    ``close()`` leaves every line done. Returns the seqs in order and the final texts and
    translations."""
    first_seen: list[int] = []
    final_text: dict[int, str] = {}
    final_translations: dict[int, dict[str, str]] = {}
    done: set[int] = set()
    hard_max = max_chars + max_chars // 4
    for e in events:
        if not isinstance(e, CaptionLine):
            continue
        assert e.seq not in done, "a line was emitted after it was done"
        if e.seq not in first_seen:
            first_seen.append(e.seq)
        if e.seq in final_text:
            assert e.final, "a final line became provisional again"
            assert e.text == final_text[e.seq], "a final line's text changed"
        elif e.final:
            final_text[e.seq] = e.text
        if e.translation_final:
            assert e.final
            final_translations[e.seq] = dict(e.translations)
        if e.done:
            done.add(e.seq)
        assert e.text == e.text.strip()
        assert all(t and t == t.strip() for t in e.translations.values())
        assert in_target_order(dict(e.translations))
        assert len(e.text) <= hard_max or not e.final
    assert first_seen == list(range(1, len(first_seen) + 1))
    assert done == set(first_seen), "close() leaves every line done"
    return first_seen, final_text, final_translations


def run(board: CaptionBoard, script: list[object]) -> None:
    for step in script:
        if step == "SESSION_END":
            board.session_ended()
        else:
            assert isinstance(step, TokenUpdate)
            board.update(step)
    board.close()


def per_language(tokens: Iterable[Token]) -> dict[str, str]:
    out: dict[str, str] = {}
    for t in tokens:
        out[t.language or ""] = out.get(t.language or "", "") + t.text
    return {k: squash(v) for k, v in out.items() if squash(v)}


def joined_translations(seqs: list[int], final: dict[int, dict[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for seq in seqs:
        for lang, text in final[seq].items():
            out[lang] = out.get(lang, "") + text
    return {k: squash(v) for k, v in out.items()}


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(scripts())
def test_property_finals_are_emitted_once_and_nothing_is_lost(case):
    script, translated, max_chars = case
    board, events = make(targets=TARGETS if translated else (), max_line_chars=max_chars)
    run(board, script)
    seqs, final_text, final_translations = check_lines(events, max_chars)

    updates = [s for s in script if isinstance(s, TokenUpdate)]
    spoken = "".join(t.text for u in updates for t in u.final if t.spoken)
    assert squash("".join(final_text[s] for s in seqs)) == squash(spoken)
    translations = per_language(t for u in updates for t in u.final if not t.spoken)
    assert joined_translations(seqs, final_translations) == (translations if translated else {})
    assert board.orphan_translations == 0


@st.composite
def translation_only_scripts(draw: st.DrawFn) -> tuple[list[object], int]:
    """A translation-only service: translated words (one language or two), speakers,
    provisional tails that become final, endpoints, finalize replies and session ends."""
    script: list[object] = []
    languages = draw(st.sampled_from([["en"], ["en", "de"]]))
    for _ in range(draw(st.integers(1, 10))):
        finals = []
        speaker = draw(st.sampled_from(["1", "2", None]))
        for word in draw(st.lists(st.sampled_from(WORDS), max_size=6)):
            language = draw(st.sampled_from(languages))
            texts = (
                [" " + word[:1], word[1:]]
                if draw(st.booleans()) and len(word) > 1
                else [" " + word]
            )
            finals += [
                tok(t, kind="translation", language=language, speaker=speaker) for t in texts
            ]
        tail = tuple(
            tok(" " + w, False, kind="translation", language=languages[0])
            for w in draw(st.lists(st.sampled_from(WORDS), max_size=2))
        )
        marker = draw(st.sampled_from(["", "endpoint", "finalized"]))
        script.append(
            TokenUpdate(
                final=tuple(finals),
                provisional=tail,
                endpoint=marker == "endpoint",
                finalized=marker == "finalized",
            )
        )
        if draw(st.integers(0, 4)) == 0:
            script.append("SESSION_END")
    return script, draw(st.sampled_from([12, 40, 120]))


@settings(max_examples=200, deadline=None)
@given(translation_only_scripts())
def test_property_translation_only_lines_hold_every_translated_word_once(case):
    script, max_chars = case
    board, events = make(targets=TARGETS, translation_only=True, max_line_chars=max_chars)
    run(board, script)
    seqs, final_text, final_translations = check_lines(events, max_chars)
    assert not any(final_text.values()), "a translation-only line has no text"
    updates = [s for s in script if isinstance(s, TokenUpdate)]
    words = per_language(t for u in updates for t in u.final)
    assert joined_translations(seqs, final_translations) == words
    hard_max = max_chars + max_chars // 4
    assert all(len(t) <= hard_max for f in final_translations.values() for t in f.values())


def test_service_text_is_sanitized_before_any_output_sees_it():
    events: list = []
    board = CaptionBoard(events.append)
    evil = Token(" hi\x1b[2J\x1b]0;title\x07 there\r\n", True, "none", speaker="1\x1b[0m")
    board.update(TokenUpdate(final=(evil,), endpoint=True))
    (line,) = [e for e in events if e.final]
    assert line.text == "hi there"
    assert line.speaker == "10m"


# --- profanity -----------------------------------------------------------------------------


def test_a_swear_word_split_across_tokens_is_masked_in_the_final_line():
    board, events = make(profanity=ProfanityFilter("mask"))
    # Soniox splits words into pieces: no piece is a word of the list, the line has one
    board.update(U(tok(" what"), tok(" the"), tok(" fu"), tok("ck"), tok("."), endpoint=True))
    assert events == [line(1, "what the ****.", final=True, translation_final=True)]


def test_a_provisional_word_is_masked_once_it_is_whole():
    board, events = make(profanity=ProfanityFilter("mask"))
    board.update(U(tok(" oh"), provisional=(tok(" fu", False),)))
    board.update(U(provisional=(tok(" fu", False), tok("cking", False))))
    board.update(U(tok(" fu"), provisional=(tok("ck", False),)))
    board.update(U(tok("ck"), tok(" hell"), endpoint=True))
    assert events == [
        line(1, "oh fu"),  # a word cut short may show its beginning for a moment
        line(1, "oh *******"),
        line(1, "oh ****"),  # final "fu" and provisional "ck": the text is one word
        line(1, "oh **** hell", final=True, translation_final=True),
    ]


def test_translations_are_filtered_final_and_provisional():
    f = ProfanityFilter("mask", ["Scheiße", "merde"])
    board, events = make(targets=("de", "fr"), profanity=f)
    board.update(U(*orig("oh shit"), provisional=trans("oh Scheiße", False, language="de")))
    board.update(U(*trans("oh Scheiße", language="de"), *trans("oh merde", language="fr")))
    board.update(U(endpoint=True))
    masked = {"de": "oh *******", "fr": "oh *****"}
    assert events == [
        line(1, "oh ****", translations={"de": "oh *******"}),
        line(1, "oh ****", translations=masked),
        line(1, "oh ****", True, masked, True),
    ]


def test_translation_only_lines_are_filtered():
    board, events = make(targets=("en",), translation_only=True, profanity=ProfanityFilter("mask"))
    board.update(U(*trans("holy shit", language="en", source_language="hi"), endpoint=True))
    assert events == [line(1, "", True, {"en": "holy ****"}, True, language="hi")]


def test_remove_drops_words_and_a_line_of_nothing_else_is_never_shown():
    board, events = make(targets=ES, profanity=ProfanityFilter("remove", ["mierda"]))
    board.update(U(*orig("what the fuck."), *trans("qué mierda."), endpoint=True))
    board.update(U(tok(" Fuck!"), endpoint=True))
    board.update(U(tok(" Hello")))
    assert events == [
        line(1, "what the.", True, {"es": "qué."}, True),
        line(3, "Hello"),  # line 2 had nothing left to show
    ]


@pytest.mark.parametrize("profanity", [None, ProfanityFilter("off")])
def test_without_a_filter_or_with_off_the_text_is_left_alone(profanity):
    board, events = make(targets=ES, profanity=profanity)
    fu, ck = tok(" fu", kind="original"), tok("ck", kind="original")
    board.update(U(*orig("what the"), fu, provisional=(replace(ck, is_final=False),)))
    board.update(U(ck, *trans("qué mierda"), endpoint=True))
    assert events == [
        line(1, "what the fuck"),
        line(1, "what the fuck", True, {"es": "qué mierda"}, True),
    ]


@settings(max_examples=60, deadline=None)
@given(cuts=st.sets(st.integers(min_value=1, max_value=49), max_size=12))
def test_property_a_masked_line_is_the_mask_of_the_whole_text_however_it_is_split(cuts):
    text = " you motherfucking shit, that bullshit is fucked."
    bounds = [0, *sorted(cuts), len(text)]
    pieces = [text[a:b] for a, b in pairwise(bounds)]
    board, events = make(profanity=ProfanityFilter("mask"), max_line_chars=200)
    board.update(U(*(tok(p) for p in pieces), endpoint=True))
    (last,) = [e for e in events if isinstance(e, CaptionLine) and e.final]
    assert last.text == "you ************* ****, that ******** is ******."


def test_a_lines_language_carries_the_services_confidence_in_it():
    board, events = make()
    sure = Token(" नमस्ते", True, "none", language="hi-IN", language_confidence=0.93)
    unsure = Token(" दुनिया", True, "none", language="hi-IN", language_confidence=0.61)
    other = Token(" hello", True, "none", language="en-IN", language_confidence=0.2)
    board.update(U(sure, unsure, other, endpoint=True))
    (last,) = events[-1:]
    assert last.language == "hi-IN"
    assert last.language_confidence == 0.61  # the least sure piece in the line's language
    board.update(U(Token(" hi", True, "none", language="en"), endpoint=True))
    assert events[-1].language_confidence is None  # the service did not say
