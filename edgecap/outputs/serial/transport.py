"""How bytes reach a serial display or caption encoder: a serial port (pyserial) or a TCP
connection (an encoder's Telnet port, Ai-Media iCap's local socket).

Both raise OutputUnavailable for everything that means "the device is not there": a USB
adapter that is missing or was pulled out, a port another program holds, an encoder that
refuses or closes the connection. The output worker then reopens with backoff.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple, Protocol

import serial

from edgecap.config.schema import SerialConfig
from edgecap.outputs.base import OutputUnavailable

WRITE_TIMEOUT = 2.0  # a port that takes nothing for this long is treated as gone
CONNECT_TIMEOUT = 5.0

_PARITY = {"none": serial.PARITY_NONE, "even": serial.PARITY_EVEN, "odd": serial.PARITY_ODD}
_MISSING = (errno.ENOENT, errno.ENODEV, errno.ENXIO)
_BUSY = (errno.EAGAIN, errno.EBUSY)
_DENIED = (errno.EACCES, errno.EPERM)


class Transport(Protocol):
    where: str  # for messages: "/dev/ttyUSB0", "10.0.0.5:23"

    def write(self, data: bytes) -> None:
        """Send all of ``data``; OutputUnavailable when the device is gone."""
        ...

    def poll(self) -> None:
        """Read and discard what the device sent (echo, prompts, Telnet negotiation); raise
        OutputUnavailable if it is gone. Lets a loss show up while no captions flow."""
        ...

    def fileno(self) -> int:
        """The descriptor that becomes readable when the device sent something or went
        away (the output sleeps on it between captions). A transport without one may
        leave this out: it is then probed now and then."""
        ...

    def close(self) -> None: ...


class SerialDevice:
    """A serial port, opened exclusively (flock), non-blocking reads, bounded writes."""

    def __init__(
        self,
        device: str,
        *,
        baud: int = 9600,
        data_bits: int = 8,
        parity: str = "none",
        stop_bits: int = 1,
    ) -> None:
        self.where = device
        try:
            self.port = serial.Serial(
                device,
                baudrate=baud,
                bytesize=serial.SEVENBITS if data_bits == 7 else serial.EIGHTBITS,
                parity=_PARITY[parity],
                stopbits=serial.STOPBITS_TWO if stop_bits == 2 else serial.STOPBITS_ONE,
                timeout=0,
                write_timeout=WRITE_TIMEOUT,
                exclusive=True,
            )
        except (serial.SerialException, OSError) as exc:
            raise OutputUnavailable(_open_failure(device, exc)) from None

    def write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except serial.SerialTimeoutException:
            raise OutputUnavailable(f"serial device {self.where} takes no data") from None
        except (serial.SerialException, OSError) as exc:
            raise OutputUnavailable(f"serial device {self.where} gone: {exc}") from None

    def poll(self) -> None:
        try:
            self.port.read(4096)  # timeout=0: only what is there; raises once unplugged
        except (serial.SerialException, OSError) as exc:
            raise OutputUnavailable(f"serial device {self.where} gone: {exc}") from None

    def fileno(self) -> int:
        return int(self.port.fileno())

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.port.close()


def _open_failure(device: str, exc: Exception) -> str:
    code = getattr(exc, "errno", None)
    if code in _MISSING:
        return f"no serial device at {device}"
    if code in _DENIED:
        return f"no permission to open {device} (is the service user in group dialout?)"
    if code in _BUSY:
        return f"{device} is in use by another program"
    return f"cannot open {device}: {exc}"


class TcpConnection:
    """A TCP connection: Nagle off (paced text must leave as it is written), keepalive on
    (an encoder that vanished without closing is noticed within about a minute)."""

    def __init__(self, host: str, port: int, *, timeout: float = CONNECT_TIMEOUT) -> None:
        self.where = f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise OutputUnavailable(f"cannot reach {self.where}: {reason}") from None
        self.sock.settimeout(WRITE_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, option):
                self.sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise OutputUnavailable(f"connection to {self.where} lost: {exc}") from None

    def poll(self) -> None:
        try:
            # select first: recv on a socket with a timeout would wait for it.
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable and not self.sock.recv(4096):
                raise OutputUnavailable(f"{self.where} closed the connection")
        except OSError as exc:
            raise OutputUnavailable(f"connection to {self.where} lost: {exc}") from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def open_transport(cfg: SerialConfig) -> Transport:
    """The transport ``cfg`` describes, connected; OutputUnavailable if it is not there."""
    if cfg.transport == "tcp":
        return TcpConnection(cfg.host, cfg.port)
    return SerialDevice(
        str(cfg.device),
        baud=cfg.baud,
        data_bits=cfg.data_bits,
        parity=cfg.parity,
        stop_bits=cfg.stop_bits,
    )


class SerialPort(NamedTuple):
    device: str  # /dev/ttyUSB0
    description: str  # "FT232R USB UART (stable name /dev/serial/by-id/usb-FTDI_…)"


LINK_DIRS = (Path("/dev/serial/by-id"), Path("/dev"))


def list_serial_ports(link_dirs: Iterable[Path] = LINK_DIRS) -> list[SerialPort]:
    """The serial ports pyserial finds, for ``edgecap devices``. A USB adapter's
    ``/dev/ttyUSBn`` number can change when it is plugged in again; the description names
    the stable symlink (``/dev/serial/by-id/…``, ``/dev/serial0`` on a Pi) when there is one:
    that is the path to put in the config."""
    from serial.tools import list_ports

    dirs = list(link_dirs)
    ports = []
    for info in list_ports.comports():
        description = info.description if info.description not in (None, "n/a") else ""
        links = links_to(info.device, dirs)
        if links:
            stable = f"stable name {links[0]}"
            description = f"{description} ({stable})" if description else stable
        ports.append(SerialPort(info.device, description))
    return sorted(ports)


def links_to(device: str, dirs: Iterable[Path]) -> list[str]:
    """Symlinks in ``dirs`` (not recursive) that resolve to ``device``, in ``dirs`` order."""
    target = os.path.realpath(device)
    found = []
    for directory in dirs:
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink() and os.path.realpath(entry) == target:
                found.append(str(entry))
    return found
