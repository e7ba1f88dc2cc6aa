"""The caption page's server with real TCP sockets and real clients (no mocks).

Each test runs the WebOutput under a real OutputWorker thread on 127.0.0.1 (an ephemeral
port) and talks to it with raw sockets, so every byte of a request — malformed, oversized,
slow — is the test's choice, and every byte of the answer is checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import WebConfig
from edgecap.config.types import SecretRef
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.web import output as web_output
from edgecap.outputs.web.output import COOKIE, WebOutput, code_mac
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard

CFG = WebConfig(enabled=True, listen="127.0.0.1:0")


def cap(
    seq: int,
    text: str,
    *,
    final: bool = True,
    translations: dict[str, str] | None = None,
    done: bool | None = None,
    offline: bool = False,
) -> CaptionLine:
    return CaptionLine(
        seq=seq,
        text=text,
        speaker=None,
        language="en",
        start=seq * 2.0,
        end=seq * 2.0 + 1.5,
        final=final,
        translation_final=final if done is None else done,
        translations=translations or {},
        offline=offline,
    )


# --- clients --------------------------------------------------------------------------
class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def exchange(port: int, raw: bytes, timeout: float = 3.0) -> Answer:
    """Send ``raw`` and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        return Answer(read_to_eof(sock, timeout))


def read_to_eof(sock: socket.socket, timeout: float = 3.0) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server did not close the connection; got {data[:200]!r}")


def get(port: int, path: str = "/", *, method: str = "GET", headers: str = "") -> Answer:
    return exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())


