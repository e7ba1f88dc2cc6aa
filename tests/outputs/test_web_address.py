"""Where viewers find the page: [web] listen and url, this box's LAN address, the URL with
the access code, ``edgecap web-url`` and the QR code (read back by a real QR decoder)."""

from __future__ import annotations

import io
import ipaddress
import socket
from dataclasses import replace

import pytest
import zxingcpp

from edgecap.config.loader import ConfigError, load
from edgecap.config.schema import WebConfig, parse_listen
from edgecap.config.types import SecretRef
from edgecap.outputs.web.address import (
    base_url,
    join_url,
    lan_addresses,
    page_url,
    print_web_url,
    qr_image,
    qr_matrix,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:8080", ("0.0.0.0", 8080)),
        (":8080", ("0.0.0.0", 8080)),
        ("192.168.1.20:80", ("192.168.1.20", 80)),
        ("[::]:8080", ("::", 8080)),
        ("[fe80::1]:9101", ("fe80::1", 9101)),
        (" 127.0.0.1:0 ", ("127.0.0.1", 0)),
    ],
)
def test_listen_addresses_are_read(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("8080", "must be address:port"),
        ("0.0.0.0", "must be address:port"),
        ("0.0.0.0:99999", "must be address:port"),
        ("0.0.0.0:http", "must be address:port"),
        ("::1:8080", "in brackets"),
        ("[10.0.0.1]:80", "only an IPv6 address"),
        ("captions.local:8080", "must be an IP address"),
        ("300.1.1.1:8080", "must be an IP address"),
    ],
)
def test_bad_listen_addresses_are_refused_in_words(text, words):
    with pytest.raises(ValueError, match=words):
        parse_listen(text)


def test_the_section_is_off_by_default_and_checked_at_load(tmp_path):
    assert WebConfig().enabled is False
    ini = tmp_path / "e.ini"
    ini.write_text("[web]\nenabled = yes\naccess_code = 1234\n")
    with pytest.raises(ConfigError) as caught:
        load([str(ini)], ["daemon.service=local"], env={})
    errors = "\n".join(caught.value.errors)
    assert "web.access_code" in errors and "1234" not in errors  # a code is never echoed
    ini.write_text(
        "[web]\nenabled = yes\nlisten = 8080\nmetrics_listen = nowhere:1\nurl = ftp://x/\n"
    )
    with pytest.raises(ConfigError) as caught:
        load([str(ini)], ["daemon.service=local"], env={})
    errors = "\n".join(caught.value.errors)
    assert "web.listen" in errors and "web.metrics_listen" in errors and "web.url" in errors
    ini.write_text(
        "[web]\nenabled = yes\nlisten = 192.168.1.20:8080\ntitle = Council chamber\n"
        "languages = de, fr\naccess_code = env:ROOM_CODE\n"
    )
    web = load([str(ini)], ["daemon.service=local"], env={}).config.web
    assert (web.enabled, web.listen, web.title, web.languages) == (
        True,
        "192.168.1.20:8080",
        "Council chamber",
        ("de", "fr"),
    )
    assert web.access_code == SecretRef(("env:ROOM_CODE",))


def test_lan_addresses_are_this_boxs_own():
    found = lan_addresses()
    for addr in found:
        ip = ipaddress.IPv4Address(addr)
        assert not ip.is_loopback and not ip.is_link_local
        with socket.socket() as probe:  # an address of this box: it can be bound
            probe.bind((addr, 0))


def test_the_url_is_made_from_listen_or_given(monkeypatch):
    cfg = WebConfig(enabled=True, listen="10.1.2.3:8080")
    assert base_url(cfg) == "http://10.1.2.3:8080/"
    assert base_url(replace(cfg, listen="[fd00::5]:80")) == "http://[fd00::5]/"
    anywhere = replace(cfg, listen="0.0.0.0:8080")
    addresses = lan_addresses()
    if addresses:
        assert base_url(anywhere) == f"http://{addresses[0]}:8080/"
    monkeypatch.setattr("edgecap.outputs.web.address.lan_addresses", lambda: [])
    assert base_url(anywhere) == f"http://{socket.gethostname()}.local:8080/"
    given = replace(cfg, url="http://room1.local:8080/")
    assert base_url(given) == "http://room1.local:8080/"
    assert page_url(given, "a b&c") == "http://room1.local:8080/?code=a%20b%26c"
    assert page_url(replace(cfg, url="http://x/?lang=de"), "1") == "http://x/?lang=de&code=1"
    assert page_url(given, None) == "http://room1.local:8080/"


def test_the_join_url_carries_the_code_when_it_can_be_read(monkeypatch):
    cfg = WebConfig(
        enabled=True, listen="10.0.0.2:8080", access_code=SecretRef(("env:EDGECAP_TEST_CODE",))
    )
    monkeypatch.setenv("EDGECAP_TEST_CODE", "4711")
    assert join_url(cfg) == "http://10.0.0.2:8080/?code=4711"
    monkeypatch.delenv("EDGECAP_TEST_CODE")
    assert join_url(cfg) == "http://10.0.0.2:8080/"
    assert join_url(replace(cfg, enabled=False)) is None


