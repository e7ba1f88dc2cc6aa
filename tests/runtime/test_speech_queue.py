import threading

import pytest

from edgecap.runtime.frames import Frame
from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue

N = 320


def audio(u: int, i: int) -> SpeechAudio:
    return SpeechAudio(u, Frame(bytes([i % 251 + 1]) * (2 * N), i * N, 0.0))


def drain(q: SpeechQueue) -> list:
    out = []
    while (ev := q.get(timeout=0.01)) is not None:
        out.append(ev)
    return out


def test_fifo_and_close():
    q = SpeechQueue(max_samples=100 * N)
    events = [SpeechStart(1, 0, 0, 0.0), audio(1, 0), audio(1, 1), SpeechEnd(1, 2 * N, "stop", 0)]
    for ev in events:
        q.put(ev)
    q.close()
    assert drain(q) == events


def test_over_the_bound_the_oldest_audio_goes_markers_stay_and_loss_is_exact():
    q = SpeechQueue(max_samples=3 * N)
    q.put(SpeechStart(1, 0, 0, 0.0))
    frames = [audio(1, i) for i in range(10)]
    for f in frames:
        q.put(f)
    q.put(SpeechEnd(1, 10 * N, "silence", 0.0))
    q.close()
    got = drain(q)
    assert isinstance(got[0], SpeechStart) and isinstance(got[-1], SpeechEnd)
    assert got[1:-1] == frames[-3:]  # the newest audio is kept
    assert (q.dropped_frames, q.dropped_samples) == (7, 7 * N)
    assert q.held_samples == 0


def test_put_never_blocks_and_get_times_out():
    q = SpeechQueue(max_samples=N)
    with pytest.raises(TimeoutError):
        q.get(timeout=0.01)
    for i in range(1000):
        q.put(audio(1, i))  # would block forever if put() waited for a reader
    assert len(q) == 1


def test_closed_queue_refuses_puts_and_wakes_a_waiting_reader():
    q = SpeechQueue(max_samples=N)
    got = []
    reader = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    reader.start()
    q.close()
    reader.join(2)
    assert got == [None]
    with pytest.raises(RuntimeError):
        q.put(audio(1, 0))


def test_a_source_that_is_not_live_waits_for_room_instead_of_dropping():
    import time

    q = SpeechQueue(3 * 320)  # three frames
    for i in range(3):
        q.put(audio(1, i))
    done = threading.Event()

    def producer() -> None:
        q.put(audio(1, 3), wait_for_room=lambda: True)
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.3)  # full: it waits
    assert q.get(0.1).frame.start == 0  # room for one frame
    assert done.wait(2.0)
    t.join()
    assert q.dropped_frames == 0
    assert [q.get(0.1).frame.start // 320 for _ in range(3)] == [1, 2, 3]
    # stopping (wait_for_room says no): it drops as a live source would, and does not hang
    for i in range(3):
        q.put(audio(2, i))
    t0 = time.monotonic()
    q.put(audio(2, 3), wait_for_room=lambda: False)
    assert time.monotonic() - t0 < 0.5 and q.dropped_frames == 1


def test_the_waker_is_called_after_every_put_and_at_close():
    q = SpeechQueue(max_samples=2 * N)
    seen: list[int] = []
    q.set_waker(lambda: seen.append(len(q)))  # the event is in the queue when it is called
    q.put(SpeechStart(1, 0, 0, 0.0))
    for i in range(3):
        q.put(audio(1, i))  # the third drops the oldest audio: still one wake
    assert seen == [1, 2, 3, 3]
    q.get(0)
    assert seen == [1, 2, 3, 3]  # a take does not wake the consumer
    q.close()
    assert seen == [1, 2, 3, 3, 2]


def test_a_consumer_sleeping_on_an_event_is_woken_by_a_put_from_another_thread():
    q = SpeechQueue(max_samples=100 * N)
    wake = threading.Event()
    q.set_waker(wake.set)
    producer = threading.Timer(0.05, lambda: q.put(audio(1, 0)))
    producer.start()
    assert wake.wait(2.0)
    producer.join()
    assert q.get(0).frame.start == 0


def test_get_zero_never_waits():
    import time

    q = SpeechQueue(max_samples=N)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        q.get(0)
    assert time.monotonic() - t0 < 0.005
    q.put(audio(1, 0))
    assert q.get(0).frame.start == 0
    q.close()
    assert q.get(0) is None


def test_the_room_waker_is_called_when_audio_is_taken():
    q = SpeechQueue(max_samples=100 * N)
    room: list[int] = []
    q.set_room_waker(lambda: room.append(q.held_samples))
    q.put(SpeechStart(1, 0, 0, 0.0))
    q.put(audio(1, 0))
    q.put(audio(1, 1))
    q.get(0)  # a marker: no room made
    assert room == []
    q.get(0)
    assert room == [N]  # called once the room is there
    q.set_room_waker(None)
    q.get(0)
    assert room == [N]


def test_a_consumer_that_ends_removes_only_its_own_waker():
    q = SpeechQueue(max_samples=N)
    old, new = threading.Event(), threading.Event()
    q.set_waker(old.set)
    q.set_waker(new.set)  # the replacement registered before the old one ended
    q.unset_waker(old.set)
    q.put(audio(1, 0))
    assert new.is_set() and not old.is_set()
    q.unset_waker(new.set)
    new.clear()
    q.put(audio(1, 1))
    assert not new.is_set()


def test_requeued_events_come_first_in_order_and_count_against_the_bound():
    q = SpeechQueue(max_samples=5 * N)
    woken: list[int] = []
    q.set_waker(lambda: woken.append(1))
    later = [SpeechStart(2, 10 * N, 10 * N, 0.0), audio(2, 10)]
    for ev in later:
        q.put(ev)
    held = [audio(1, 3), audio(1, 4), SpeechEnd(1, 5 * N, "silence", 0.0)]
    q.requeue(held)
    assert len(woken) == 3  # two puts and the requeue
    assert q.held_samples == 3 * N
    q.requeue([audio(1, 0), audio(1, 1), audio(1, 2)])  # 6 frames now: the oldest goes
    assert (q.dropped_frames, q.dropped_samples) == (1, N)
    q.close()
    assert drain(q) == [audio(1, 1), audio(1, 2), *held, *later]