class Viewer:
    """A stream client on /events; ``pump`` reads until a condition holds."""

    def __init__(self, port: int, headers: str = "", rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        self.buf = b""
        self.head: Answer | None = None
        self.events: list[tuple[str, dict | None]] = []
        self.eof = False

    def pump(self, until: Callable[[Viewer], bool], timeout: float = 3.0) -> bool:
        deadline = time.monotonic() + timeout
        while not until(self) and not self.eof and time.monotonic() < deadline:
            self.sock.settimeout(0.05)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
            self._parse()
        return until(self)

    def _parse(self) -> None:
        if self.head is None:
            if b"\r\n\r\n" not in self.buf:
                return
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            self.head = Answer(head + b"\r\n\r\n")
        while b"\n\n" in self.buf:
            block, _, self.buf = self.buf.partition(b"\n\n")
            if block.startswith(b":"):
                self.events.append(("comment", None))
                continue
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
            self.events.append((fields[b"event"].decode(), json.loads(fields[b"data"])))

    def of(self, kind: str) -> list[dict]:
        return [data for event, data in self.events if event == kind and data is not None]

    def close(self) -> None:
        self.sock.close()


# --- the server -----------------------------------------------------------------------
class Served:
    def __init__(self, out: WebOutput, worker: OutputWorker, board: StatusBoard) -> None:
        self.out = out
        self.worker = worker
        self.board = board

    @property
    def port(self) -> int:
        assert self.out.address is not None
        return self.out.address[1]

    def publish(self, *events: object) -> None:
        for event in events:
            self.worker.publish(event)

    def settle(self, until: Callable[[], bool], timeout: float = 3.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "the server did not get there in time"
            time.sleep(0.005)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    made: list[OutputWorker] = []

    def start(cfg: WebConfig = CFG, **kwargs: object) -> Served:
        board = StatusBoard()
        out = WebOutput(cfg, board, **kwargs)  # type: ignore[arg-type]
        worker = OutputWorker(out, board, retry_first=0.05)
        worker.start(lambda w: None)
        made.append(worker)
        served = Served(out, worker, board)
        served.settle(lambda: board.snapshot().state_of("output:web") is not None)
        return served

    yield start
    for worker in made:
        worker.request_stop()
    for worker in made:
        assert worker.join(3.0), "the web output did not stop in time"


# --- the page and its headers ---------------------------------------------------------
def test_the_page_is_served_with_strict_headers_and_its_own_scripts_only(serve):
    s = serve(replace(CFG, title='Council <script>alert("x")</script> & co'))
    answer = get(s.port)
    assert answer.status == 200
    h = answer.headers
    assert h["content-type"] == "text/html; charset=utf-8"
    assert h["x-content-type-options"] == "nosniff"
    assert h["x-frame-options"] == "DENY"
    assert h["cache-control"] == "no-store"
    assert h["referrer-policy"] == "no-referrer"
    assert h["connection"] == "close"
    assert int(h["content-length"]) == len(answer.body)
    csp = dict(part.strip().split(" ", 1) for part in h["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["connect-src"] == "'self'"
    # exactly the inline script and style served are allowed, by hash
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>".encode(), answer.body, re.DOTALL)
        assert len(blocks) == 1
        digest = base64.b64encode(hashlib.sha256(blocks[0]).digest()).decode()
        assert csp[directive] == f"'sha256-{digest}'"
    # the title is text, never markup; nothing is fetched from elsewhere
    assert b"<script>alert" not in answer.body
    assert b"Council &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in answer.body
    assert b"http://" not in answer.body and b"https://" not in answer.body
    assert b'new EventSource("events")' in answer.body
    assert b'aria-live="polite"' in answer.body


def test_head_gives_the_headers_alone(serve):
    s = serve()
    page = get(s.port)
    head = get(s.port, method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == str(len(page.body))
    events = get(s.port, "/events", method="HEAD")
    assert (events.status, events.body) == (200, b"")
    assert events.headers["content-type"].startswith("text/event-stream")
    assert s.out.viewers == 0


@pytest.mark.parametrize(
    "path",
    [
        "/index.html",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "//etc/passwd",
        "/events/../../etc/passwd",
        "/./",
        "/events/",
        "/favicon.ico",
        "/page.html",
    ],
)
def test_nothing_but_the_page_its_stream_and_metrics_is_served(serve, path):
    s = serve()
    answer = get(s.port, path)
    assert answer.status == 404
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert b"root:" not in answer.body
    assert len(answer.body) < 100


def test_a_target_that_is_not_a_path_is_refused(serve):
    s = serve()
    for target in ("http://127.0.0.1/", "*", "127.0.0.1:80"):
        assert get(s.port, target).status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "get"])
def test_nothing_can_be_changed(serve, method):
    s = serve()
    answer = get(s.port, "/", method=method)
    assert answer.status == 405
    assert answer.headers["allow"] == "GET, HEAD"


def test_a_request_with_a_body_is_refused_unread(serve):
    s = serve()
    body = b"x" * 100
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + body
    assert exchange(s.port, raw).status == 413
    chunked = (
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    assert exchange(s.port, chunked).status == 413


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"HELLO\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
        (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n", 400),
    ],
)
def test_malformed_requests_are_refused(serve, raw, status):
    s = serve()
    answer = exchange(s.port, raw)
    assert answer.status == status
    assert s.out.viewers == 0


def test_an_oversized_request_is_refused_and_the_server_stays_well(serve):
    s = serve()
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n"
    answer = exchange(s.port, huge)
    assert answer.status == 431
    long_target = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert exchange(s.port, long_target).status == 431
    assert get(s.port, "/?" + "a" * 3000).status == 414
    assert get(s.port).status == 200


def test_a_slow_or_silent_request_is_cut(serve):
    s = serve(request_timeout=0.3)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(b"GET / HT")  # and then nothing (slowloris)
        answer = Answer(read_to_eof(sock))
    assert answer.status == 408
    assert 0.25 < time.monotonic() - started < 2.0
    with socket.create_connection(("127.0.0.1", s.port)) as sock:  # not a byte
        assert read_to_eof(sock) == b""
    s.settle(lambda: not s.out._conns)


def test_a_half_closed_client_still_gets_its_answer(serve):
    s = serve()
    with socket.create_connection(("127.0.0.1", s.port)) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        answer = Answer(read_to_eof(sock))
    assert answer.status == 200
    assert b"</html>" in answer.body


# --- the stream -----------------------------------------------------------------------
def test_a_viewer_gets_hello_history_the_line_being_spoken_and_status_then_live(serve):
    s = serve(service="soniox", languages=["en"], targets=["es"])
    s.publish(
        cap(1, "one", translations={"es": "uno"}),
        cap(2, "two"),
        cap(3, "", final=True),  # withdrawn: never shown to a newcomer
        cap(4, "four but not yet", final=False),
    )
    s.board.set("audio", "listening")
    s.publish(s.board.snapshot())
    s.settle(lambda: s.out.caption_updates == 4 and s.out._status_frame is not None)
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: len(v.events) >= 6)
        assert v.head is not None and v.head.status == 200
        assert v.head.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "content-length" not in v.head.headers
        kinds = [event for event, _ in v.events]
        assert kinds == ["hello", "caption", "caption", "caption", "status", "live"]
        hello = v.of("hello")[0]
        assert hello["title"] == "Live captions"
        assert hello["languages"] == ["es"] and hello["transcript"] is True
        caps = v.of("caption")
        assert [(c["seq"], c["final"], c["text"]) for c in caps] == [
            (1, True, "one"),
            (2, True, "two"),
            (4, False, "four but not yet"),
        ]
        assert caps[0]["translations"] == [{"language": "es", "text": "uno", "final": True}]
        assert v.of("status")[0]["summary"].startswith("Listening")
        assert set(v.of("status")[0]) == {"type", "summary"}  # no counters, no details
        # live: the provisional line replaced, then final; a loss; all in order
        s.publish(cap(4, "four now", final=False))
        assert v.pump(lambda v: len(v.of("caption")) >= 4)
        s.publish(
            cap(4, "four now final"), AudioLoss(2.5, 10.0, 12.5, "network down"), cap(5, "five")
        )
        assert v.pump(lambda v: len(v.of("caption")) >= 6)
        live = [(c["seq"], c["final"], c["text"]) for c in v.of("caption")[3:]]
        assert live == [(4, False, "four now"), (4, True, "four now final"), (5, True, "five")]
        assert v.of("gap") == [
            {"type": "gap", "seconds": 2.5, "start": 10.0, "end": 12.5, "reason": "network down"}
        ]
        assert [e for e, _ in v.events][-3:] == ["caption", "gap", "caption"]
        assert s.out.viewers == 1
    finally:
        v.close()


def test_history_is_bounded_and_an_updated_line_keeps_its_place(serve):
    s = serve(replace(CFG, history=3), targets=["de"])
    s.publish(*(cap(i, f"line {i}", done=False) for i in range(1, 6)))
    s.publish(cap(4, "line 4", translations={"de": "Zeile 4"}))
    s.settle(lambda: s.out.caption_updates == 6)
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: len(v.of("caption")) >= 3)
        v.pump(lambda v: False, timeout=0.1)
        caps = v.of("caption")
        assert [c["seq"] for c in caps] == [3, 4, 5]
        assert caps[1]["translations"][0]["text"] == "Zeile 4"
    finally:
        v.close()


def test_viewers_get_only_the_languages_they_may_choose(serve):
    s = serve(replace(CFG, languages=("de",)), targets=["fr", "de", "hi"])
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: bool(v.of("hello")))
        assert v.of("hello")[0]["languages"] == ["de"]
        s.publish(cap(1, "hello", translations={"fr": "bonjour", "de": "hallo", "hi": "नमस्ते"}))
        assert v.pump(lambda v: bool(v.of("caption")))
        assert v.of("caption")[0]["translations"] == [
            {"language": "de", "text": "hallo", "final": True}
        ]
    finally:
        v.close()