def test_the_qr_code_reads_back_as_the_url():
    url = "http://192.168.1.20:8080/?code=4711"
    for size in (120, 240, 600):
        img = qr_image(url, size, dark=(20, 20, 20), light=(250, 250, 250))
        assert img.width == img.height <= size
        modules = len(qr_matrix(url))
        assert img.width % modules == 0  # whole pixels per module
        assert img.getpixel((0, 0)) == (250, 250, 250)  # the quiet zone
        decoded = zxingcpp.read_barcodes(img)
        assert [(r.text, r.format) for r in decoded] == [(url, zxingcpp.BarcodeFormat.QRCode)]
    rows = qr_matrix(url, border=0)
    assert rows[0][:7] == [True] * 7  # a finder pattern in the corner


def test_web_url_prints_the_address_and_a_terminal_qr_code(monkeypatch):
    cfg = WebConfig(
        enabled=True, listen="10.0.0.2:8080", access_code=SecretRef(("env:EDGECAP_TEST_CODE",))
    )
    monkeypatch.setenv("EDGECAP_TEST_CODE", "4711")
    out, err = io.StringIO(), io.StringIO()
    assert print_web_url(cfg, out, err, qr=True) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "http://10.0.0.2:8080/?code=4711"
    assert len(lines) > 10 and "█" in out.getvalue()
    assert err.getvalue() == ""
    monkeypatch.delenv("EDGECAP_TEST_CODE")
    out, err = io.StringIO(), io.StringIO()
    assert print_web_url(cfg, out, err) == 78
    assert "access_code: no code found" in err.getvalue() and out.getvalue() == ""
    out, err = io.StringIO(), io.StringIO()
    assert print_web_url(WebConfig(listen="10.0.0.2:8080"), out, err) == 69
    assert out.getvalue() == "http://10.0.0.2:8080/\n" and "off" in err.getvalue()


def test_the_hdmi_screen_shows_the_qr_code_beside_the_captions(tmp_path):
    """The screen in the room shows the page's address as a QR code a phone reads; the
    captions keep to its left. (Runs once hdmi.py takes ``join_url``.)"""
    import inspect

    from PIL import Image

    from edgecap.captions.events import CaptionLine
    from edgecap.outputs.framebuffer import read_geometry, unpack
    from edgecap.outputs.hdmi import HdmiOutput
    from tests.outputs.test_hdmi import fake_fb

    if "join_url" not in inspect.signature(HdmiOutput).parameters:
        pytest.skip("hdmi.py does not take join_url yet (the diff in the H11 report)")
    url = "http://192.168.1.20:8080/?code=4711"
    for width, height, layout in ((1280, 720, "rollup"), (1920, 1080, "fullscreen")):
        where = tmp_path / f"{width}"
        where.mkdir()
        dev = fake_fb(where, width, height, 32)
        out = HdmiOutput(dev, where / "sys", layout_mode=layout, join_url=url)
        out.open()
        try:
            text = "Good evening, and welcome to the council meeting of the twelfth of May."
            out.handle(CaptionLine(1, text, None, "en", 0.0, 2.0, True, True))
            out.idle(0.0)
            frame = unpack(dev.read_bytes(), read_geometry(dev, where / "sys"))
        finally:
            out.close()
        decoded = zxingcpp.read_barcodes(Image.fromarray(frame))
        assert [r.text for r in decoded] == [url]
        # the QR code's columns hold no caption text: the captions wrapped to its left
        qr = [x for x in range(width) if (frame[:, x] == 255).all(axis=1).sum() > height // 8]
        assert qr and min(qr) > width // 2
        lit = frame[:, : min(qr) - 4].max(axis=2) > 128
        assert lit.any()  # the captions are there


def test_edgecap_web_url_prints_the_address(tmp_path):
    """The command itself (once cli.py has it: the diff in the H11 report)."""
    import os
    import subprocess
    import sys

    from edgecap import cli

    if "web-url" not in cli.COMMANDS:
        pytest.skip("cli.py has no web-url command yet (the diff in the H11 report)")
    ini = tmp_path / "edgecap.ini"
    ini.write_text("[web]\nenabled = yes\nlisten = 10.9.8.7:8080\naccess_code = env:ROOM_CODE\n")
    env = {**os.environ, "ROOM_CODE": "4711"}
    run = subprocess.run(
        [sys.executable, "-m", "edgecap", "web-url", "-c", str(ini)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "http://10.9.8.7:8080/?code=4711\n", "")
    del env["ROOM_CODE"]
    run = subprocess.run(
        [sys.executable, "-m", "edgecap", "web-url", "-c", str(ini)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert run.returncode == 78 and "ROOM_CODE" in run.stderr and run.stdout == ""
