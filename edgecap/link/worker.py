"""The Link: the one owner of the connection to a cloud speech service.

It takes the gate's speech from the speech queue, keeps it in the uplink buffer until the
service confirmed it, and runs the session on one thread (its own), which also reads the
connection (``connection.py``: no reader thread, no hand-over per message). Everything a service
does differently is in its codec, and every codec call happens on this thread — the codec
parses here, and the replies its protocol requires are sent from here. The Link decides
*when*:

- connect on demand at speech start (and close after ``idle_close`` of quiet), or stay warm;
- get a bearer token first if the codec asks for one (``token.py``): kept while it has
  more than ``renew_before`` left, fetched anew as a connection is made after that;
- a turn per utterance: ``begin_turn`` before its first audio (again on a new session when
  the utterance goes on there), ``end_turn`` at its end (or when the session ends inside it);
- send audio in chunks of ``codec.audio_chunk_ms``, buffered speech no faster than
  ``replay_speed`` × real time (a token bucket with a one-second burst);
- keepalive while no audio flows;
- notice a dead connection: nothing received — not even a pong — for ``dead_after``, or
  audio sent and no answer for ``dead_after``;
- reconnect with exponential backoff and full jitter; a retry class decided by the codec:
  now (503), once, slow (rate limits), or never until a reload or ``fatal_retry`` (a refused
  key, account or config — the state says so, and nothing hammers the service);
- renew the session before the service's limit, at a pause if there is one, and end it
  gracefully at stop, so the last words arrive: end of stream, then wait for ``finished``
  — or, for a service that never says it (``codec.sends_finished`` False), until every turn
  end was answered and the service went quiet for ``codec.finish_grace``. Either is a
  normal end: no failure, no replay, no fallback.

A stop is a stop: from the stop request on, no new session begins (a connection attempt in
progress is interrupted); the open session gets what the pace allows for ``STOP_SEND``, then
its graceful end, for at most ``finish_timeout``. What was not sent, or sent and not
confirmed, is reported lost with that cause — or handed to the offline engine.

The end of the input (a file, stdin) is not a stop: everything held is sent, paced, and the
session ends gracefully; the link retries as usual unless it gives up (``_given_up``: the
service refused the session, or has failed for ``PATIENCE``, or three sessions failed after
the end of input).

A source that is not live (``speech.producer_waits``) waits for the link: the link takes no
more than ``BACKLOG`` of unsent speech from the speech queue, so the file is read as fast as
the service may be sent to and nothing is dropped — unless the service is given up.

Every loss is reported once, with its cause, and added to ``lost``: the totals at stop are
the sum of what was reported.

Speech is sent without a thread hand-over when it can be: while the link thread sleeps
with an open session that only needs it sent, the producer (capture) that just put it takes
the link's turn (``_turn``, a lock the link thread holds except while it sleeps) and sends
it itself (``_producer_turn``); whatever else is to do wakes the link thread. So every codec
call and every use of the connection still happens in the link's turn, one at a time.

The link thread sleeps until something happens, in one ``select()`` on its connection's
socket (a message, the end of the connection) and on one wake-up flag (``_wake``, an
eventfd: ``runtime.wakeup``) that everything else able to give it work sets: the speech
queue (a put, its close), a stop, a reload, a hand-over — and, for a file fed to the
offline engine, room in that engine's queue. Otherwise it sleeps until the
earliest deadline it actually has (``_next_due``): the rest of a chunk that is late, the
pace, a keepalive, a ping, a dead connection, the session's renewal or idle close, the end
of a finishing session, the retry, the fallback, a file run's patience. Each turn of the
loop does everything that is due and then computes the next deadline from the state it
left, so no deadline is missed and none is waited for twice.
"""

from __future__ import annotations

import bisect
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from edgecap.captions.events import SynthesizedAudio
from edgecap.captions.sink import CaptionSink
from edgecap.captions.tokens import TokenUpdate
from edgecap.config.schema import LinkConfig
from edgecap.config.secrets import SecretValue
from edgecap.link.connection import (
    Closed,
    ConnectFailed,
    Connection,
    Dialer,
    InboxItem,
    Message,
    Refused,
    SendFailed,
    tls_context,
)
from edgecap.link.fallback import Fallback
from edgecap.link.token import TokenCache, TokenFailed
from edgecap.link.uplink import Loss, UplinkBuffer
from edgecap.runtime.backoff import Backoff
from edgecap.runtime.frames import SAMPLE_RATE
from edgecap.runtime.logsetup import fields
from edgecap.runtime.speech import SpeechAudio, SpeechEnd, SpeechStart
from edgecap.runtime.speech_queue import SpeechQueue
from edgecap.runtime.status import StatusBoard
from edgecap.runtime.wakeup import Wakeup
from edgecap.runtime.worker import Worker
from edgecap.services.codec import (
    Codec,
    Outgoing,
    ProtocolError,
    Retry,
    ServiceError,
    ServiceNotice,
    SessionFinished,
    TokenRequest,
)

log = logging.getLogger(__name__)

INBOX_SIZE = 256  # service messages (raw frames) waiting for the link thread
PACE_BURST = 1.0  # seconds of audio that may go at once above the replay speed
ROLLOVER_GRACE = 30.0  # past session_max, renew even in the middle of an utterance
HEALTHY_AFTER = 30.0  # a session this old resets the backoff
STOP_SEND = 0.5  # at stop, unsent speech goes (paced) for this long before the session ends
BACKLOG = 2.0  # s of unsent speech a waiting producer (a file) is held back at
HEADROOM = SAMPLE_RATE // 10  # samples kept free in the offline engine's queue
PATIENCE = 30.0  # a file run (or one whose input ended) gives up a service down this long
END_SESSIONS = 3  # after the end of input, sessions that may fail before the link gives up
# A clock other than time.monotonic (tests run link time faster) runs at a rate the link
# does not know, so its deadlines cannot be slept until: the link then looks this often.
FOREIGN_CLOCK_WAIT = 0.02
# The backoff's healthy clock starts a moment after the session's (``_connect``): its
# reset is looked at this much after HEALTHY_AFTER, so that one wake-up finds it due.
HEALTHY_MARGIN = 0.05
# A keepalive or a ping due this soon goes with what the link wakes for now: on a quiet
# connection they fall a moment apart (the keepalive after the last one, the ping after the
# last pong, which comes unannounced), and one wake-up does them all.
TIMER_SLACK = 0.05