def test_a_translation_only_service_offers_no_transcript(serve):
    s = serve(targets=["en"], translation_only=True)
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: bool(v.of("hello")))
        assert v.of("hello")[0]["transcript"] is False
        assert v.of("hello")[0]["languages"] == ["en"]
    finally:
        v.close()


def test_status_reaches_viewers_only_when_what_they_see_changes(serve):
    s = serve()
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: bool(v.of("hello")))
        s.board.set("audio", "listening")
        s.publish(s.board.snapshot())
        assert v.pump(lambda v: len(v.of("status")) >= 1)
        s.board.set("output:hdmi", "ok")  # not in the summary
        s.publish(s.board.snapshot())
        s.settle(lambda: len(s.worker.queue) == 0)
        s.board.set("link", "retrying", "timed out")
        s.publish(s.board.snapshot())
        assert v.pump(lambda v: len(v.of("status")) >= 2)
        v.pump(lambda v: False, timeout=0.1)
        summaries = [m["summary"] for m in v.of("status")]
        assert summaries == ["Listening…", "Listening… · Speech service unreachable (timed out)"]
    finally:
        v.close()


def test_a_viewer_that_stops_reading_is_cut_and_never_slows_the_others(serve):
    s = serve(client_buffer=16 * 1024)
    stuck = Viewer(s.port, rcvbuf=4096)
    readers = [Viewer(s.port) for _ in range(3)]
    try:
        for v in [stuck, *readers]:
            assert v.pump(lambda v: bool(v.of("hello")))
        text = "word " * 200  # about 1 kB a line
        lines = 400
        started = time.monotonic()
        for seq in range(1, lines + 1):
            s.publish(cap(seq, f"{seq} {text}"))
            for v in readers:  # they read as they come, whatever the stuck one does
                assert v.pump(lambda v, n=seq: len(v.of("caption")) >= n)
        for v in readers:
            assert [c["seq"] for c in v.of("caption")] == list(range(1, lines + 1))
        assert time.monotonic() - started < 5.0
        s.settle(lambda: s.out.viewers_cut == 1)
        assert s.out.viewers == 3
        # the stuck one finds its connection closed once it reads again
        assert stuck.pump(lambda v: False, timeout=2.0) is False and stuck.eof
        assert len(stuck.of("caption")) < lines
    finally:
        for v in [stuck, *readers]:
            v.close()


