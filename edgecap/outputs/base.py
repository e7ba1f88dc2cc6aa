"""What every output is: the contract between an output and the worker that runs it.

An output (screen, console, serial display, socket, transcript files) runs on its own
thread, an ``OutputWorker``, behind its own bounded ``EventQueue``. The worker opens it,
hands it events one at a time, calls ``idle`` when there is nothing to hand (for pacing,
rate-limited redraws, dimming), reopens it with backoff when it reports the device gone,
and closes it at stop. An output therefore never needs a thread of its own for its main
work, and a slow one (a 1200-baud encoder, a pipe whose reader paused) never holds up the
others.
"""

from __future__ import annotations

from typing import Protocol

from edgecap.captions.events import AudioLoss, CaptionLine, SynthesizedAudio
from edgecap.runtime.speech import Activity
from edgecap.runtime.status import StatusSnapshot

# Activity (speech start / end of the offline engine) is only published to stdout.
OutputEvent = CaptionLine | AudioLoss | SynthesizedAudio | Activity | StatusSnapshot


class OutputUnavailable(Exception):
    """The device is gone or not there yet (unplugged display, missing serial adapter,
    encoder not answering). The worker closes the output and reopens it with backoff; the
    message is shown in the status."""


class Output(Protocol):
    name: str  # "hdmi", "serial", …: the status part is "output:<name>"
    idle_interval: float  # call idle() at least this often, in seconds
    # An output that plays synthesized speech sets ``takes_audio = True``; the others never
    # see SynthesizedAudio events (the fan-out filters them).
    # An output whose device takes bytes slower than they come (stdout: a reader that
    # stopped reading) may have a ``busy`` property, True while it holds output its device
    # has not taken yet: the worker then leaves events in the queue, where provisional ones
    # coalesce and finals wait in order, and calls idle(), which waits for the device for
    # at most idle_interval (so the worker still stops in time).

    def open(self) -> None:
        """Acquire the device. Raise OutputUnavailable to be retried later."""
        ...

    def handle(self, event: OutputEvent) -> None:
        """Show one event. Raise OutputUnavailable when the device went away."""
        ...

    def idle(self, now: float) -> None:
        """Nothing new: do timed work (pacing, redraw at most N times a second, dimming).
        ``now`` is time.monotonic(). Raise OutputUnavailable when the device went away."""
        ...

    def close(self) -> None:
        """Release the device; must not raise. Called after open() succeeded, once."""
        ...
