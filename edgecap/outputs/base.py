"""What every output is: the contract between an output and the worker that runs it.

An output (screen, console, serial display, socket, transcript files) runs on its own
thread, an ``OutputWorker``, behind its own bounded ``EventQueue``. The worker opens it,
hands it events one at a time, calls ``idle`` when the output's own deadline comes (pacing,
a rate-limited redraw, dimming), reopens it with backoff when it reports the device gone,
and closes it at stop. An output therefore never needs a thread of its own for its main
work, and a slow one (a 1200-baud encoder, a pipe whose reader paused) never holds up the
others.

Between those calls the worker's thread sleeps: it wakes for an event the output takes
(``takes``), for the output's next deadline (``wake_in``), for its device (``wait_io``) or
for stop — never on a timer of its own. On a Pi Zero every wake-up is CPU time, and an idle
daemon should cost next to nothing. An output whose handle() is cheap and never blocks (the
caption socket, the web page) may even be given its events on the publisher's thread while
its own sleeps (``inline``, below): no wake-up at all.
"""

from __future__ import annotations

from typing import Protocol

from edgecap.captions.events import AudioLoss, CaptionLine, SynthesizedAudio
from edgecap.runtime.speech import Activity
from edgecap.runtime.status import StatusSnapshot

# Activity (speech start / end of the offline engine) is only published to stdout.
OutputEvent = CaptionLine | AudioLoss | SynthesizedAudio | Activity | StatusSnapshot

# The kinds of event, for ``takes``: what the fan-out hands an output.
FINAL = "final"  # a final caption line (also each later update of its translations)
PROVISIONAL = "provisional"  # the words of a line still being spoken
LOSS = "loss"  # AudioLoss: speech that was lost
STATUS = "status"  # a StatusSnapshot after every change of the status board
AUDIO = "audio"  # SynthesizedAudio: spoken translation
ACTIVITY = "activity"  # the offline engine's speech start / end (published to stdout only)

TEXT = frozenset({FINAL, PROVISIONAL, LOSS, STATUS})
# What an output that declares nothing takes: everything but synthesized speech.
DEFAULT_TAKES = TEXT | {ACTIVITY}


def kind_of(event: OutputEvent) -> str:
    """The kind of ``event`` (one of the constants above)."""
    if isinstance(event, CaptionLine):
        return FINAL if event.final else PROVISIONAL
    if isinstance(event, StatusSnapshot):
        return STATUS
    if isinstance(event, SynthesizedAudio):
        return AUDIO
    if isinstance(event, AudioLoss):
        return LOSS
    return ACTIVITY


def takes_of(output: object) -> frozenset[str]:
    """The kinds of event ``output`` is given: its ``takes``, or (an output written before
    ``takes`` existed) the default, with synthesized speech if it says ``takes_audio``."""
    takes = getattr(output, "takes", None)
    if takes is not None:
        return frozenset(takes)
    return DEFAULT_TAKES | {AUDIO} if getattr(output, "takes_audio", False) else DEFAULT_TAKES


class OutputUnavailable(Exception):
    """The device is gone or not there yet (unplugged display, missing serial adapter,
    encoder not answering). The worker closes the output and reopens it with backoff; the
    message is shown in the status."""


class Output(Protocol):
    name: str  # "hdmi", "serial", …: the status part is "output:<name>"
    # The kinds of event it is given (see above): an output is not woken by what it would
    # ignore (a transcript by provisional text, a speaker by captions, a serial display by
    # status changes). Optional; default DEFAULT_TAKES.
    takes: frozenset[str]
    # An output whose device takes bytes slower than they come (stdout: a reader that
    # stopped reading) may have a ``busy`` property, True while it holds output its device
    # has not taken yet: the worker then leaves events in the queue, where provisional ones
    # coalesce and finals wait in order, and sleeps in ``wait_io`` until the device has room
    # (or ``wake_in`` passes, or stop), then calls idle().
    #
    # Optional too: ``wait_io(timeout, wake_fd)``, for an output whose device has file
    # descriptors to watch (the socket server's clients, a serial port that may vanish, a
    # terminal that stopped taking output): block in one poll() on them and on ``wake_fd``
    # (readable when an event or a stop is there for the worker) for at most ``timeout``
    # seconds (None: no limit), and return; the worker then calls idle(), which does the
    # device's work without blocking. Without it the worker waits on its queue alone.
    #
    # Compatibility: an output without ``wake_in`` but with ``idle_interval`` (seconds)
    # has idle() called that long after each event or idle() call, as before.
    #
    # Optional: ``inline = True`` says "handle() and idle() never block and are cheap; they
    # may run on the publisher's thread" (the link's, the supervisor's). The worker then
    # hands an event straight to the output on the publisher's thread whenever its own
    # thread is asleep with nothing queued, sparing the hand-over (a wake-up costs more
    # than the socket output's whole handle()). The worker's lock keeps every call on one
    # thread at a time, so the output needs no locks of its own; any callback it makes
    # (``on_clients``) may run on the publisher's thread too. An output with ``wait_io``
    # gets no idle() on that path (its thread sleeps in the poll idle() would repeat):
    # whatever idle() would have found wakes that poll anyway.
    # With ``inline``, an output that sleeps in ``wait_io`` should have ``wants_thread``: a
    # property, True when handle() changed what its thread must wait on (a client's backlog
    # now needs POLLOUT, a client was dropped) since wait_io last started to poll; the
    # worker then wakes its thread to poll again. Its deadline coming nearer (``wake_in``)
    # or the output becoming ``busy`` wakes the thread without it.

    def open(self) -> None:
        """Acquire the device. Raise OutputUnavailable to be retried later."""
        ...

    def handle(self, event: OutputEvent) -> None:
        """Show one event. Raise OutputUnavailable when the device went away. (With
        ``inline``, possibly on the publisher's thread: then never block.)"""
        ...

    def idle(self, now: float) -> None:
        """Called after every event (an inline one to an output with ``wait_io``: see
        ``inline``), when the deadline ``wake_in`` gave has come, and after ``wait_io``
        returned: do timed work (pacing, a held-back redraw, dimming) and the
        device's I/O, without blocking. ``now`` is time.monotonic(). Raise
        OutputUnavailable when the device went away."""
        ...

    def wake_in(self, now: float) -> float | None:
        """Asked after every handle()/idle(): seconds from now until idle() has work to do
        without a new event (0: at once), or None when only an event (or the device, see
        ``wait_io``) can give it any. ``now`` is time.monotonic(). (Every output here has
        it; for one without, see the compatibility note above.)"""
        ...

    def close(self) -> None:
        """Release the device; must not raise. Called after open() succeeded, once."""
        ...