def test_a_viewer_that_sends_endless_bytes_is_dropped(serve):
    s = serve()
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: bool(v.of("hello")))
        s.settle(lambda: s.out.viewers == 1)
        with pytest.raises(OSError):
            for _ in range(100):
                v.sock.sendall(b"x" * 4096)
                time.sleep(0.001)
        s.settle(lambda: s.out.viewers == 0)
    finally:
        v.close()


def test_heartbeats_keep_a_quiet_stream_alive(serve):
    s = serve(heartbeat=0.1)
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: sum(1 for e, _ in v.events if e == "comment") >= 2)
    finally:
        v.close()
    s.settle(lambda: s.out.viewers == 0)  # a heartbeat finds the viewer gone


def test_max_clients_is_enforced_with_a_clear_page(serve):
    s = serve(replace(CFG, max_clients=2))
    viewers = [Viewer(s.port) for _ in range(2)]
    try:
        for v in viewers:
            assert v.pump(lambda v: bool(v.of("hello")))
        full = get(s.port)
        assert full.status == 503
        assert full.headers["retry-after"] == "30"
        assert "The caption page is full" in full.text
        assert 'http-equiv="refresh"' in full.text
        assert get(s.port, "/events").status == 503
        assert get(s.port, "/events", method="HEAD").status == 503
        assert s.out.refused["full"] == 3
        viewers.pop().close()
        s.settle(lambda: s.out.viewers == 1)
        assert get(s.port).status == 200
    finally:
        for v in viewers:
            v.close()


def test_stop_says_bye_to_every_viewer_within_the_budget(serve):
    s = serve()
    viewers = [Viewer(s.port) for _ in range(5)]
    for v in viewers:
        assert v.pump(lambda v: bool(v.of("hello")))
    started = time.monotonic()
    s.worker.request_stop()
    assert s.worker.join(2.0)
    assert time.monotonic() - started < 1.5
    for v in viewers:
        v.pump(lambda v: False, timeout=1.0)
        assert v.eof
        assert v.events[-1] == ("bye", {"type": "bye"})
        v.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", s.port), timeout=1.0)