# Why speech was lost (the loss reports' causes)
DROPPED_UNREACHABLE = "buffer full while the service was unreachable"
DROPPED_REFUSED = "buffer full while the service refused the session"
DROPPED_PACED = "buffer full while sending was paced"
OFFLINE_QUEUE_FULL = "the offline engine's queue was full"
UNSENT_AT_STOP = "not sent before stop"
UNCONFIRMED_AT_STOP = "not confirmed by the service before stop"
UNSENT_UNREACHABLE = "not sent: the service was unreachable"
UNSENT_REFUSED = "not sent: the service refused the session"


class LinkWorker(Worker):
    def __init__(
        self,
        speech: SpeechQueue,
        codec: Codec,
        key: Callable[[], SecretValue | None],
        settings: LinkConfig,
        status: StatusBoard,
        sink: CaptionSink,
        *,
        fallback: Fallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("link")
        self.fallback = fallback
        self.speech = speech
        self.codec = codec
        self._key_source = key
        self._key: SecretValue | None = None
        self.settings = settings
        self.status = status
        self.sink = sink
        self._clock = clock
        self._tls = tls_context(settings.ca_file)
        self.buffer = UplinkBuffer(round(settings.buffer * SAMPLE_RATE))
        self.backoff = Backoff(
            first=settings.retry_first,
            cap=settings.retry_max,
            healthy_after=HEALTHY_AFTER,
            clock=clock,
        )
        self._inbox: queue.Queue[InboxItem] = queue.Queue(INBOX_SIZE)
        # What the link thread sleeps on, with its connection's socket (module docstring).
        self._wake = Wakeup()
        self._speech_wanted = False  # a put into the speech queue wakes the thread
        # Held by whoever runs the link's state machine: the link thread for each turn of
        # its loop, released only while it sleeps — and, during that sleep, a producer
        # thread that sends its speech itself (``_speech_arrived``: no hand-over per block).
        self._turn = threading.Lock()
        self._asleep = False  # the link thread sleeps (set and read under _turn)
        self._asleep_until: float | None = None  # ... until then (link clock; None: an event)
        self._send_failed: SendFailed | None = None  # a send on a producer's thread failed
        self._on_producer = False  # _turn is held by a producer's thread
        self.producer_turns = 0  # speech sent on the producer's thread (tests, benchmarks)
        self._room_watched: SpeechQueue | None = None  # a queue whose room wakes the thread
        self.wakeups = 0  # times the thread woke from its wait (tests, benchmarks)
        self._conn: Connection | None = None
        # a token fetch or a connection being opened (interruptible)
        self._opening: Dialer | Connection | None = None
        self._token_cache = TokenCache(settings.connect_timeout)
        self._conn_no = 0
        self._reload = threading.Event()
        # session state
        self._finishing_since: float | None = None
        self._finished = False
        self._session_started = 0.0
        self._last_sent = 0.0
        self._unanswered_since: float | None = None  # first send not yet answered
        self._ping_sent_at: float | None = None
        self._tokens = PACE_BURST
        self._tokens_at = 0.0
        self._partial_since: float | None = None  # the head's audio is short of a chunk since
        self._pump_due: float | None = None  # when the pump can send more (pace, late rest)
        # per turn end sent and not yet answered (``finalized``): the audio sent before it
        self._finalize_marks: deque[int] = deque(maxlen=1000)
        self._map_pos: list[int] = []  # session audio position → capture sample
        self._map_capture: list[int] = []
        self._in_utterance = False  # a turn is open on this session
        self._stop_send_until: float | None = None
        # link state
        self._input_closed = False
        self._retry_at = 0.0
        self._rejected: ServiceError | None = None
        self._last_error: ServiceError | None = None
        self._now_retries = 0
        self._down_since: float | None = None  # failing since (cleared by an answer)
        self._end_failures = 0  # sessions failed after the end of input
        self._last_speech = clock()
        self.patience = PATIENCE
        self._backlog = round(min(BACKLOG, settings.buffer / 2) * SAMPLE_RATE)
        # speech being dropped and not reported yet, and why
        self._open_loss: Loss | None = None
        self._open_cause = ""
        self._fallback_dropped = 0  # samples the offline engine's queue dropped, accounted
        # figures
        self.frames = 0  # gate frames received from the speech queue
        self.utterances = 0
        self.attempts = 0
        self.sessions = 0
        self.failures = 0
        self.bad_messages = 0
        self.unknown_events = 0
        self.notices = 0
        self._unknown_types: set[str] = set()
        self.dead_detected = 0
        self.token_failures = 0
        self.bytes_sent = 0
        self.resumed_at: list[float] = []  # when sending resumed after an outage (monotonic)
        self.lost = Loss()  # every loss reported: the totals at stop
        self.loss_reports = 0

    # --- owner side -------------------------------------------------------------------
    def request_reload(self) -> None:
        """Read the key again and retry now, even after the service refused it."""
        self._reload.set()
        self._wake.set()

    def request_stop(self) -> None:
        """Stop: no new session from now on; a connection attempt in progress ends at once."""
        super().request_stop()
        self._wake.set()
        self._interrupt_connect()

    def hand_over(self) -> None:
        super().hand_over()
        self._wake.set()
        self._interrupt_connect()

    def _interrupt_connect(self) -> None:
        # The link thread sets _opening before it looks at the stop flag again, and the
        # flag is set before _opening is read here: one of the two sees the other.
        opening = self._opening
        if opening is not None:
            opening.interrupt()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    # --- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        self._set_state("idle")
        self._turn.acquire()
        self.speech.set_waker(self._speech_arrived)
        try:
            while True:
                # Cleared before looking at anything: whatever comes from now on wakes the
                # wait at the end of this turn.
                self._wake.clear()
                failed, self._send_failed = self._send_failed, None
                if failed is not None and self._conn is not None:
                    self._lost(failed)  # a send on a producer's thread failed: handled here
                self._pull()
                self._read_connection()
                self._drain_inbox()
                now = self._clock()
                if self._reload.is_set():
                    self._do_reload(now)
                if self.fallback is not None:
                    self._check_fallback(now)
                if self._conn is None:
                    if self._done(now):
                        break
                    if self._wants_connection(now) and now >= self._retry_at:
                        self._connect(now)
                        if self._conn is not None:
                            if self.fallback is not None:
                                self._check_fallback(self._clock())  # back to the cloud?
                            self._sending(self._clock())  # the backlog goes before more comes
                elif self._finishing_since is not None:
                    self._check_finishing(now)
                else:
                    self._sending(now)
                self.beat()
                self._sleep()
            self._shutdown()
        finally:
            self.speech.unset_waker(self._speech_arrived)
            self._watch_room(None)
            if self._conn is not None:
                self._conn.close(1.0)
                self._conn = None
            self._wake.close()
            self._turn.release()

    # --- sleeping ---------------------------------------------------------------------
    def _speech_arrived(self) -> None:
        """The speech queue's waker, on the producer's thread (capture): wake the link if
        it takes — or, while it sleeps with a session that only needs this speech sent,
        send it from here (``_producer_turn``): a thread hand-over per block costs more
        than the send itself."""
        if not self._speech_wanted:
            return
        if self._asleep and self._turn.acquire(blocking=False):
            try:
                if self._asleep and self._producer_turn():
                    return
            finally:
                self._turn.release()
        self._wake.set()

    def _producer_turn(self) -> bool:
        """Take the speech that came and send what the pace allows, on the producer's
        thread, while the link thread sleeps (``_turn`` held). Only the plain case: an open
        session that is neither ending nor failing, no reload or hand-over pending, no
        offline engine in use, and a socket that takes the bytes without waiting (a
        producer never waits on the network). False: the link thread must look — it is woken.
        Everything else (reading, timers, failures, ends) stays on the link thread."""
        conn = self._conn
        fb = self.fallback
        if (
            conn is None
            or self._wake.is_set()
            or self._finishing_since is not None
            or self._input_closed
            or self._open_loss is not None
            or self.stopping
            or self.handing_over.is_set()
            or self._reload.is_set()
            or (fb is not None and fb.active)
            or not conn.has_room()
        ):
            return False
        self._on_producer = True
        try:
            now = self._clock()
            self._pull()
            if self._input_closed or self._open_loss is not None:
                return False
            self._pump(now, flush=False)
        finally:
            self._on_producer = False
        self.producer_turns += 1
        if self._send_failed is not None or self._conn is not conn:
            return False
        # The sleeping thread's deadline still holds unless this made an earlier one.
        due = self._next_due(self._clock())
        return due is None or (self._asleep_until is not None and due >= self._asleep_until)

    def _sleep(self) -> None:
        """Sleep until something happens or the next deadline, in one wait."""
        now = self._clock()
        due = self._next_due(now)
        room = None if self._input_closed else self._room()
        held_back = room is not None and room <= 0
        self._speech_wanted = wanted = not self._input_closed and not held_back
        if wanted and self.speech.pending:
            # Speech (or the end of input) the link did not take: it came while the link
            # was held back, or after it looked. (Looked at after the flag is set: what comes
            # later wakes the wait.)
            return
        fb = self.fallback
        if held_back and fb is not None and fb.active:
            # Held back by the offline engine's queue: its room is what the link waits for.
            self._watch_room(fb.queue)
            if self._room() != room:
                return  # room came while the watch was being set up
        else:
            self._watch_room(None)
        timeout = None if due is None else max(0.0, due - now)
        if self._clock is not time.monotonic:
            timeout = FOREIGN_CLOCK_WAIT if timeout is None else min(timeout, FOREIGN_CLOCK_WAIT)
        conn = self._conn
        if timeout == 0.0 or (conn is not None and conn.buffered):
            return
        fd = None if conn is None else conn.fileno()
        self._asleep_until = due
        self._asleep = True
        self._turn.release()  # a producer may send its speech meanwhile (_speech_arrived)
        try:
            with self.waiting():
                self._wake.wait(timeout, fd)
        finally:
            self._turn.acquire()
            self._asleep = False
        self.wakeups += 1

    def _watch_room(self, speech: SpeechQueue | None) -> None:
        if speech is self._room_watched:
            return
        if self._room_watched is not None:
            self._room_watched.set_room_waker(None)
        self._room_watched = speech
        if speech is not None:
            speech.set_room_waker(self._wake.set)

    def _next_due(self, now: float) -> float | None:
        """The earliest moment at which something is due that no event will announce (in
        the link's clock); None: nothing but an event. Every deadline here is one that the
        loop acts on once it is reached, so a deadline in the past is never waited for
        twice (each clause mirrors the check it stands for)."""
        due: list[float] = []
        conn = self._conn
        if conn is None and self._done(now):
            return now  # the session ended in this turn, and with it the link's work
        fb = self.fallback
        # the fallback's down clock runs (due() at infinity: it is running at all)
        if fb is not None and conn is None and not fb.active and fb.due(math.inf):
            due.append(now + fb.after - fb.down_for(now))
        if conn is None:
            if self._rejected is not None or self._would_connect():
                due.append(self._retry_at)
            if self._down_since is not None and (self._input_closed or self.speech.producer_waits):
                give_up = self._down_since + self.patience  # _given_up
                if give_up > now:
                    due.append(give_up)
        elif self._finishing_since is not None:  # _check_finishing
            due.append(self._finishing_since + self.settings.finish_timeout)
            if not self._finished and not self.codec.sends_finished and not self._finalize_marks:
                quiet_since = max(self._finishing_since, conn.last_message)
                due.append(quiet_since + self.codec.finish_grace)
        else:  # _sending
            if self._pump_due is not None:
                due.append(self._pump_due)
            if self.stopping and self._stop_send_until is not None:
                due.append(self._stop_send_until)
            due.extend(self._housekeeping_due(conn, now))
        return min(due) if due else None

    def _housekeeping_due(self, conn: Connection, now: float) -> list[float]:
        """The deadlines of ``_housekeeping``."""
        dead = self.settings.dead_after
        due = [conn.last_received + dead]
        if self._ping_sent_at is None or self._ping_sent_at < conn.last_received:
            due.append(conn.last_received + dead / 2)
        if self.codec.keepalive_interval is not None:
            due.append(self._last_sent + self.codec.keepalive_interval)
        if self._unanswered_since is not None:
            due.append(self._unanswered_since + dead)
        healthy = self._session_started + HEALTHY_AFTER + HEALTHY_MARGIN
        if healthy > now:
            due.append(healthy)
        if self.stopping or self._input_closed:
            return due  # ending: no renewal, no idle close
        renew = self._session_started + self.codec.session_max
        due.append(renew + ROLLOVER_GRACE if self._in_utterance else renew)
        if self.settings.connect == "on_demand" and not self._in_utterance and self.buffer.empty:
            due.append(max(self._last_speech, self._session_started) + self.settings.idle_close)
        return due

    def _sending(self, now: float) -> None:
        """A session is open: send (paced), keep it alive, and end it when it is time."""
        ending = self.stopping or self._input_closed
        self._pump(now, flush=ending)
        if self._conn is None:
            return  # the send failed
        if self._open_loss is not None and not self.buffer.unsent_samples:
            self._close_loss()  # sending caught up: the paced stretch is over
        if self.stopping:
            if self._stop_send_until is None:
                self._stop_send_until = now + STOP_SEND
            if not self.buffer.pending or now >= self._stop_send_until:
                self._finish(now, "stop")
                return
        elif self._input_closed and not self.buffer.pending:
            self._finish(now, "end of input")
            return
        self._housekeeping(now, ending)

    def _done(self, now: float) -> bool:
        """Unconnected: is the link's work over? At stop, always (no new session); at the
        end of input once nothing is left for the service, or the service is given up."""
        if self.stopping:
            return True
        if not self._input_closed:
            return False
        return not self.buffer.held_samples or self._given_up(now)

    def _given_up(self, now: float) -> bool:
        """Not worth waiting for (a file run, or the end of input; a live run never gives
        up): the service refused the session, has been failing for ``patience``, or
        sessions failed END_SESSIONS times after the end of input."""
        if self._rejected is not None:
            return True
        if self._input_closed and self._end_failures >= END_SESSIONS:
            return True
        return self._down_since is not None and now - self._down_since >= self.patience

    def _shutdown(self) -> None:
        self._account_drops(False)  # dropped and not reported yet
        self._close_loss()
        if self.handing_over.is_set():
            # A reload: the link that replaces this one takes what this one did not get
            # captioned, before what is still queued (well-formed utterances, in order).
            held = self.buffer.take_all()
            if held:
                self.speech.requeue(held)
                log.info(
                    "%.1f s of speech left for the new link",
                    sum(e.frame.samples for e in held if isinstance(e, SpeechAudio)) / SAMPLE_RATE,
                )
            if self.fallback is not None:
                self.fallback.close()
        elif self.fallback is not None:
            if self.buffer.held_samples:
                # not delivered at stop: the offline engine captions it rather than nothing
                self.fallback.take_at_stop(self.buffer.take_all())
                self._note_fallback_drops()
                self._close_loss()
            self.fallback.close()
        else:
            loss = self.buffer.take_pending()
            if loss.samples:
                self._report_loss(loss, self._unsent_cause())
        self.sink.close()  # the open line's final words are output, final
        self._set_state("stopped")

    def _unsent_cause(self) -> str:
        if self._rejected is not None:
            return UNSENT_REFUSED
        return UNSENT_AT_STOP if self.stopping else UNSENT_UNREACHABLE

    # --- input ------------------------------------------------------------------------
    def _pull(self) -> None:
        """Move the gate's events that are there into the uplink buffer (never waits)."""
        if self.handing_over.is_set():
            self._input_closed = True  # the queue's rest is for the link that replaces this one
        if self._input_closed:
            return
        room = self._room()
        if room is not None and room <= 0:
            return  # held back: the producer waits for the link, the link for the pace
        took_audio = False
        while room is None or room > 0:
            try:
                event = self.speech.get(0.0)
            except TimeoutError:
                break
            if event is None:
                self._input_closed = True
                break
            if self.fallback is None or not self.fallback.offer(event, self._conn is not None):
                self.buffer.push(event)
            if isinstance(event, SpeechAudio):
                self.frames += 1
                took_audio = True
                if room is not None:
                    room -= event.frame.samples
            elif isinstance(event, SpeechEnd):
                self.utterances += 1
            self._last_speech = self._clock()  # the gate emits nothing while it is quiet
        self._account_drops(took_audio)

    def _room(self) -> int | None:
        """Audio (samples) the link may take from the speech queue now; None: no limit.

        A producer that waits (a source that is not live) is taken from only as fast as
        the speech can go on — to the service, paced, or to the offline engine — so a file
        is never read faster than it is captioned and nothing is dropped. A live source
        is always taken from: what cannot be kept is dropped oldest first, and reported."""
        if not self.speech.producer_waits or self.stopping:
            return None
        fb = self.fallback
        if fb is not None and fb.active:
            return fb.queue.max_samples - HEADROOM - fb.queue.held_samples
        if fb is None and self._given_up(self._clock()):
            return None  # nobody will take it: read on, and report what is lost
        return self._backlog - self.buffer.unsent_samples

    def _account_drops(self, took_audio: bool) -> None:
        """After taking events: note what the buffer (or the offline engine's queue) had
        to drop, and why; a batch that took audio and dropped nothing ends a loss."""
        dropped = False
        loss = self.buffer.take_loss()
        if loss is not None:
            self._note_loss(loss, self._drop_cause())
            dropped = True
        if self._note_fallback_drops():
            dropped = True
        if took_audio and not dropped:
            self._close_loss()

    def _drop_cause(self) -> str:
        if self._conn is not None:
            return DROPPED_PACED
        return DROPPED_REFUSED if self._rejected is not None else DROPPED_UNREACHABLE

    def _note_fallback_drops(self) -> bool:
        fb = self.fallback
        if fb is None or fb.queue.dropped_samples == self._fallback_dropped:
            return False
        samples = fb.queue.dropped_samples - self._fallback_dropped
        self._fallback_dropped = fb.queue.dropped_samples
        self._note_loss(Loss(samples=samples), OFFLINE_QUEUE_FULL)  # capture times unknown
        return True

    def _note_loss(self, loss: Loss, cause: str) -> None:
        """Speech is being dropped: one report per stretch and cause, when it is over."""
        if self._open_loss is not None and self._open_cause != cause:
            self._close_loss()
        if self._open_loss is None:
            self._open_loss, self._open_cause = Loss(), cause
            log.warning(
                "%s (%.0f s held): dropping the oldest speech",
                cause,
                self.settings.buffer,
                **fields(state="dropping", loss_reason=cause),
            )
        self._open_loss.merge(loss)
        self._put_lost()

    def _close_loss(self) -> None:
        """The stretch being dropped is over (or the link stops): report it."""
        loss, self._open_loss = self._open_loss, None
        if loss is not None and loss.samples:
            self._report_loss(loss, self._open_cause)

    def _report_loss(self, loss: Loss, reason: str) -> None:
        self.lost.merge(loss)
        self.loss_reports += 1
        log.warning(
            "%.2f s of speech lost (%s), captured between %.2f s and %.2f s",
            loss.seconds,
            reason,
            loss.first or 0.0,
            loss.last or 0.0,
            # the values in the journal fields too: a loss never folds into another
            **fields(lost_s=f"{loss.seconds:.2f}", loss_reason=reason, loss_first=loss.first),
        )
        self.status.add("speech_lost_reports")
        self._put_lost()
        self.sink.loss(loss.seconds, loss.first, loss.last, reason)

    def _put_lost(self) -> None:
        pending = self._open_loss.samples if self._open_loss is not None else 0
        self.status.put("uplink_lost_s", round((self.lost.samples + pending) / SAMPLE_RATE, 3))

    # --- connecting -------------------------------------------------------------------
    def _wants_connection(self, now: float) -> bool:
        if self._rejected is not None:
            if now < self._retry_at:
                return False  # until a reload, or fatal_retry has passed
            log.info(
                "trying %s again %.0f s after it refused",
                self.codec.name,
                self.settings.fatal_retry,
            )
            self._rejected = None
        return self._would_connect()

    def _would_connect(self) -> bool:
        """A session is wanted (once the retry time has come and nothing was refused)."""
        if self.settings.connect == "warm":
            return True
        if self.fallback is not None and self.fallback.active:
            return True  # keep trying, to learn when the service is back
        return bool(self.buffer.pending) or self.buffer.unconfirmed

    def _connect(self, now: float) -> None:
        key = None
        if self.codec.needs_key:  # a service that takes no key is never asked for one
            if self._key is None:
                self._key = self._key_source()
            key = self._key
        self._conn_no += 1
        self.attempts += 1
        self.status.put("link_attempts", self.attempts)
        self._set_state("connecting")
        self.codec.reset()
        request = self.codec.token_request(key)
        token, fresh = None, False
        if request is not None:
            got = self._token(request, now)
            if got is None:
                return  # the failure was handled
            token, fresh = got
        conn = Connection(
            self._conn_no,
            self.codec.handshake(key, token),
            tls=self._tls,
            proxy=self.settings.proxy,
            connect_timeout=self.settings.connect_timeout,
            clock=self._clock,
        )
        self._opening = conn
        try:
            if self.stopping:
                conn.interrupt()  # a stop that came as the attempt began
            conn.open()
            for out in self.codec.start():
                conn.send(out)
        except Refused as exc:
            self._session_failed(self._refused(exc.status, token is not None, fresh))
            return
        except ConnectFailed as exc:
            if not self._cut_by_stop(conn, "connection"):
                self._session_failed(exc.error)
            return
        except SendFailed as exc:  # the start message (on a socket the stop may have shut)
            conn.close(1.0)
            if not self._cut_by_stop(conn, "connection"):
                self._session_failed(ServiceError(None, "connection_lost", str(exc), Retry.BACKOFF))
            return
        finally:
            self._opening = None
        now = self._clock()
        self._conn = conn
        self.sessions += 1
        self.status.put("link_sessions", self.sessions)
        self._session_started = self._last_sent = self._tokens_at = now
        self._tokens = PACE_BURST
        self._partial_since = self._pump_due = None
        self._finished = False
        self._finishing_since = None
        self._unanswered_since = None
        self._ping_sent_at = None
        self._finalize_marks.clear()
        self._map_pos.clear()
        self._map_capture.clear()
        self._in_utterance = False
        self.backoff.succeeded()
        if self.fallback is not None:
            self.fallback.link_connected()
        replay = self.buffer.pending_samples / SAMPLE_RATE
        log.info(
            "connected to %s (session %d)%s",
            self.codec.name,
            self.sessions,
            f", replaying {replay:.1f} s of buffered speech" if replay >= 0.5 else "",
            **fields(state="connected", service=self.codec.name),
        )
        self.resumed_at.append(now)
        self._close_loss()  # the outage is over: what it cost is known
        self._set_state("connected")

    def _token(self, request: TokenRequest, now: float) -> tuple[SecretValue, bool] | None:
        """The bearer token for this connection: the cached one, or a new one when it has
        less than ``renew_before`` left, and whether it was fetched just now. None: none
        could be had (the attempt failed).

        Fetched here, on the link thread, as a connection is made — the only moment a token
        is used (an open connection stays authorised after its token expires), so there is
        no renewal thread, and a fetch never stalls the audio of a running session. The
        fetch is interruptible by a stop like ``conn.open()``."""
        dialer = Dialer(self._tls, self.settings.proxy, self.settings.connect_timeout)
        self._opening = dialer
        try:
            if self.stopping:
                dialer.interrupt()  # a stop that came as the attempt began
            fetches = self._token_cache.fetches
            token = self._token_cache.get(request, now, dialer)
            fresh = self._token_cache.fetches > fetches
            if fresh:
                log.info("got a new %s token", self.codec.name)
            return token, fresh
        except TokenFailed as exc:
            if not self._cut_by_stop(dialer, "token fetch"):
                self.token_failures += 1
                self.status.put("link_token_failures", self.token_failures)
                self._session_failed(exc.error)
            return None
        finally:
            self._opening = None

    def _refused(self, status: int, with_token: bool, fresh: bool) -> ServiceError:
        """The upgrade was refused. A cached token refused (401/403: revoked, or expired
        early) is dropped and a fresh one tried at once. A token fetched for this very
        attempt refused — the second refusal in a row, or a first one that a new token
        would not change — leaves the codec's verdict (fatal, for a refused key)."""
        error = self.codec.handshake_refused(status)
        if not with_token or status not in (401, 403):
            return error
        self._token_cache.drop()
        if fresh:
            return error
        return ServiceError(
            status,
            "token_refused",
            f"the service refused the token (HTTP {status}); trying a fresh one",
            Retry.NOW,  # at once (not ONCE: that compares with an error of long ago)
        )

    def _cut_by_stop(self, opener: Dialer | Connection, what: str) -> bool:
        """Whether the stop's interrupt is what ended this failed attempt. If so it is
        abandoned — not the service's failure, neither counted nor retried — and the buffer
        is settled as for any session ended by a stop."""
        if not (opener.interrupted and self.stopping):
            return False
        self._teardown()
        log.info(
            "%s %s abandoned for the stop",
            self.codec.name,
            what,
            **fields(state="stopping", service=self.codec.name),
        )
        return True

    def _session_failed(self, error: ServiceError) -> None:
        """The session ended badly (or never began): tear down, decide when to retry."""
        now = self._clock()
        self.failures += 1
        self.status.put("link_failures", self.failures)
        self._teardown()
        if self._down_since is None:
            self._down_since = now
        if self._input_closed:
            self._end_failures += 1
        repeat = self._last_error is not None and self._last_error.kind == error.kind
        self._last_error = error
        if self.stopping:
            # no retry, no new session: what it did not confirm was reported at teardown
            log.warning(
                "%s session ended while stopping: %s",
                self.codec.name,
                error.describe(),
                **fields(state="stopping", service=self.codec.name, error=error.kind),
            )
            return
        if error.retry is Retry.FATAL:
            self._rejected = error
            self._retry_at = now + self.settings.fatal_retry
            log.error(
                "%s refused the session: %s — not retrying until 'systemctl reload edgecap' "
                "or %.0f s from now",
                self.codec.name,
                error.describe(),
                self.settings.fatal_retry,
                **fields(state="rejected", service=self.codec.name, error=error.kind),
            )
            self._set_state("rejected", error.describe())
            return
        if error.retry is Retry.NOW and self._now_retries < 1:
            self._now_retries += 1
            delay = 0.0
        elif error.retry is Retry.ONCE and not repeat:
            delay = 0.0
        else:
            delay = self.backoff.next_delay()
            if error.retry is Retry.SLOW:
                delay = max(delay, self.codec.slow_retry_min)
        self._retry_at = now + delay
        log.warning(
            "%s session ended: %s; retrying in %.1f s",
            self.codec.name,
            error.describe(),
            delay,
            **fields(state="retrying", service=self.codec.name, error=error.kind),
        )
        self._set_state("retrying", error.describe())

    def _teardown(self, graceful: bool = False) -> None:
        """Close the connection (with a close frame after a graceful end) and hand back
        to the buffer what the session did not confirm."""
        if self._conn is not None:
            self._conn.close(1.0, code=1000 if graceful else None)
            self._conn = None
        self._finishing_since = None
        self._stop_send_until = None
        if not self.stopping or self.fallback is not None or self.handing_over.is_set():
            # replayed on the next session — or, stopping, for the offline engine or the
            # link that replaces this one (a reload), at shutdown
            self.buffer.new_session(replay=not self.stopping)
            # what the full buffer dropped of this session's unconfirmed audio is lost now
            self._account_drops(False)
        else:
            # the last session: what it did not confirm will never be captioned
            loss = self.buffer.discard_unconfirmed()
            if loss.samples:
                self._report_loss(loss, UNCONFIRMED_AT_STOP)
        self.sink.session_ended()
        self._drop_stale_inbox()
        self.status.put("uplink_replayed_s", round(self.buffer.replayed_samples / SAMPLE_RATE, 3))

    def _drop_stale_inbox(self) -> None:
        while True:
            try:
                self._inbox.get_nowait()
            except queue.Empty:
                return

    def _do_reload(self, now: float) -> None:
        self._reload.clear()
        self._key = None  # read again at the next connection
        self._token_cache.drop()  # and a token fetched with it
        if self._rejected is not None:
            log.info("reload: trying %s again", self.codec.name)
            self._rejected = None
            self._set_state("idle")
        self._down_since = None  # the owner acted: the service gets a fresh chance
        self.backoff.reset()
        self._retry_at = now

    # --- the inbox --------------------------------------------------------------------
    def _read_connection(self) -> None:
        """What the connection has for us now, into the inbox (the link handles it at once,
        so the inbox never holds more than one read)."""
        conn = self._conn
        if conn is not None:
            for item in conn.read():
                self._inbox.put_nowait(item)

    def _drain_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if self._conn is None or item.conn != self._conn.number:
                continue  # from a connection already torn down
            if isinstance(item, Message):
                self._on_message(item.data)
            elif isinstance(item, Closed):
                self._on_closed(item)

    def _on_message(self, data: str | bytes) -> None:
        """Parse one message of the current session, send the replies it asks for, then
        handle its events."""
        try:
            parsed = self.codec.parse(data)
        except ProtocolError as exc:
            self._bad_message(str(exc))
            return
        except Exception as exc:  # a codec bug on odd input must not end the link
            log.exception("the %s codec failed on a message", self.codec.name)
            self._bad_message(f"{type(exc).__name__}: {exc}")
            return
        self._unanswered_since = None  # the service is answering
        if parsed.replies:
            try:
                for out in parsed.replies:
                    self._send(out, self._clock())
            except SendFailed as exc:
                self._lost(exc)
                return
        for event in parsed.events:
            if self._conn is None:
                break  # an earlier event ended the session
            self._on_event(event)

    def _bad_message(self, problem: str) -> None:
        self.bad_messages += 1
        self.status.put("link_bad_messages", self.bad_messages)
        log.warning("ignored a malformed message from %s: %s", self.codec.name, problem)

    def _on_event(self, event: object) -> None:
        if isinstance(event, TokenUpdate):
            self._answered()
            if event.final_audio_ms is not None:
                self.buffer.confirm_audio(event.final_audio_ms * SAMPLE_RATE // 1000)
            if event.finalized and self._finalize_marks:
                self.buffer.confirm_audio(self._finalize_marks.popleft())
            self.sink.update(event, self._capture_seconds)
        elif isinstance(event, SynthesizedAudio):
            self._answered()
            self.sink.synthesized(event)
        elif isinstance(event, SessionFinished):
            self._finished = True
            self.buffer.confirm_all_sent()
        elif isinstance(event, ServiceError):
            self._session_failed(event)
        elif isinstance(event, ServiceNotice):
            self.notices += 1
            self.status.put("link_notices", self.notices)
            log.info("%s: %s", self.codec.name, event.message)
            self.status.set("notice", event.kind, event.message)
        else:
            self.unknown_events += 1
            self.status.put("link_unknown_events", self.unknown_events)
            kind = type(event).__name__
            if kind not in self._unknown_types:  # once per type: it repeats with every message
                self._unknown_types.add(kind)
                log.warning(
                    "the %s codec reported an unknown event %s: ignored", self.codec.name, kind
                )

    def _answered(self) -> None:
        """A result came: the service works (for retries, patience and the fallback's down
        clock)."""
        self._now_retries = 0
        self._down_since = None
        if self.fallback is not None:
            self.fallback.link_answered()

    def _on_closed(self, item: Closed) -> None:
        # A service that never says "finished" ends a session by closing it, or not at all:
        # once the link ended the stream and every turn end was answered, a close is the end
        # it was waiting for. With an answer still owed, the audio before it was never
        # confirmed: the close (a cut, the service going away) failed the session.
        quiet_end = (
            self._finishing_since is not None
            and not self.codec.sends_finished
            and not self._finalize_marks
        )
        error = self.codec.closed(item.code, item.reason, self._finished or quiet_end)
        if (
            error is not None
            and error.retry is Retry.ONCE
            and not self.buffer.unconfirmed
            and not self._in_utterance
            and self._clock() - self._session_started >= HEALTHY_AFTER
        ):
            # The service ended a session that worked and had nothing in flight (its idle
            # limit on a quiet warm link): a normal end, not a failure — no backoff, no down
            # clock for the fallback. A close soon after connecting stays a failure, so a
            # service that keeps closing is not hammered.
            error = None
        if error is None:
            log.info("%s session %d ended", self.codec.name, self.sessions)
            self.buffer.confirm_all_sent()  # a normal end: the service said all it will say
            self._teardown(graceful=True)
            self._retry_at = self._clock()
            self._set_state("idle")
        else:
            self._session_failed(error)

    # --- sending ----------------------------------------------------------------------
    def _pump(self, now: float, flush: bool) -> None:
        """Send pending items, paced — always: a service may refuse a burst, at the end as
        much as in the middle. ``flush``: no more input is coming, a short chunk goes too."""
        conn = self._conn
        speed = self.codec.replay_speed
        self._tokens = min(PACE_BURST, self._tokens + (now - self._tokens_at) * speed)
        self._tokens_at = now
        self._pump_due = None
        chunk_samples = self.codec.audio_chunk_ms * SAMPLE_RATE // 1000
        try:
            while conn is not None and self._conn is conn:
                item = self.buffer.peek()
                if item is None:
                    return
                event = item.event
                if isinstance(event, SpeechStart):
                    self.buffer.mark_sent()
                    if self._in_utterance:  # never from a gate; a turn is never left open
                        self._end_turn(now)
                    self._begin_turn(now)
                    continue
                if isinstance(event, SpeechEnd):
                    if not self._in_utterance:
                        # Nothing of this utterance is on this session (an earlier one
                        # confirmed all its audio): there is no turn to end.
                        self.buffer.skip()
                        continue
                    self.buffer.mark_sent()
                    self._end_turn(now)
                    continue
                run = self._audio_run(chunk_samples)
                # (90 % of a chunk is a chunk: the gate's 90 ms blocks of 30 ms frames go
                # as they are instead of waiting for a second one)
                if run < chunk_samples * 9 // 10 and not flush and not self._run_complete(run):
                    # Wait for the rest of the chunk — for a chunk's time at most: the
                    # rest is late (a live source delivers it sooner), what came goes.
                    if self._partial_since is None:
                        self._partial_since = now
                    late_at = self._partial_since + self.codec.audio_chunk_ms / 1000
                    if now < late_at:
                        self._pump_due = late_at
                        return
                seconds = run / SAMPLE_RATE
                if self._tokens < seconds:
                    # paced: buffered speech goes no faster than replay_speed
                    self._pump_due = now + (seconds - self._tokens) / speed
                    return
                self._tokens -= seconds
                if not self._in_utterance:
                    self._begin_turn(now)  # the utterance goes on from an earlier session
                self._send_audio(run, now)
                self._partial_since = None
        except SendFailed as exc:
            self._lost(exc)

    def _begin_turn(self, now: float) -> None:
        self._in_utterance = True
        for out in self.codec.begin_turn():
            self._send(out, now)

    def _end_turn(self, now: float) -> None:
        """End the open turn; what the codec sends for it must be answered (finalized)."""
        self._in_utterance = False
        outs = self.codec.end_turn()
        for out in outs:
            self._send(out, now, answer=True)
        if outs:
            self._finalize_marks.append(self.buffer.session_samples)

    def _lost(self, exc: SendFailed) -> None:
        if self._on_producer:
            # Not on the producer's thread: tearing the session down may wait (a close
            # frame). The link thread, woken, handles it first thing.
            self._send_failed = exc
            return
        self._session_failed(ServiceError(None, "connection_lost", str(exc), Retry.BACKOFF))

    def _audio_run(self, limit: int) -> int:
        """Samples of consecutive pending audio at the head, up to ``limit``."""
        total = 0
        for item in self.buffer.pending:
            if not isinstance(item.event, SpeechAudio) or total >= limit:
                break
            total += item.samples
        return total

    def _run_complete(self, run: int) -> bool:
        """True when the pending audio run is followed by a marker (send it now)."""
        seen = 0
        for item in self.buffer.pending:
            if not isinstance(item.event, SpeechAudio):
                return True
            seen += item.samples
            if seen > run:
                return False
        return False

    def _send_audio(self, samples: int, now: float) -> None:
        parts: list[bytes] = []
        taken = 0
        while taken < samples:
            item = self.buffer.mark_sent()
            frame = item.event.frame  # type: ignore[union-attr]
            self._map_pos.append(item.session_pos)
            self._map_capture.append(frame.start)
            parts.append(frame.pcm)
            taken += item.samples
        for out in self.codec.audio(b"".join(parts)):
            self._send(out, now, answer=True)
        if len(self._map_pos) > 20_000:
            del self._map_pos[:10_000]
            del self._map_capture[:10_000]

    def _send(self, out: Outgoing, now: float, answer: bool = False) -> None:
        """Send one message; ``answer``: the service must answer it (audio, a turn's end),
        so a silence from now on counts towards a dead connection."""
        assert self._conn is not None
        self._conn.send(out)
        self.bytes_sent += len(out.payload)
        self._last_sent = now
        if answer and self._unanswered_since is None:
            self._unanswered_since = now

    def _capture_seconds(self, session_ms: int) -> float | None:
        """Capture time (seconds since the source opened) of a point of this session."""
        pos = session_ms * SAMPLE_RATE // 1000
        i = bisect.bisect_right(self._map_pos, pos) - 1
        if i < 0:
            return None
        return (self._map_capture[i] + pos - self._map_pos[i]) / SAMPLE_RATE

    # --- timers -----------------------------------------------------------------------
    def _housekeeping(self, now: float, ending: bool = False) -> None:
        """Keepalive, dead-connection checks, and (unless ``ending``) renewal and idle close."""
        conn = self._conn
        if conn is None:
            return
        self.backoff.reset_if_healthy()
        dead = self.settings.dead_after
        soon = now + TIMER_SLACK  # see TIMER_SLACK
        try:
            if (
                self.codec.keepalive_interval is not None
                and soon - self._last_sent >= self.codec.keepalive_interval
            ):
                out = self.codec.keepalive()
                if out is not None:
                    self._conn.send(out)
                # (nothing to send: the codec is asked again an interval later)
                self._last_sent = now
            quiet = now - conn.last_received
            if soon - conn.last_received >= dead / 2 and (
                self._ping_sent_at is None or self._ping_sent_at < conn.last_received
            ):
                conn.ping()
                self._ping_sent_at = now
        except SendFailed as exc:
            self._lost(exc)
            return
        if quiet >= dead:
            self._dead(f"nothing received for {quiet:.1f} s")
            return
        if self._unanswered_since is not None and now - self._unanswered_since >= dead:
            self._dead(f"no answer to audio for {now - self._unanswered_since:.1f} s")
            return
        if ending:
            return  # the session ends anyway, once what is left has been sent
        age = now - self._session_started
        if age >= self.codec.session_max and (
            not self._in_utterance or age >= self.codec.session_max + ROLLOVER_GRACE
        ):
            log.info("renewing the %s session after %.0f s", self.codec.name, age)
            self._pump(now, flush=True)
            self._finish(now, "rollover")
            return
        if (
            self.settings.connect == "on_demand"
            and not self._in_utterance
            and self.buffer.empty
            and now - max(self._last_speech, self._session_started) >= self.settings.idle_close
        ):
            log.info("no speech for %.0f s: closing the session", self.settings.idle_close)
            self._finish(now, "idle")

    def _dead(self, why: str) -> None:
        self.dead_detected += 1
        self.status.put("link_dead_detected", self.dead_detected)
        self._session_failed(ServiceError(None, "no_response", why, Retry.BACKOFF))

    def _finish(self, now: float, why: str) -> None:
        """End the session gracefully: close the open turn, end of stream, then wait."""
        if self._conn is None:
            return
        try:
            if self._in_utterance:
                self._end_turn(now)  # the utterance goes on in the next session, if any
            for out in self.codec.end_of_stream():
                self._send(out, now)
        except SendFailed as exc:
            self._lost(exc)
            return
        self._finishing_since = now
        self._set_state("finishing", why)

    def _check_finishing(self, now: float) -> None:
        conn = self._conn
        if self._finishing_since is None or conn is None:
            return
        if not self._finished and not self.codec.sends_finished:
            # No "finished" will come: done once every turn end was answered and the
            # service has said nothing more for finish_grace.
            quiet = now - max(self._finishing_since, conn.last_message)
            if not self._finalize_marks and quiet >= self.codec.finish_grace:
                self._finished = True
                self.buffer.confirm_all_sent()
        if self._finished:
            # Everything was answered; the service closes by itself, but need not be waited for.
            log.info("%s session %d finished", self.codec.name, self.sessions)
            self._teardown(graceful=True)
            self._retry_at = now
            self._set_state("idle")
            return
        if now - self._finishing_since > self.settings.finish_timeout:
            if self.codec.sends_finished:
                self._abandon("no end of stream within finish_timeout")
            else:
                self._abandon("a turn's end was not answered within finish_timeout")

    def _abandon(self, why: str) -> None:
        log.warning("%s session: %s", self.codec.name, why)
        self._session_failed(ServiceError(None, "finish_timeout", why, Retry.NOW))

    # --- status -----------------------------------------------------------------------
    def _check_fallback(self, now: float) -> None:
        fb = self.fallback
        assert fb is not None
        if fb.active:
            fb.maybe_return(self._conn is not None)
        elif self._conn is None and not self.stopping and fb.due(now):
            self._close_loss()
            # the service's open line ends here: the offline engine's lines follow it
            self.sink.update(TokenUpdate(endpoint=True), lambda ms: None)
            fb.enter(self.buffer.take_all(), now)
            self._note_fallback_drops()

    def _set_state(self, state: str, detail: str = "") -> None:
        if self.fallback is not None and state in ("retrying", "rejected"):
            self.fallback.link_down(self._clock())
        self.status.set("link", state, detail)
