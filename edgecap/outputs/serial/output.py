"""Captions to serial displays and broadcast caption encoders (bytes per ../shared/HARDWARE.md).

A transport (a serial port through pyserial, or TCP host:port for encoders reached over
Telnet or iCap) carries the bytes of a profile (``edgecap.outputs.serial.profiles``):
``lines`` (plain text lines), ``serlcd`` and ``matrix-orbital`` (character LCDs) or
``encoder`` (the real-time roll-up state of EEG/Ai-Media, Evertz, Link and Ultech encoders).

A vanished device (a USB adapter pulled out, an encoder closing the connection) is
OutputUnavailable: the worker closes the output and opens it again with backoff. Between
captions the worker sleeps in ``wait_io`` on the transport's descriptor: what the device
sends (echo, prompts) and its loss (a serial port hung up when its adapter is pulled out, a
TCP connection closed or reset) wake it, and the probe that follows reads what came or
reports the loss — so an unplugged adapter shows in the status at once, not only when the
next caption is written, without the thread waking on a timer. (A transport without a
descriptor is probed every ``PROBE_INTERVAL`` instead.) Otherwise it wakes only for the
profile's pacing (``wake_in``: an encoder's paced text, its idle release). Text not yet
written when the device went away is written after it is back; an LCD is redrawn from the
caption state.
"""

from __future__ import annotations

import contextlib
import math
import select
import time
from collections.abc import Callable

from edgecap.captions.events import CaptionLine
from edgecap.config.schema import SerialConfig
from edgecap.outputs.base import FINAL, PROVISIONAL, OutputEvent, OutputUnavailable
from edgecap.outputs.serial.profiles import Profile, make_profile
from edgecap.outputs.serial.transport import (
    SerialPort,
    Transport,
    list_serial_ports,
    open_transport,
)

__all__ = ["PROBE_INTERVAL", "SerialOutput", "SerialPort", "list_serial_ports"]

# Seconds between checks that an idle device is still there, for a transport without a
# descriptor to wait on.
PROBE_INTERVAL = 0.5


class SerialOutput:
    name = "serial"

    def __init__(
        self,
        cfg: SerialConfig,
        *,
        dialect: str = "eeg",
        clock: Callable[[], float] = time.monotonic,
        transport_opener: Callable[[SerialConfig], Transport] = open_transport,
    ) -> None:
        """``dialect`` picks the encoder's real-time command (``eeg`` or ``evertz``);
        ``clock`` is time.monotonic (the ``now`` of handle; idle gets its own)."""
        self.cfg = cfg
        self.clock = clock
        self.profile: Profile = make_profile(cfg, dialect=dialect)
        # Captions only (losses and status are shown by other outputs), provisional text
        # only for a profile that shows it.
        self.takes = frozenset({FINAL, PROVISIONAL} if self.profile.provisional else {FINAL})
        self._open_transport = transport_opener
        self._transport: Transport | None = None
        self._fd: int | None = None  # the transport's descriptor, if it has one
        self._device_woke = False  # wait_io returned for the device: probe it
        self._probe_at = 0.0

    @property
    def dropped_chars(self) -> int:
        """Characters the device cannot show at all (encoder: other scripts)."""
        return int(getattr(self.profile, "dropped_chars", 0))

    # --- Output -----------------------------------------------------------------------
    def open(self) -> None:
        now = self.clock()
        self._transport = self._open_transport(self.cfg)
        try:
            self._send(self.profile.opening(now))
            self._pump(now)
        except OutputUnavailable:
            self._release()
            raise
        self._fd = _fileno(self._transport)
        self._probe_at = now + PROBE_INTERVAL

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, CaptionLine):  # losses and status are shown by other outputs
            now = self.clock()
            self.profile.caption(event, now)
            self._pump(now)

    def idle(self, now: float) -> None:
        if self._transport is None:
            return
        if self._device_woke or now >= self._probe_at:
            self._device_woke = False
            self._transport.poll()
            self._probe_at = now + PROBE_INTERVAL
        self._pump(now)

    def wake_in(self, now: float) -> float | None:
        if self._transport is None:
            return None
        due = self.profile.wake_in(now)
        if self._fd is None:  # nothing to wait on: probe now and then
            probe = max(0.0, self._probe_at - now)
            due = probe if due is None else min(due, probe)
        return due

    def wait_io(self, timeout: float | None, wake_fd: int) -> None:
        """Sleep until the device sent something or went away, ``wake_fd`` is readable,
        or ``timeout`` passed. The probe in idle() runs when the device woke us (and, while
        text is paced, every PROBE_INTERVAL as before), not at every pacing tick."""
        poller = select.poll()
        poller.register(wake_fd, select.POLLIN)
        if self._fd is not None:
            poller.register(self._fd, select.POLLIN)  # hang-ups and errors come anyway
        for fd, _ in poller.poll(None if timeout is None else math.ceil(timeout * 1000)):
            if fd == self._fd:
                self._device_woke = True

    def close(self) -> None:
        if self._transport is None:
            return
        with contextlib.suppress(OutputUnavailable):
            self._send(self.profile.closing(self.clock()))
        self._release()

    # --- internals --------------------------------------------------------------------
    def _pump(self, now: float) -> None:
        self._send(self.profile.take(now))

    def _send(self, data: bytes) -> None:
        if not data:
            return
        if self._transport is None:
            raise OutputUnavailable("serial output is not open")
        self._transport.write(data)
        self.profile.sent()

    def _release(self) -> None:
        transport, self._transport = self._transport, None
        self._fd = None
        if transport is not None:
            transport.close()


def _fileno(transport: Transport) -> int | None:
    """The transport's descriptor to poll, or None (a transport that has none)."""
    fileno = getattr(transport, "fileno", None)
    if fileno is None:
        return None
    try:
        return int(fileno())
    except (OSError, ValueError, TypeError):
        return None