def test_a_restarted_server_takes_its_port_back_and_its_viewers_reconnect(serve):
    first = serve()
    port = first.port
    v = Viewer(port)
    assert v.pump(lambda v: bool(v.of("hello")))
    first.worker.request_stop()
    assert first.worker.join(2.0)
    v.pump(lambda v: False, timeout=1.0)
    v.close()
    second = serve(replace(CFG, listen=f"127.0.0.1:{port}"))
    again = Viewer(port)
    try:
        assert again.pump(lambda v: bool(v.of("hello")))
    finally:
        again.close()
    assert second.port == port


def test_a_port_in_use_makes_the_output_unavailable_with_the_reason():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = WebOutput(replace(CFG, listen=f"127.0.0.1:{port}"))
        with pytest.raises(OutputUnavailable, match=rf"127.0.0.1:{port}: Address already in use"):
            out.open()


# --- the access code ------------------------------------------------------------------
CODE_CFG = replace(CFG, access_code=SecretRef(("env:EDGECAP_TEST_WEB_CODE",)))


def test_the_access_code_is_asked_once_and_kept_as_a_cookie(serve, monkeypatch):
    monkeypatch.setenv("EDGECAP_TEST_WEB_CODE", "4711-room")
    s = serve(CODE_CFG)
    form = get(s.port)
    assert form.status == 403
    assert '<form method="get" action="/">' in form.text and 'name="code"' in form.text
    assert "4711" not in form.text
    assert get(s.port, "/?code=1234").status == 403
    assert "not right" in get(s.port, "/?code=4711-roo").text
    assert get(s.port, "/events").status == 403
    ok = get(s.port, "/?code=4711-room")
    assert ok.status == 303
    assert ok.headers["location"] == "/"
    cookie = ok.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert "4711" not in value and value == code_mac("4711-room").decode()
    with_cookie = f"Cookie: theme=dark; {COOKIE}={value}\r\n"
    assert get(s.port, headers=with_cookie).status == 200
    v = Viewer(s.port, headers=with_cookie)
    try:
        assert v.pump(lambda v: bool(v.of("hello")))
    finally:
        v.close()
    forged = f"Cookie: {COOKIE}={code_mac('4711-roon').decode()}\r\n"
    assert get(s.port, "/events", headers=forged).status == 403
    assert get(s.port, "/metrics").status == 200  # a scraper needs no code


def test_wrong_codes_are_throttled(serve, monkeypatch):
    monkeypatch.setenv("EDGECAP_TEST_WEB_CODE", "1234")
    s = serve(CODE_CFG)
    for guess in range(web_output._CODE_TRIES):
        assert get(s.port, f"/?code={guess:04d}").status == 403
    throttled = get(s.port, "/?code=1234")
    assert throttled.status == 429
    assert throttled.headers["retry-after"] == "60"


def test_the_code_is_compared_in_constant_time(serve, monkeypatch):
    """Both sides are hashed first and compared with hmac.compare_digest: neither the
    time taken nor the length of a guess says how much of it was right."""
    calls: list[tuple[bytes, bytes]] = []
    real = web_output.hmac.compare_digest

    def spy(a, b):  # type: ignore[no-untyped-def]
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web_output.hmac, "compare_digest", spy)
    monkeypatch.setenv("EDGECAP_TEST_WEB_CODE", "secret-code")
    s = serve(CODE_CFG)
    assert get(s.port, "/?code=s").status == 403
    assert get(s.port, "/?code=secret-codeX").status == 403
    assert get(s.port, "/?code=secret-code").status == 303
    expected = code_mac("secret-code")
    assert calls == [
        (code_mac("s"), expected),
        (code_mac("secret-codeX"), expected),
        (expected, expected),
    ]


