"""Serial displays and caption encoders: the exact bytes on a real pty and a real TCP port;
unplug and replug on a real pty, also through a real OutputWorker."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import tty
from dataclasses import replace
from pathlib import Path

import pytest
import serial
from serial.tools import list_ports
from serial.tools.list_ports_common import ListPortInfo

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import SerialConfig
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.serial.output import (
    PROBE_INTERVAL,
    SerialOutput,
    SerialPort,
    list_serial_ports,
)
from edgecap.outputs.serial.transport import links_to
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard

SETUP = b"\x03\x012 cc1 3 b15 word\r"


def line(seq, text, final=True, translation="", tfinal=None, **translations):
    """A caption line; ``translation`` is its English one, ``translations`` others."""
    return CaptionLine(
        seq=seq,
        text=text,
        speaker=None,
        language="es",
        start=None,
        end=None,
        final=final,
        translation_final=final if tfinal is None else tfinal,
        translations=({"en": translation} if translation else {}) | translations,
    )


class Pty:
    """A pseudo-terminal standing in for a USB serial adapter at a symlink path."""

    def __init__(self, link: Path) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        link.unlink(missing_ok=True)
        link.symlink_to(os.ttyname(self.slave))

    def read(self, wait: float = 0.05) -> bytes:
        time.sleep(wait)
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.master, 65536):
                data += chunk
        return data

    def unplug(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def dev(tmp_path):
    link = tmp_path / "ttyUSB0"
    p = Pty(link)
    yield link, p
    p.unplug()


def cfg(device, **kw) -> SerialConfig:
    return replace(SerialConfig(), enabled=True, device=device, **kw)


# --- lines ---------------------------------------------------------------------------------
def test_lines_finals_crlf_provisional_rewritten_with_cr_and_padded(dev):
    link, p = dev
    out = SerialOutput(cfg(link, provisional=True))
    out.open()
    out.handle(line(1, "hello wor", final=False))
    out.handle(line(1, "hello", final=False))
    out.handle(line(1, "hello world"))
    out.handle(line(1, "hello world"))  # the same final again: sent once
    assert p.read() == b"\rhello wor\rhello    \rhello world\r\n"
    out.handle(line(2, "你好世界", final=False))  # padding counts terminal cells
    out.handle(line(2, "你好", final=False))
    out.handle(line(2, ""))  # withdrawn: erased
    out.handle(AudioLoss(1.0, None, None, "network down"))  # not for a serial device
    out.close()
    # the cells beyond 你好 were blanked already: erasing needs only four spaces
    assert p.read() == "\r你好世界\r你好    \r    \r".encode()


def test_lines_without_provisional_sends_finals_only(dev):
    link, p = dev
    out = SerialOutput(cfg(link))
    out.open()
    out.handle(line(1, "spoken", final=False))
    out.handle(line(1, "spoken words"))
    out.close()
    assert p.read() == b"spoken words\r\n"


def test_lines_translation_sent_when_final_and_original_when_there_is_none(dev):
    link, p = dev
    out = SerialOutput(cfg(link, show="translation", provisional=True))
    out.open()
    out.handle(line(1, "hola", translation="hel", tfinal=False))
    out.handle(line(2, "qué", translation="wha", final=False))
    out.handle(line(1, "hola", translation="hello", tfinal=True))
    out.handle(line(3, "okay", tfinal=True))  # done with no translation
    out.close()
    # seq 2 is still being spoken: it comes back below seq 1's final translation.
    assert p.read() == b"\rhel\rwha\rhello\r\nwha\rokay\r\nwha"


def test_lines_send_exactly_one_translation_language(dev):
    link, p = dev
    # none listed: the line's first translation (target order); the others never go out
    out = SerialOutput(cfg(link, show="translation"))
    out.open()
    out.handle(line(1, "hola", translation="hello", de="hallo", hi="नमस्ते"))
    out.close()
    assert p.read() == b"hello\r\n"
    # listed: the first language listed, even when the line has the others first
    out = SerialOutput(cfg(link, show="translation", translations=("de", "en")))
    out.open()
    out.handle(line(2, "adiós", translation="goodbye", de="tschüss", hi="अलविदा"))
    out.handle(line(3, "sí", translation="yes"))  # done without German: the original
    out.close()
    assert p.read() == "tschüss\r\nsí\r\n".encode()


def test_lines_long_provisional_shows_its_newest_words_on_one_row(dev):
    link, p = dev
    out = SerialOutput(cfg(link, provisional=True))
    out.open()
    words = " ".join(f"word{i:02d}" for i in range(20))  # 139 characters
    out.handle(line(1, words, final=False))
    out.close()
    got = p.read().decode()
    assert got.startswith("\r") and len(got) - 1 <= 79
    assert got.endswith("word19") and got[1:].startswith("word")


# --- character LCDs ------------------------------------------------------------------------
def test_serlcd_rows_rewritten_only_when_changed(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="serlcd", rows=2, cols=16))
    out.open()
    assert p.read() == b"\x7c\x2d"  # clear
    out.handle(line(1, "first caption"))
    assert p.read() == b"\xfe\xc0first caption   "  # the top row is still blank
    out.handle(line(2, "next one", final=False))
    assert p.read() == b"\xfe\x80first caption   \xfe\xc0next one        "
    out.handle(line(2, "next one!"))
    assert p.read() == b"\xfe\xc0next one!       "  # the top row did not change
    out.handle(line(2, "next one!"))
    assert p.read() == b""
    out.handle(line(3, "café | ñ ~ ok"))  # never the SerLCD command byte 0x7C
    assert p.read() == b"\xfe\x80next one!       \xfe\xc0cafe / n - ok   "
    out.close()
    assert p.read() == b"\x7c\x2d"


def test_serlcd_20x4_ddram_addresses_and_redraw_after_reopen(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="serlcd", rows=4, cols=20))
    out.open()
    out.handle(line(1, "aaaa bbbb cccc dddd eeee ffff gggg hhhh iiii jjjj kkkk llll mmmm nnnn"))
    rows = [b"aaaa bbbb cccc dddd ", b"eeee ffff gggg hhhh ", b"iiii jjjj kkkk llll ",
            b"mmmm nnnn           "]  # fmt: skip
    screen = b"\xfe\x80" + rows[0] + b"\xfe\xc0" + rows[1] + b"\xfe\x94" + rows[2]
    screen += b"\xfe\xd4" + rows[3]
    assert p.read() == b"\x7c\x2d" + screen
    out.close()
    out.open()  # e.g. after a replug: cleared, then everything drawn again
    assert p.read() == b"\x7c\x2d\x7c\x2d" + screen
    out.close()


def test_matrix_orbital_autoscroll_off_and_one_based_positions(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="matrix-orbital", rows=2, cols=8))
    out.open()
    out.handle(line(1, "a b c d e f g h"))
    out.close()
    assert p.read() == (
        b"\xfe\x52\xfe\x58" + b"\xfe\x47\x01\x01a b c d \xfe\x47\x01\x02e f g h " + b"\xfe\x58"
    )


def test_lcd_shows_translation_rows(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="matrix-orbital", rows=2, cols=8, show="translation"))
    out.open()
    out.handle(line(1, "hola amigos", translation="hi friends", tfinal=False))
    out.close()
    assert p.read() == (
        b"\xfe\x52\xfe\x58\xfe\x47\x01\x01hi      \xfe\x47\x01\x02friends " + b"\xfe\x58"
    )


# --- caption encoders ----------------------------------------------------------------------
def test_encoder_setup_finals_only_paced_to_chars_per_second(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="encoder", chars_per_second=200))
    out.open()
    assert p.read() == b"\x03"  # ends any state the port was left in; setup comes with text
    out.handle(line(1, "provisional text", final=False))
    assert p.read(0.01) == b""
    text = "x" * 99  # + the trailing space: 100 characters
    expected = SETUP + text.encode() + b" "
    got = b""
    t0 = time.monotonic()
    out.handle(line(1, text))
    first_call = time.monotonic() - t0
    while len(got) < len(expected) and time.monotonic() - t0 < 5:
        out.idle(time.monotonic())
        got += p.read(0.002)
    took = time.monotonic() - t0
    assert got == expected
    assert took >= 0.45, f"100 characters at 200 a second arrived in {took:.3f} s"
    assert first_call < 0.05  # handle() never waits for the pace
    out.handle(line(2, "second line"))
    got = b""
    while len(got) < 13 and time.monotonic() - t0 < 5:
        out.idle(time.monotonic())
        got += p.read(0.002)
    assert got == b"\rsecond line "  # a CR between caption lines, no new setup
    out.close()
    assert p.read() == b"\x03"


def test_encoder_paced_by_the_real_worker(dev):
    link, p = dev
    out = SerialOutput(cfg(link, profile="encoder", chars_per_second=200))
    worker = OutputWorker(out, StatusBoard())
    worker.start()
    try:
        assert p.read(0.2) == b"\x03"
        t0 = time.monotonic()
        worker.publish(line(1, "y" * 99))
        expected = SETUP + b"y" * 99 + b" "
        got = b""
        while len(got) < len(expected) and time.monotonic() - t0 < 5:
            got += p.read(0.005)
        took = time.monotonic() - t0
        assert got == expected
        assert 0.45 <= took < 2.0  # idle() comes often enough while text is paced
    finally:
        worker.request_stop()
        assert worker.join(3)
    assert p.read() == b"\x03"  # stop: the encoder leaves the real-time state


def test_encoder_idle_release_and_new_session(dev):
    link, p = dev
    clock = Clock()
    out = SerialOutput(
        cfg(link, profile="encoder", chars_per_second=1000, idle_release=30.0), clock=clock
    )
    out.open()
    out.handle(line(1, "hi"))
    assert p.read() == b"\x03" + SETUP + b"hi "
    out.idle(clock.t + 29.9)
    assert p.read() == b""
    # nothing to pace: the next wake-up is the release, not a poll
    assert out.wake_in(clock.t + 29.9) == pytest.approx(0.1)
    out.idle(clock.t + 30.0)
    assert p.read() == b"\x03"  # released: captions from upstream pass again
    assert out.wake_in(clock.t + 30.0) is None  # and nothing until the next caption
    out.idle(clock.t + 90.0)
    assert p.read() == b""  # released once
    clock.t += 100
    out.handle(line(2, "again"))
    assert p.read() == SETUP + b"again "  # a new session: setup again, no leading CR
    out.close()
    assert p.read() == b"\x03"


def test_encoder_maps_to_cea608_uppercase_and_counts_other_scripts(dev, caplog):
    link, p = dev
    clock = Clock()
    out = SerialOutput(
        cfg(link, profile="encoder", chars_per_second=1000, uppercase=True), clock=clock
    )
    out.open()
    with caplog.at_level(logging.INFO):
        out.handle(line(1, "你好"))  # nothing a 608 decoder can show: nothing sent
        out.handle(line(2, "Señor *bleep* {ok}"))
        assert p.read() == b"\x03" + SETUP + b"SE\x7dOR -BLEEP- (OK) "
        for seq, text in ((3, "नमस्ते"), (4, "धन्यवाद")):  # in Latin letters, said once
            out.handle(line(seq, text))
            clock.t += 1
            out.idle(clock.t)
    assert p.read() == b"\rNAMASTE \rDHANYAVAAD "
    assert out.dropped_chars == 2
    assert "cannot be shown in CEA-608" in caplog.text
    assert caplog.text.count("Indic text transliterated") == 1
    out.close()


def test_lcd_shows_indic_text_transliterated(dev, caplog):
    link, p = dev
    out = SerialOutput(cfg(link, profile="serlcd", rows=2, cols=16))
    out.open()
    with caplog.at_level(logging.INFO):
        out.handle(line(1, "வணக்கம்"))
        out.handle(line(2, "नमस्ते", final=False))
    out.close()
    shown = p.read()
    assert b"vanakkam        " in shown and b"namaste         " in shown
    assert caplog.text.count("serial serlcd: Indic text transliterated") == 1


def test_lcd_and_encoder_show_one_chosen_translation(dev):
    link, p = dev
    out = SerialOutput(
        cfg(link, profile="matrix-orbital", rows=2, cols=8, show="translation",
            translations=("de",))
    )  # fmt: skip
    out.open()
    out.handle(line(1, "hola", translation="hello", de="hallo"))
    out.close()
    assert p.read() == b"\xfe\x52\xfe\x58\xfe\x47\x01\x02hallo   " + b"\xfe\x58"
    out = SerialOutput(
        cfg(link, profile="encoder", show="translation", chars_per_second=1000,
            translations=("fr", "de")),
        clock=Clock(),
    )  # fmt: skip
    out.open()
    out.handle(line(1, "hola", translation="hello", de="hallo", fr="salut"))
    out.close()
    assert p.read() == b"\x03" + SETUP + b"salut " + b"\x03"


def test_encoder_translation_when_final_and_evertz_dialect(dev):
    link, p = dev
    out = SerialOutput(
        cfg(link, profile="encoder", show="translation", channel="cc3", roll_rows=2, base_row=14,
            chars_per_second=1000),
        dialect="evertz",
        clock=Clock(),
    )  # fmt: skip
    out.open()
    out.handle(line(1, "hola", translation="hel", tfinal=False))
    out.handle(line(1, "hola", translation="hello", tfinal=True))
    out.close()
    assert p.read() == b"\x03" + b"\x03\x012 C3 2 B14\r" + b"hello " + b"\x03"


def test_encoder_falls_behind_keeps_newest_lines_and_flushes_little_at_stop(dev, caplog):
    link, p = dev
    clock = Clock()
    out = SerialOutput(cfg(link, profile="encoder", chars_per_second=10), clock=clock)
    out.open()
    with caplog.at_level(logging.WARNING):
        for i in range(10):  # 10 × 50 characters at 10 a second: far more than 20 s of text
            out.handle(line(i + 1, f"{i}" * 49))
    assert out.profile.skipped_chars > 0  # type: ignore[attr-defined]
    assert caplog.text.count("the oldest is skipped") == 1  # warned once, not per line
    out.close()  # at most 2 s of text unpaced, then Ctrl-C
    got = p.read()
    assert got.startswith(b"\x03" + SETUP + b"0")
    assert got.endswith(b"\x03")
    assert len(got) <= 1 + len(SETUP) + 1 + 20 + 1


# --- transports, unplug and replug ---------------------------------------------------------
def test_missing_and_busy_device(tmp_path, dev):
    with pytest.raises(OutputUnavailable, match=r"no serial device at .*ttyUSB9"):
        SerialOutput(cfg(tmp_path / "ttyUSB9")).open()
    link, _p = dev
    holder = serial.Serial(str(link), exclusive=True)
    try:
        with pytest.raises(OutputUnavailable, match="in use by another program"):
            SerialOutput(cfg(link)).open()
    finally:
        holder.close()


def test_unplug_is_noticed_by_the_next_write_or_while_idle(tmp_path):
    link = tmp_path / "ttyUSB0"
    first = Pty(link)
    out = SerialOutput(cfg(link))
    out.open()
    out.handle(line(1, "before"))
    assert first.read() == b"before\r\n"
    first.unplug()
    with pytest.raises(OutputUnavailable, match="gone"):
        out.handle(line(2, "lost?"))
    out.close()
    second = Pty(link)  # plugged in again: what could not be written comes now
    out.open()
    assert second.read() == b"lost?\r\n"
    second.unplug()  # and with no caption to write, the idle probe notices
    with pytest.raises(OutputUnavailable, match="gone"):
        out.idle(time.monotonic() + PROBE_INTERVAL)
    out.close()


def test_unplug_and_replug_through_the_worker(tmp_path):
    link = tmp_path / "ttyUSB0"
    first = Pty(link)
    status = StatusBoard()
    worker = OutputWorker(SerialOutput(cfg(link)), status, retry_first=0.05, retry_max=0.2)
    worker.start()
    second = None
    try:
        worker.publish(line(1, "before"))
        got = b""
        deadline = time.monotonic() + 5
        while got != b"before\r\n" and time.monotonic() < deadline:
            got += first.read(0.02)
        assert got == b"before\r\n"
        first.unplug()
        link.unlink()
        worker.publish(line(2, "while unplugged"))
        deadline = time.monotonic() + 5
        while "no serial device at" not in status.snapshot().parts["output:serial"].detail:
            assert time.monotonic() < deadline, status.snapshot().parts
            time.sleep(0.02)
        assert status.snapshot().state_of("output:serial") == "unavailable"
        second = Pty(link)  # plugged in again
        worker.publish(line(3, "after"))
        got = b""
        deadline = time.monotonic() + 5
        while b"after" not in got and time.monotonic() < deadline:
            got += second.read(0.02)
        assert got == b"while unplugged\r\nafter\r\n"  # nothing lost
        assert status.snapshot().state_of("output:serial") == "ok"
    finally:
        worker.request_stop()
        assert worker.join(3)
        if second is not None:
            second.unplug()


def test_tcp_transport_and_encoder_closing_the_connection():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    tcp = replace(SerialConfig(), transport="tcp", host="127.0.0.1", port=port)
    clock = Clock()
    out = SerialOutput(replace(tcp, profile="encoder", chars_per_second=1000), clock=clock)
    out.open()
    conn, _ = server.accept()
    conn.settimeout(2)
    out.handle(line(1, "over telnet"))
    got = b""
    while len(got) < 1 + len(SETUP) + 12:
        got += conn.recv(100)
    assert got == b"\x03" + SETUP + b"over telnet "
    conn.sendall(b"\xff\xfb\x01OK\r\n")  # what an encoder may say is read and ignored
    time.sleep(0.05)
    out.idle(clock.t + PROBE_INTERVAL)
    conn.close()
    server.close()
    time.sleep(0.05)
    with pytest.raises(OutputUnavailable, match="closed the connection"):
        out.idle(clock.t + 2 * PROBE_INTERVAL)
    out.close()
    with pytest.raises(OutputUnavailable, match=f"cannot reach 127.0.0.1:{port}"):
        SerialOutput(tcp).open()


def test_tcp_write_after_the_peer_went_away_is_unavailable():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    out = SerialOutput(replace(SerialConfig(), transport="tcp", host="127.0.0.1", port=port))
    out.open()
    conn, _ = server.accept()
    conn.close()
    server.close()
    with pytest.raises(OutputUnavailable, match="lost"):
        for i in range(1, 50):
            out.handle(line(i, "into the void"))
            time.sleep(0.01)
    out.close()


# --- edgecap devices -----------------------------------------------------------------------
def test_list_serial_ports_names_the_stable_symlink(tmp_path, monkeypatch):
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    target = tmp_path / "ttyUSB0"
    target.touch()
    (by_id / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0").symlink_to(target)
    usb = ListPortInfo(str(target), skip_link_detection=True)
    usb.description = "FT232R USB UART"
    builtin = ListPortInfo("/dev/ttyS0", skip_link_detection=True)  # description "n/a"
    monkeypatch.setattr(list_ports, "comports", lambda: [usb, builtin])
    ports = list_serial_ports([by_id])
    assert ports == [
        SerialPort("/dev/ttyS0", ""),
        SerialPort(
            str(target),
            f"FT232R USB UART (stable name {by_id}/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0)",
        ),
    ]
    assert links_to(str(target), [tmp_path / "missing", by_id]) == [
        str(by_id / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0")
    ]


def test_list_serial_ports_on_this_machine():
    ports = list_serial_ports()  # a container may have none; it must not fail
    for device, description in ports:  # what `edgecap devices` does with them
        assert device.startswith("/dev/") and isinstance(description, str)


def test_an_unplugged_adapter_wakes_its_sleeping_worker(tmp_path):
    """No caption and no timer: the port's hang-up wakes the worker, the status says so
    at once; before that the worker slept through what the device sent, reading it."""
    link = tmp_path / "ttyUSB0"
    p = Pty(link)
    status = StatusBoard()
    worker = OutputWorker(SerialOutput(cfg(link)), status, retry_first=5.0, retry_max=5.0)
    worker.start()
    try:
        deadline = time.monotonic() + 3
        while not worker.idle:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        asleep = worker.wakeups
        time.sleep(0.3)
        assert worker.wakeups == asleep  # no probing on a timer
        os.write(p.master, b"OK\r\n")  # the device says something: read and ignored
        time.sleep(0.1)
        assert worker.wakeups == asleep + 1 and worker.failures == 0
        t0 = time.monotonic()
        p.unplug()
        while status.snapshot().state_of("output:serial") != "unavailable":
            assert time.monotonic() - t0 < 0.5, status.snapshot().parts
            time.sleep(0.005)
        assert "gone" in status.snapshot().parts["output:serial"].detail
    finally:
        worker.request_stop()
        assert worker.join(3)
