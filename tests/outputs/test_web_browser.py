"""The caption page in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) loads the page from the running daemon, fed by the strict Soniox
emulator (one-way translation into Spanish), at a phone's size.

It checks what a person in the room sees: the line being spoken is shown and replaced in
place, finished lines appear once, in order, and never change afterwards, every word the
service confirmed is there exactly once, the language switch shows the translation, the
"Reconnecting…" state shows while the daemon is down and the page comes back by itself
when it is up again. A second test feeds real sentences straight to the output and checks
the controls, the screen reader's live region and the sizes on a phone and a 4K screen;
its phone-size screenshots go to ``tmp_path``, and to ``docs/images/`` with
``EDGECAP_SCREENSHOTS=1`` (to be looked at before they are committed).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgecap.config.loader import LoadedConfig, load
from edgecap.daemon.supervisor import Daemon
from edgecap.outputs.web.output import WebOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.services.registry import service
from tests.conftest import REPO
from tests.daemon.test_daemon_soniox import DEMO, gate_output
from tests.emulators.soniox import SonioxEmulator, expected_words, translation_of

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
SHOTS = REPO / "docs" / "images"
PHONE = {"width": 360, "height": 740, "pixelRatio": 2.0}

# Records every change of every caption line, in order, as the page makes it.
RECORDER = """
const box = document.getElementById("captions");
const seen = new WeakMap();
let next = 0;
window.__rec = {changes: [], finalChanged: []};
new MutationObserver(() => {
  for (const el of box.querySelectorAll(".line")) {
    const now = [el.classList.contains("prov"), el.textContent, el.dataset.final === "1"];
    let prev = seen.get(el);
    if (prev === undefined) { el.__id = next++; }
    else if (prev[0] === now[0] && prev[1] === now[1]) continue;
    if (prev !== undefined && prev[2]) window.__rec.finalChanged.push([prev[1], now[1]]);
    seen.set(el, now);
    window.__rec.changes.push([el.__id, Number(el.dataset.seq), now[0], now[1], now[2]]);
  }
}).observe(box, {subtree: true, childList: true, characterData: true, attributes: true});
"""


def make_wav(path: Path, lead_s: float, tail_s: float, speech: Path = DEMO) -> Path:
    """``speech`` with digital silence before (the page connects meanwhile) and after (the
    page is looked at while the daemon still runs)."""
    with wave.open(str(speech), "rb") as src:
        params = src.getparams()
        pcm = src.readframes(src.getnframes())
    bytes_per_s = params.framerate * params.nchannels * params.sampwidth
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        out.writeframes(bytes(int(lead_s * bytes_per_s)) + pcm + bytes(int(tail_s * bytes_per_s)))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class WebDaemon(Daemon):
    """The daemon as `edgecap run` builds it. Until the supervisor builds the web output
    itself (``[web] enabled``), it is added here exactly as the supervisor will."""

    def _make_outputs(self) -> list[OutputWorker]:
        outputs = super()._make_outputs()
        cfg = self.loaded.config
        if cfg.web.enabled and not any(w.output.name == "web" for w in outputs):
            spec = service(cfg.daemon.service)
            settings = spec.settings(cfg)
            web = WebOutput(
                cfg.web,
                self.status,
                service=spec.name,
                languages=list(spec.languages(settings)),
                targets=list(spec.targets(settings)),
                translation_only=spec.translation_only(settings),
            )
            outputs.insert(0, OutputWorker(web, self.status, drain_timeout=0.5))
        return outputs


class Running:
    """A daemon running on a thread of the test."""

    def __init__(self, loaded: LoadedConfig) -> None:
        self.daemon = WebDaemon(loaded)
        self.thread = threading.Thread(target=self.daemon.run, name="test-daemon")
        self.thread.start()

    def stop(self) -> None:
        self.daemon.request_stop("test")
        self.thread.join(15.0)
        assert not self.thread.is_alive(), "the daemon did not stop"


def config(tmp_path: Path, emu: SonioxEmulator, wav: Path, port: int) -> LoadedConfig:
    return load(
        overrides=[
            "daemon.service=soniox",
            f"soniox.url={emu.url}",
            "soniox.api_key=env:SONIOX_API_KEY",
            "soniox.translation=one_way",
            "soniox.target_language=es",
            f"link.ca_file={emu.ca_file}",
            "link.retry_first=100ms",
            "link.finish_timeout=10s",
            "audio.source=wav",
            f"audio.file={wav}",
            "stdout.enabled=no",
            "socket.enabled=no",
            "web.enabled=yes",
            f"web.listen=127.0.0.1:{port}",
            "web.title=Council chamber",
        ],
        etc_dir=tmp_path,
        env={"SONIOX_API_KEY": "the-key"},
    )


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--lang=en-US")
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(until: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = until()
        if value:
            return value
        assert time.monotonic() < deadline, f"the page did not get there in time: {what}"
        time.sleep(0.05)


def lines(driver) -> list[tuple[int, bool, bool, str]]:  # type: ignore[no-untyped-def]
    """(seq, provisional, final, text) of every caption line on the page, top to bottom."""
    return [
        (int(seq), prov, final, text)
        for seq, prov, final, text in driver.execute_script(
            "return [...document.querySelectorAll('#captions .line')].map(e => "
            "[e.dataset.seq, e.classList.contains('prov'), e.dataset.final === '1', "
            "e.textContent]);"
        )
    ]


def conn_state(driver) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    return tuple(
        driver.execute_script(
            "const c = document.getElementById('conn'); return [c.dataset.state, c.textContent];"
        )
    )


def test_the_page_follows_the_daemon_in_a_real_browser(tmp_path, monkeypatch, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    monkeypatch.setenv("SONIOX_API_KEY", "the-key")
    driver = browser
    port = free_port()
    wav = make_wav(tmp_path / "talk.wav", lead_s=1.5, tail_s=3.0)
    words = [w.strip() for w in expected_words(gate_output(wav))]
    assert len(words) > 20
    with SonioxEmulator(tmp_path / "emu", api_key="the-key", lag_ms=300) as emu:
        first = Running(config(tmp_path, emu, wav, port))
        try:
            wait(lambda: _accepts(port), 5.0, "the daemon serves the page")
            driver.get(f"http://127.0.0.1:{port}/")
            driver.execute_script(RECORDER)
            assert driver.title == "Council chamber"
            wait(lambda: conn_state(driver)[0] == "live", 5.0, "live")

            # every confirmed word, once, in order, in finished lines
            def all_final() -> bool:
                shown = lines(driver)
                return (
                    bool(shown)
                    and all(final for _, _, final, _ in shown)
                    and sum(len(text.split()) for *_, text in shown) >= len(words)
                )

            wait(all_final, 25.0, "every line finished")
            shown = lines(driver)
            seqs = [seq for seq, *_ in shown]
            assert seqs == sorted(set(seqs)), "lines out of order, or a line twice"
            assert len(seqs) >= 3
            assert " ".join(text for *_, text in shown).split() == words
            rec = driver.execute_script("return window.__rec;")
            assert rec["finalChanged"] == [], "a finished line changed"
            # the line being spoken was shown provisionally and replaced in place
            by_element: dict[int, list] = {}
            for element, seq, prov, text, final in rec["changes"]:
                by_element.setdefault(element, []).append((seq, prov, text, final))
            replaced = [
                changes
                for changes in by_element.values()
                if changes[0][1] and changes[-1][3] and changes[0][2] != changes[-1][2]
            ]
            assert replaced, "no provisional line was seen being replaced"
            assert len(by_element) == len(shown)  # one element per line, never re-made
            changes = [change for element in by_element.values() for change in element]
            finals = [(seq, text) for seq, _, text, final in changes if final]
            assert [seq for seq, _ in finals] == seqs  # each finished once, in order

            # a screen reader hears each finished line (the last three are kept)
            spoken = driver.execute_script(
                "return [...document.querySelectorAll('#sr p')].map(p => p.textContent);"
            )
            assert spoken == [text for *_, text in shown][-3:]
            _screenshot(driver, tmp_path, "web-phone-360-emulator.png", keep=False)

            # the language switch: the same lines, in Spanish
            view = Select(driver.find_element(By.ID, "view"))
            assert [o.text for o in view.options] == ["Transcript", "Spanish (es)"]
            view.select_by_value("es")
            spanish = lines(driver)
            assert [seq for seq, *_ in spanish] == seqs
            expected_es = [translation_of(" " + w).strip() for w in words]
            assert " ".join(text for *_, text in spanish).split() == expected_es
            assert driver.execute_script("return localStorage.getItem('edgecap.view');") == "es"
            _screenshot(driver, tmp_path, "web-phone-360-es.png", keep=False)

            # the daemon ends (the end of its input): the page says it is reconnecting
            first.thread.join(30.0)
            assert not first.thread.is_alive()
            state = wait(
                lambda: conn_state(driver)[0] == "reconnecting" and conn_state(driver),
                5.0,
                "reconnecting",
            )
            assert state == ("reconnecting", "Reconnecting…")
            assert driver.find_element(By.ID, "conn").is_displayed()
            assert lines(driver), "the captions stay on the page while it reconnects"
        finally:
            first.stop()

        # a new daemon on the same address: the page comes back by itself, in Spanish
        again = make_wav(tmp_path / "again.wav", lead_s=60.0, tail_s=0.0)
        second = Running(config(tmp_path, emu, again, port))
        try:
            wait(lambda: conn_state(driver)[0] == "live", 15.0, "live again")
            assert lines(driver) == []  # the new daemon's history: nothing said yet
            assert Select(driver.find_element(By.ID, "view")).first_selected_option.text == (
                "Spanish (es)"
            )
        finally:
            second.stop()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _screenshot(driver, tmp_path: Path, name: str, keep: bool = True) -> None:  # type: ignore[no-untyped-def]
    png = driver.get_screenshot_as_png()
    assert png.startswith(b"\x89PNG")
    (tmp_path / name).write_bytes(png)
    if keep and os.environ.get("EDGECAP_SCREENSHOTS") == "1":
        (SHOTS / name).write_bytes(png)


# --- what it looks like ---------------------------------------------------------------
ROOM = [
    (
        "Good evening, and welcome to the council meeting.",
        "Buenas tardes y bienvenidos a la reunión del consejo.",
    ),
    (
        "The first item tonight is the new bus timetable.",
        "El primer punto de esta noche es el nuevo horario de autobuses.",
    ),
    (
        "Residents asked for an earlier service on Sundays.",
        "Los vecinos pidieron un servicio más temprano los domingos.",
    ),
    (
        "We received forty-two letters about it this month.",
        "Recibimos cuarenta y dos cartas sobre ello este mes.",
    ),
]


def test_the_page_reads_well_on_a_phone_and_on_a_4k_screen(tmp_path, browser):
    """Real sentences with their translations, a line being spoken and a loss notice, fed
    straight to the web output: the controls work and are remembered on the device, the
    screen reader hears each finished line once, and the text is large on a 4K screen."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from edgecap.captions.events import AudioLoss, CaptionLine
    from edgecap.config.schema import WebConfig
    from edgecap.runtime.status import StatusBoard

    driver = browser
    board = StatusBoard()
    cfg = WebConfig(enabled=True, listen="127.0.0.1:0", title="Council chamber")
    out = WebOutput(cfg, board, service="azure", languages=["en-US"], targets=["es"])
    worker = OutputWorker(out, board)
    worker.start(lambda w: None)

    def line(seq: int, text: str, es: str, final: bool = True) -> CaptionLine:
        return CaptionLine(
            seq,
            text,
            None,
            "en",
            seq * 3.0,
            seq * 3.0 + 2.5,
            final,
            final,
            {"es": es} if es else {},
        )

    try:
        wait(lambda: out.address is not None, 5.0, "serving")
        assert out.address is not None
        for seq, (text, es) in enumerate(ROOM[:2], start=1):
            worker.publish(line(seq, text, es))
        board.set("audio", "speech")
        worker.publish(board.snapshot())
        driver.get(f"http://127.0.0.1:{out.address[1]}/")
        wait(lambda: len(lines(driver)) == 2, 5.0, "the history")
        worker.publish(AudioLoss(1.8, 7.0, 8.8, "network down"))  # live only, as on the socket
        for seq, (text, es) in enumerate(ROOM[2:], start=3):
            worker.publish(line(seq, text, es))
        worker.publish(line(5, "So the proposal is to start at", "", final=False))
        wait(lambda: len(lines(driver)) == 5, 5.0, "live lines")
        shown = lines(driver)
        assert [text for *_, text in shown[:4]] == [text for text, _ in ROOM]
        assert shown[4][1:] == (True, False, "So the proposal is to start at")
        assert (
            "1.8 s of speech lost (network down)" in driver.find_element(By.CLASS_NAME, "gap").text
        )
        assert driver.find_element(By.ID, "status").text == "Hearing speech"
        # the screen reader's live region got the lines finished while the page was open
        spoken = driver.execute_script(
            "return [...document.querySelectorAll('#sr p')].map(p => p.textContent);"
        )
        assert spoken == [ROOM[2][0], ROOM[3][0]]
        assert driver.find_element(By.ID, "sr").get_attribute("aria-live") == "polite"
        _screenshot(driver, tmp_path, "web-phone-360-light.png")

        # larger text and a dark background, remembered on the device
        size = lambda: driver.execute_script(  # noqa: E731
            "return parseFloat(getComputedStyle(document.querySelector('.line')).fontSize);"
        )
        before = size()
        assert before >= 18  # readable on a 360 px phone
        driver.find_element(By.ID, "larger").click()
        driver.find_element(By.ID, "larger").click()
        assert size() > before * 1.2
        driver.find_element(By.ID, "theme").click()
        dark_bg = driver.execute_script("return getComputedStyle(document.body).backgroundColor;")
        assert dark_bg == "rgb(0, 0, 0)"
        driver.refresh()
        wait(lambda: len(lines(driver)) == 5, 5.0, "the page again")
        assert size() > before * 1.2
        assert driver.execute_script("return document.documentElement.dataset.theme;") == "dark"
        driver.find_element(By.ID, "smaller").click()
        driver.find_element(By.ID, "smaller").click()
        Select(driver.find_element(By.ID, "view")).select_by_value("es")
        assert [text for *_, text in lines(driver)[:4]] == [es for _, es in ROOM]
        driver.execute_script("document.activeElement.blur();")
        ActionChains(driver).move_to_element(driver.find_element(By.ID, "title")).perform()
        _screenshot(driver, tmp_path, "web-phone-360-dark-es.png")
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth;"
        ), "the page is wider than the phone"

        # a 4K screen: large text, nothing overflowing, lines not stretched across it
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 3840, "height": 2160, "deviceScaleFactor": 1, "mobile": False},
        )
        assert size() >= 64
        assert driver.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth;"
        )
        width = driver.execute_script(
            "return document.querySelector('.line').getBoundingClientRect().width;"
        )
        assert width <= 0.8 * 3840
        _screenshot(driver, tmp_path, "web-4k.png", keep=False)
    finally:
        worker.request_stop()
        assert worker.join(3.0)