def test_a_code_that_cannot_be_read_keeps_the_page_off(monkeypatch):
    monkeypatch.delenv("EDGECAP_TEST_WEB_CODE", raising=False)
    out = WebOutput(CODE_CFG)
    with pytest.raises(OutputUnavailable, match="access_code: no code found"):
        out.open()
    assert out.address is None


# --- /metrics -------------------------------------------------------------------------
def metrics(port: int) -> dict[str, dict[tuple, float]]:
    answer = get(port, "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain; version=")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_tell_a_fleet_what_each_room_is_doing(serve):
    s = serve(service="soniox")
    b = s.board
    b.set("audio", "listening")
    b.set("link", "retrying", "connection refused")
    b.set("output:hdmi", "unavailable", "no framebuffer")
    b.put("link_attempts", 7)
    b.put("link_failures", 3)
    b.put("uplink_lost_s", 1.25)
    b.put("audio_dropped_s", 0.5)
    b.put("speech_confirmed_s", 42.0)
    b.put("speech_offline_s", 3.5)
    b.put("output_failures:hdmi", 2)
    b.put("output_queue:hdmi", 5)
    b.put("link_bad_messages", 1)
    s.publish(cap(1, "a"), cap(2, "b", offline=True), cap(3, "c", final=False))
    s.settle(lambda: s.out.caption_updates == 3)
    v = Viewer(s.port)
    try:
        assert v.pump(lambda v: bool(v.of("hello")))
        m = metrics(s.port)
    finally:
        v.close()
    one = lambda metric, **labels: m[metric][tuple(sorted(labels.items()))]  # noqa: E731
    assert one("edgecap_info", service="soniox", version=__import__("edgecap").__version__) == 1
    assert one("edgecap_link_up") == 0
    assert one("edgecap_audio_up") == 1
    assert one("edgecap_state", part="link", state="retrying") == 1
    assert one("edgecap_output_up", output="hdmi") == 0
    assert one("edgecap_output_up", output="web") == 1
    assert one("edgecap_link_connection_attempts_total") == 7
    assert one("edgecap_link_failures_total") == 3
    assert one("edgecap_speech_seconds_total", kind="lost_link") == 1.25
    assert one("edgecap_speech_seconds_total", kind="lost_capture") == 0.5
    assert one("edgecap_speech_seconds_total", kind="sent") == 42.0
    assert one("edgecap_speech_seconds_total", kind="offline") == 3.5
    assert one("edgecap_output_failures_total", output="hdmi") == 2
    assert one("edgecap_output_queue_events", output="hdmi") == 5
    assert one("edgecap_status_counter", name="link_bad_messages") == 1
    assert one("edgecap_captions_total", offline="false") == 1
    assert one("edgecap_captions_total", offline="true") == 1
    assert one("edgecap_caption_updates_total") == 3
    assert one("edgecap_web_viewers") == 1
    assert one("edgecap_web_viewers_max") == 100
    assert one("process_cpu_seconds_total") > 0
    assert one("process_resident_memory_bytes") > 10 * 1024 * 1024
    # the details of a state (which may hold anything) are never a label
    assert not any("refused" in str(labels) for labels in m["edgecap_state"])


def test_metrics_can_have_their_own_address_and_can_be_off(serve):
    s = serve(replace(CFG, metrics_listen="127.0.0.1:0"))
    assert s.out.metrics_address is not None
    mport = s.out.metrics_address[1]
    assert mport != s.port
    assert metrics(mport)["edgecap_web_viewers"][()] == 0
    assert get(s.port, "/metrics").status == 404  # not beside the page, then
    assert get(mport, "/").status == 404  # and nothing but metrics there
    assert get(mport, "/events").status == 404
    off = serve(replace(CFG, metrics=False))
    assert get(off.port, "/metrics").status == 404


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(serve):
    s = serve()
    answer = get(s.port, "/metrics", headers="Accept: application/openmetrics-text\r\n")
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.rstrip().endswith("# EOF")
