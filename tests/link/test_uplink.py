"""The uplink buffer: nothing unconfirmed is lost on a cut, nothing confirmed is resent,
and past its bound it drops the oldest unsent audio and accounts for it exactly."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecap.link.uplink import UplinkBuffer
from edgecap.runtime.frames import Frame
from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart

FRAME = 320  # samples: 20 ms


def utterance(n: int, frames: int, first_sample: int) -> list:
    events: list = [SpeechStart(n, first_sample, first_sample, 0.0)]
    for i in range(frames):
        start = first_sample + i * FRAME
        pcm = (start % 65536).to_bytes(2, "little") * FRAME
        events.append(SpeechAudio(n, Frame(pcm, start, 0.0)))
    events.append(SpeechEnd(n, first_sample + frames * FRAME, "silence", 0.0))
    return events


def send_all(buf: UplinkBuffer) -> list:
    out = []
    while buf.peek() is not None:
        out.append(buf.mark_sent().event)
    return out


def audio_starts(events: list) -> list[int]:
    return [e.frame.start for e in events if isinstance(e, SpeechAudio)]


def test_sent_items_stay_until_confirmed_and_are_replayed_after_a_cut():
    buf = UplinkBuffer(max_samples=100 * FRAME)
    for e in utterance(1, 10, 0):
        buf.push(e)
    first = send_all(buf)
    assert len(first) == 12 and buf.held_samples == 10 * FRAME
    buf.confirm_audio(4 * FRAME)  # service: final up to frame 4
    assert buf.held_samples == 6 * FRAME
    buf.new_session()  # the connection was cut
    replay = send_all(buf)
    assert audio_starts(replay) == [i * FRAME for i in range(4, 10)]
    assert isinstance(replay[-1], SpeechEnd)
    assert buf.replayed_samples == 6 * FRAME
    # positions restart with the session
    assert buf.session_samples == 6 * FRAME


def test_start_marker_is_replayed_with_the_audio_it_opens():
    buf = UplinkBuffer(max_samples=100 * FRAME)
    for e in utterance(1, 3, 0):
        buf.push(e)
    send_all(buf)
    buf.confirm_audio(0)
    buf.new_session()
    replay = send_all(buf)
    assert isinstance(replay[0], SpeechStart) and isinstance(replay[-1], SpeechEnd)


def test_confirm_all_sent_empties_what_was_sent_only():
    buf = UplinkBuffer(max_samples=100 * FRAME)
    events = utterance(1, 5, 0) + utterance(2, 5, 10_000)
    for e in events[:7]:
        buf.push(e)
    send_all(buf)
    for e in events[7:]:
        buf.push(e)
    buf.confirm_all_sent()
    assert not buf.unconfirmed
    assert audio_starts(list(i.event for i in buf.pending)) == [
        10_000 + i * FRAME for i in range(5)
    ]


def test_over_the_bound_the_oldest_unsent_audio_is_dropped_and_counted():
    buf = UplinkBuffer(max_samples=10 * FRAME)
    for e in utterance(1, 25, 16_000):  # starts at capture time 1.0 s
        buf.push(e)
    assert buf.held_samples == 10 * FRAME
    assert buf.dropped.samples == 15 * FRAME
    loss = buf.take_loss()
    assert loss is not None
    assert loss.seconds == pytest.approx(15 * 0.02)
    assert loss.first == pytest.approx(1.0) and loss.last == pytest.approx(1.0 + 15 * 0.02)
    assert buf.take_loss() is None  # reported once
    events = send_all(buf)
    # the utterance stays well formed: start, the newest 10 frames, end
    assert isinstance(events[0], SpeechStart) and isinstance(events[-1], SpeechEnd)
    assert audio_starts(events) == [16_000 + i * FRAME for i in range(15, 25)]


def test_dropping_sent_but_unconfirmed_audio_is_not_called_lost():
    buf = UplinkBuffer(max_samples=10 * FRAME)
    for e in utterance(1, 10, 0):
        buf.push(e)
    send_all(buf)
    for e in utterance(2, 3, 50_000):
        buf.push(e)
    assert buf.unconfirmed_dropped_samples == 3 * FRAME
    assert buf.dropped.samples == 0
    assert buf.take_loss() is None  # not yet: the service may still confirm it


def _sent_then_dropped() -> UplinkBuffer:
    """Ten frames sent (session positions 0..10 frames), the first three of them dropped
    unconfirmed by three new frames that do not fit."""
    buf = UplinkBuffer(max_samples=10 * FRAME)
    for e in utterance(1, 10, 16_000):
        buf.push(e)
    send_all(buf)
    for e in utterance(2, 3, 50_000):
        buf.push(e)
    return buf


def test_sent_audio_dropped_unconfirmed_is_lost_when_the_session_fails():
    buf = _sent_then_dropped()
    buf.new_session()  # the session failed: what it did not confirm is replayed …
    loss = buf.take_loss()  # … but the dropped frames cannot be: reported lost
    assert loss is not None
    assert loss.samples == 3 * FRAME
    assert (loss.first, loss.last) == (1.0, 1.0 + 3 * FRAME / 16_000)
    assert buf.dropped.samples == 3 * FRAME
    assert audio_starts(send_all(buf))[:7] == [16_000 + k * FRAME for k in range(3, 10)]
    buf.new_session()
    assert buf.take_loss() is None  # reported once


def test_sent_audio_dropped_and_then_confirmed_is_not_lost():
    buf = _sent_then_dropped()
    buf.confirm_audio(2 * FRAME)  # final up to two of the three dropped frames
    buf.new_session()
    loss = buf.take_loss()
    assert loss is not None and loss.samples == FRAME  # only the third one
    assert loss.first == 1.0 + 2 * FRAME / 16_000

    graceful = _sent_then_dropped()
    graceful.confirm_all_sent()  # the session ended well: the service had all of it
    graceful.new_session()
    assert graceful.take_loss() is None


def test_sent_audio_dropped_unconfirmed_is_in_the_loss_at_stop():
    buf = _sent_then_dropped()
    loss = buf.discard_unconfirmed()
    assert loss.samples == 10 * FRAME  # 7 held unconfirmed + 3 dropped unconfirmed


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    cuts=st.lists(st.integers(0, 40), max_size=6),
)
def test_every_frame_is_confirmed_exactly_once_across_random_cuts(seed, cuts):
    """Across sessions cut at random points, with confirmations trailing the sends, every
    frame is sent at least once, and once confirmed it is never sent again."""
    rng = random.Random(seed)
    buf = UplinkBuffer(max_samples=10_000 * FRAME)
    events = []
    pos = 0
    for n in range(1, 6):
        k = rng.randint(1, 15)
        events += utterance(n, k, pos)
        pos += (k + 5) * FRAME
    for e in events:
        buf.push(e)
    confirmed: list[int] = []
    sent_ever: set[int] = set()
    session_map: list[tuple[int, int]] = []  # (session_pos, capture start)
    cut_iter = iter(sorted(cuts))
    next_cut = next(cut_iter, None)
    steps = 0
    while not buf.empty:
        item = buf.peek()
        if item is not None:
            sent = buf.mark_sent()
            if isinstance(sent.event, SpeechAudio):
                session_map.append((sent.session_pos, sent.event.frame.start))
                sent_ever.add(sent.event.frame.start)
        # the service confirms everything but the last 0–3 frames it got
        lag = rng.randint(0, 3) * FRAME if item is not None else 0
        point = max(0, buf.session_samples - lag)
        before = {i.event.frame.start for i in buf.sent if isinstance(i.event, SpeechAudio)}
        buf.confirm_audio(point)
        after = {i.event.frame.start for i in buf.sent if isinstance(i.event, SpeechAudio)}
        newly = sorted(before - after)
        assert not set(newly) & set(confirmed), "a confirmed frame came back"
        confirmed += newly
        steps += 1
        if next_cut is not None and steps >= next_cut:
            buf.new_session()
            session_map.clear()
            next_cut = next(cut_iter, None)
    expected = [e.frame.start for e in events if isinstance(e, SpeechAudio)]
    assert confirmed == expected
    assert sent_ever == set(expected)


def test_skip_lets_an_unneeded_marker_leave_unsent_but_never_audio():
    buf = UplinkBuffer(10 * 16_000)
    for e in utterance(1, 2, 0):
        buf.push(e)
    buf.mark_sent()  # the start
    with pytest.raises(ValueError):
        buf.skip()  # the head is audio
    assert isinstance(buf.peek().event, SpeechAudio)  # type: ignore[union-attr]
    buf.mark_sent()
    buf.mark_sent()
    assert isinstance(buf.skip().event, SpeechEnd)
    assert buf.peek() is None
    buf.confirm_all_sent()
    assert buf.empty and buf.held_samples == 0  # the skipped end is nowhere


def test_a_block_final_part_way_is_replayed_from_the_first_unconfirmed_sample():
    """The gate hands over ~100 ms blocks (the first of an utterance longer, with its
    pre-roll): a service final in the middle of one must not get the confirmed head again."""
    buf = UplinkBuffer(max_samples=100 * FRAME)
    pcm = b"".join((i % 65536).to_bytes(2, "little") for i in range(5 * FRAME))
    block = SpeechAudio(1, Frame(pcm, 16_000, 0.0))
    for e in (
        SpeechStart(1, 16_000, 16_000, 0.0),
        block,
        SpeechEnd(1, 16_000 + 5 * FRAME, "silence", 0.0),
    ):
        buf.push(e)
    send_all(buf)
    assert buf.confirm_audio(2 * FRAME + 7) == 2 * FRAME + 7
    assert buf.held_samples == 3 * FRAME - 7
    buf.new_session()
    replay = [e for e in send_all(buf) if isinstance(e, SpeechAudio)]
    (rest,) = replay
    assert rest.frame.start == 16_000 + 2 * FRAME + 7
    assert rest.frame.pcm == pcm[2 * (2 * FRAME + 7) :]
    assert buf.replayed_samples == 3 * FRAME - 7
