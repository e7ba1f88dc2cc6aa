"""The queue in front of an output: finals never lost or reordered, provisional coalesced."""

from __future__ import annotations

import select
import threading
import time

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.outputs.event_queue import EventQueue
from edgecap.runtime.speech import Activity
from edgecap.runtime.status import StatusBoard


def line(seq: int, text: str, final: bool = False) -> CaptionLine:
    return CaptionLine(
        seq=seq,
        text=text,
        speaker=None,
        language=None,
        start=None,
        end=None,
        final=final,
        translation_final=final,
    )


def drain(q: EventQueue) -> list:
    out = []
    while (e := q.get(timeout=0)) is not None:
        out.append(e)
    return out


def test_provisional_updates_are_coalesced_latest_wins():
    q = EventQueue()
    for i in range(50):
        q.put(line(1, "hello " * i))
    got = drain(q)
    assert got == [line(1, "hello " * 49)]
    assert q.coalesced == 49


def test_a_final_replaces_its_queued_provisional_and_keeps_order():
    q = EventQueue()
    q.put(line(1, "a"))
    q.put(line(1, "a b", final=True))
    q.put(line(2, "c"))
    q.put(AudioLoss(3.0, 1.0, 4.0, "service unreachable"))
    q.put(line(2, "c d", final=True))
    assert drain(q) == [
        line(1, "a b", final=True),
        AudioLoss(3.0, 1.0, 4.0, "service unreachable"),
        line(2, "c d", final=True),
    ]


def test_status_is_coalesced_and_comes_after_captions():
    board = StatusBoard()
    q = EventQueue()
    board.set("audio", "listening")
    q.put(board.snapshot())
    board.set("audio", "speech")
    q.put(board.snapshot())
    q.put(line(1, "x", final=True))
    got = drain(q)
    assert got[0] == line(1, "x", final=True)
    assert len(got) == 2 and got[1].state_of("audio") == "speech"


def test_a_stuck_output_drops_the_oldest_finals_and_counts_them():
    q = EventQueue(max_finals=3)
    for i in range(5):
        q.put(line(i, str(i), final=True))
    assert [e.seq for e in drain(q)] == [2, 3, 4]
    assert q.dropped_finals == 2


def test_get_wakes_as_soon_as_something_is_put():
    q = EventQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    time.sleep(0.05)
    t0 = time.monotonic()
    q.put(line(1, "x"))
    t.join(2)
    assert got == [line(1, "x")] and time.monotonic() - t0 < 1.0
    assert q.get(timeout=0.01) is None


def test_activity_is_coalesced_per_utterance_after_captions_and_bounded():
    q = EventQueue(max_activity=2)
    q.put(Activity(1, 0.5))
    q.put(line(1, "hel"))
    q.put(Activity(1, 0.5, 2.0, "silence"))  # the end supersedes the start
    q.put(line(1, "hello", final=True))
    q.put(Activity(2, 3.0))
    assert drain(q) == [
        line(1, "hello", final=True),
        Activity(1, 0.5, 2.0, "silence"),
        Activity(2, 3.0),
    ]
    assert q.coalesced == 2  # the start of utterance 1 and the provisional "hel"
    for utt in range(3, 8):  # a stuck output keeps the newest max_activity utterances
        q.put(Activity(utt, float(utt)))
        q.put(Activity(utt, float(utt), utt + 0.5, "silence"))
    assert [a.utterance for a in drain(q)] == [6, 7]
    assert q.dropped_activity == 3 and len(q) == 0


# --- waiting: for an event, a wake (stop), or a deadline ------------------------------------


def in_thread(fn) -> tuple[threading.Thread, list[float]]:  # type: ignore[no-untyped-def]
    """Run ``fn`` on a thread; the list gets how long it took."""
    took: list[float] = []

    def run() -> None:
        t0 = time.monotonic()
        fn()
        took.append(time.monotonic() - t0)

    t = threading.Thread(target=run)
    t.start()
    return t, took


def test_wait_returns_for_an_event_a_wake_or_its_timeout():
    q = EventQueue()
    t, took = in_thread(lambda: q.wait(None))  # no timeout: only an event ends it
    time.sleep(0.1)
    assert t.is_alive()
    q.put(line(1, "x"))
    t.join(1)
    assert not t.is_alive() and 0.1 <= took[0] < 0.5
    t, took = in_thread(lambda: q.wait(None))  # an event is there: at once
    t.join(1)
    assert took[0] < 0.5  # (waiting, it would never return)
    t, took = in_thread(lambda: q.wait(5, events=False))  # a busy output ignores events
    time.sleep(0.1)
    q.put(line(2, "y", final=True))
    assert t.is_alive()
    q.wake()  # a stop
    t.join(1)
    assert not t.is_alive() and took[0] < 0.5
    t0 = time.monotonic()
    q.wait(0.1, events=False)  # the wake was taken by the wait it ended
    assert 0.1 <= time.monotonic() - t0 < 0.5


def test_a_wake_before_the_wait_is_not_lost():
    q = EventQueue()
    q.wake()
    t0 = time.monotonic()
    q.wait(None)
    assert time.monotonic() - t0 < 0.05


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def test_wake_fd_is_readable_while_armed_once_an_event_or_a_wake_is_there():
    q = EventQueue()
    fd = q.wake_fd
    try:
        assert q.arm() and not readable(fd)
        q.put(line(1, "x"))
        assert readable(fd)
        q.put(line(1, "xy"))  # one signal however many events
        q.disarm()
        assert not readable(fd)  # quiet until the next arm
        assert not q.arm()  # events are queued: no need to wait
        drain(q)
        assert q.arm(events=False)  # a busy output: only a wake counts
        q.put(line(2, "z"))
        assert not readable(fd)
        q.wake()
        assert readable(fd)
        q.disarm()
        assert not readable(fd)
        q.put(line(3, "not armed"))
        assert not readable(fd)  # nobody polls it: put() writes nothing
    finally:
        q.close()
    assert q.get(timeout=0) is not None  # the queue itself still works
