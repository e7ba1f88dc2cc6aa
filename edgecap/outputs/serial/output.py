"""Captions to serial displays and broadcast caption encoders (bytes per ../shared/HARDWARE.md).

A transport (a serial port through pyserial, or TCP host:port for encoders reached over
Telnet or iCap) carries the bytes of a profile (``edgecap.outputs.serial.profiles``):
``lines`` (plain text lines), ``serlcd`` and ``matrix-orbital`` (character LCDs) or
``encoder`` (the real-time roll-up state of EEG/Ai-Media, Evertz, Link and Ultech encoders).

A vanished device (a USB adapter pulled out, an encoder closing the connection) is
OutputUnavailable: the worker closes the output and opens it again with backoff. The
transport is polled every ``PROBE_INTERVAL`` while idle, so an unplugged adapter shows in the
status at once, not only when the next caption is written. Text not yet written when the
device went away is written after it is back; an LCD is redrawn from the caption state.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from edgecap.captions.events import CaptionLine
from edgecap.config.schema import SerialConfig
from edgecap.outputs.base import OutputEvent, OutputUnavailable
from edgecap.outputs.serial.profiles import Profile, make_profile
from edgecap.outputs.serial.transport import (
    SerialPort,
    Transport,
    list_serial_ports,
    open_transport,
)

__all__ = ["PROBE_INTERVAL", "SerialOutput", "SerialPort", "list_serial_ports"]

PROBE_INTERVAL = 0.5  # seconds between checks that an idle device is still there


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
        self.idle_interval = self.profile.idle_interval
        self._open_transport = transport_opener
        self._transport: Transport | None = None
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
        self._probe_at = now + PROBE_INTERVAL

    def handle(self, event: OutputEvent) -> None:
        if isinstance(event, CaptionLine):  # losses and status are shown by other outputs
            now = self.clock()
            self.profile.caption(event, now)
            self._pump(now)

    def idle(self, now: float) -> None:
        if self._transport is None:
            return
        if now >= self._probe_at:
            self._transport.poll()
            self._probe_at = now + PROBE_INTERVAL
        self._pump(now)

    def close(self) -> None:
        if self._transport is None:
            return
        with contextlib.suppress(OutputUnavailable):
            self._send(self.profile.closing(self.clock()))
        self._release()

    # --- internals --------------------------------------------------------------------
    def _pump(self, now: float) -> None:
        self._send(self.profile.take(now))
        self.idle_interval = self.profile.idle_interval

    def _send(self, data: bytes) -> None:
        if not data:
            return
        if self._transport is None:
            raise OutputUnavailable("serial output is not open")
        self._transport.write(data)
        self.profile.sent()

    def _release(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
