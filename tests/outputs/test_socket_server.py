"""The caption socket with real Unix sockets and real clients (no mocks).

Most tests drive the SocketOutput by hand (open / handle / idle / close, as the worker
would) so that every step is deterministic; the slow-client and garbage tests run it under
a real OutputWorker thread while real clients read (or do not) on theirs.
"""

from __future__ import annotations

import errno
import grp
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgecap import __version__
from edgecap.captions.events import AudioLoss, CaptionLine, SynthesizedAudio
from edgecap.config.schema import SocketConfig
from edgecap.outputs import socket_server
from edgecap.outputs.base import OutputUnavailable
from edgecap.outputs.socket_server import SocketOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard

Msgs = list[dict]


def cap(
    seq: int,
    text: str,
    *,
    final: bool = True,
    language: str | None = "en",
    translations: dict[str, str] | None = None,
    tfinal: bool | None = None,
    speaker: str | None = None,
) -> CaptionLine:
    return CaptionLine(
        seq=seq,
        text=text,
        translations=translations or {},
        speaker=speaker,
        language=language,
        start=seq * 2.0,
        end=seq * 2.0 + 1.5,
        final=final,
        translation_final=final if tfinal is None else tfinal,
    )


class Client:
    """A real client on its own socket; ``pump`` reads until a condition holds, turning the
    server's crank in between when it is driven by hand."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.sock.settimeout(0.02)
        self.buf = b""
        self.msgs: Msgs = []
        self.eof = False

    def pump(
        self,
        until: Callable[[Msgs], bool],
        server: SocketOutput | None = None,
        timeout: float = 3.0,
    ) -> bool:
        deadline = time.monotonic() + timeout
        while not until(self.msgs) and not self.eof and time.monotonic() < deadline:
            if server is not None:
                server.idle(time.monotonic())
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                break
            self.buf += data
            *lines, self.buf = self.buf.split(b"\n")
            self.msgs += [json.loads(x) for x in lines]
        return until(self.msgs)

    def of(self, kind: str) -> Msgs:
        return [m for m in self.msgs if m["type"] == kind]

    def close(self) -> None:
        self.sock.close()


def has(n: int, kind: str | None = None) -> Callable[[Msgs], bool]:
    return lambda msgs: sum(kind is None or m["type"] == kind for m in msgs) >= n


def config(path: Path, **kw) -> SocketConfig:
    return SocketConfig(path=path, **kw)


@pytest.fixture
def out(tmp_path: Path) -> Iterator[SocketOutput]:
    o = SocketOutput(
        config(tmp_path / "run" / "captions.sock", history=3),
        service="soniox",
        languages=["en", "es"],
        targets=["es", "de"],
    )
    o.open()
    yield o
    o.close()


def connect(out: SocketOutput) -> Client:
    c = Client(out.path)
    assert c.pump(has(1), out)  # accepted, hello read
    return c


def test_hello_then_history_then_live(out: SocketOutput) -> None:
    for i in range(1, 6):
        out.handle(cap(i, f"line {i}"))
    out.handle(cap(4, "line 4", translations={"es": "línea 4"}))  # a translation grew
    out.handle(cap(6, "speak", final=False))
    board = StatusBoard()
    board.set("audio", "listening")
    out.handle(board.snapshot())
    c = connect(out)
    assert c.pump(has(6), out)
    assert c.msgs[0] == {
        "type": "hello",
        "v": 2,
        "server": f"edgecap {__version__}",
        "service": "soniox",
        "languages": ["en", "es"],
        "targets": ["es", "de"],
        "translation_only": False,
    }
    # the last 3 finals in line order (the update kept line 4's place), the line being
    # spoken, the latest status
    assert [(m["seq"], m["final"]) for m in c.msgs[1:5]] == [
        (3, True),
        (4, True),
        (5, True),
        (6, False),
    ]
    assert c.msgs[2]["translations"] == [{"language": "es", "text": "línea 4", "final": True}]
    assert c.msgs[5]["type"] == "status"
    out.handle(cap(6, "speaking now"))
    assert c.pump(has(7), out)
    assert c.msgs[6] == {
        "type": "caption",
        "id": "c6",
        "seq": 6,
        "final": True,
        "done": True,
        "text": "speaking now",
        "language": "en",
        "language_confidence": None,
        "translations": [],
        "speaker": None,
        "start": 12.0,
        "end": 13.5,
        "offline": False,
    }
    # a line withdrawn (final, empty) is not part of the history of a newcomer
    out.handle(cap(7, "uh", final=False))
    out.handle(cap(7, ""))
    late = connect(out)
    assert late.pump(has(5), out)
    assert [m.get("seq") for m in late.msgs[1:4]] == [4, 5, 6]
    assert late.msgs[4]["type"] == "status" and len(late.msgs) == 5
    c.close()
    late.close()


def test_two_way_translation_lines(out: SocketOutput) -> None:
    c = connect(out)
    where = "Where is the station?"
    out.handle(cap(1, where, translations={"es": "¿Dónde"}, tfinal=False, speaker="1"))
    out.handle(cap(1, where, translations={"es": "¿Dónde está la estación?"}, speaker="1"))
    end = "Al final de la calle."
    out.handle(cap(2, end, language="es", translations={"en": "At the end"}, final=False))
    out.handle(cap(2, end, language="es", translations={"en": "At the end of the street."}))
    assert c.pump(has(4, "caption"), out)
    first, first_done, second, second_done = c.of("caption")
    assert (first["final"], first["done"]) == (True, False)  # its translation may still grow
    assert first["translations"] == [{"language": "es", "text": "¿Dónde", "final": False}]
    assert first_done["done"] and first_done["speaker"] == "1"
    assert first_done["translations"] == [
        {"language": "es", "text": "¿Dónde está la estación?", "final": True}
    ]
    assert (second["final"], second["language"]) == (False, "es")
    assert second["translations"][0]["final"] is False
    assert second_done["language"] == "es"
    assert second_done["translations"] == [
        {"language": "en", "text": "At the end of the street.", "final": True}
    ]
    c.close()


def test_several_translations_of_a_line_in_the_boards_order(out: SocketOutput) -> None:
    c = connect(out)
    # the board orders them (targets first); the socket keeps that order, and a language
    # the service did not name ("") is null
    texts = {"de": "Guten Morgen.", "es": "Buenos días.", "fr": "Bonjour.", "": "Hallo."}
    out.handle(cap(1, "Good morning.", translations=texts, tfinal=False))
    out.handle(cap(1, "Good morning.", translations=texts))
    assert c.pump(has(2, "caption"), out)
    growing, done = c.of("caption")
    assert growing["translations"] == [
        {"language": "de", "text": "Guten Morgen.", "final": False},
        {"language": "es", "text": "Buenos días.", "final": False},
        {"language": "fr", "text": "Bonjour.", "final": False},
        {"language": None, "text": "Hallo.", "final": False},
    ]
    assert [t["final"] for t in done["translations"]] == [True] * 4 and done["done"]
    c.close()


def test_translation_only_lines_are_captions_not_withdrawals(tmp_path: Path) -> None:
    out = SocketOutput(
        config(tmp_path / "s.sock"),
        service="sarvam",
        languages=["hi"],
        targets=["en"],
        translation_only=True,
    )
    out.open()
    try:
        out.handle(cap(1, "", language="hi", translations={"en": "Hello"}, final=False))
        out.handle(cap(1, "", language="hi", translations={"en": "Hello there."}))
        out.handle(cap(2, "", translations={"en": "gone"}, final=False))
        out.handle(cap(2, ""))  # withdrawn: no text and no translation
        c = connect(out)
        assert c.pump(has(2), out)
        hello, line = c.msgs
        assert hello["targets"] == ["en"] and hello["translation_only"] is True
        assert (line["seq"], line["text"], line["done"]) == (1, "", True)
        assert line["translations"] == [{"language": "en", "text": "Hello there.", "final": True}]
        c.close()
    finally:
        out.close()


def test_synthesized_speech_is_not_sent(out: SocketOutput) -> None:
    c = connect(out)
    out.handle(SynthesizedAudio("es", "riff-16khz-16bit-mono-pcm", b"\0" * 3200, end=True, seq=1))
    out.handle(cap(1, "after"))
    assert c.pump(has(2), out)
    assert [m["type"] for m in c.msgs] == ["hello", "caption"]
    c.close()


def test_status_and_gap(out: SocketOutput) -> None:
    c = connect(out)
    board = StatusBoard()
    board.set("audio", "listening", "alsa:USB Audio")
    board.set("link", "retrying", "connect_failed")
    board.put("uplink_lost_s", 2.5)
    board.put("socket_clients", 1)
    out.handle(board.snapshot())
    out.handle(AudioLoss(12.4, 70.0, 82.4, "service unreachable"))
    out.handle(AudioLoss(float("nan"), None, None, "buffer full"))
    assert c.pump(has(2, "gap"), out)
    (status,) = c.of("status")
    assert (
        status["summary"] == "Listening… · Speech service unreachable (connect_failed) · 2.5 s lost"
    )
    assert status["parts"] == {
        "audio": {"state": "listening", "detail": "alsa:USB Audio"},
        "link": {"state": "retrying", "detail": "connect_failed"},
    }
    assert status["counters"] == {"uplink_lost_s": 2.5, "socket_clients": 1}
    assert c.of("gap") == [
        {
            "type": "gap",
            "seconds": 12.4,
            "start": 70.0,
            "end": 82.4,
            "reason": "service unreachable",
        },
        {"type": "gap", "seconds": None, "start": None, "end": None, "reason": "buffer full"},
    ]
    c.close()


def test_many_clients_then_the_limit(tmp_path: Path) -> None:
    out = SocketOutput(config(tmp_path / "s.sock", max_clients=20), service="local", languages=[])
    out.open()
    try:
        clients = []
        for _ in range(21):
            clients.append(Client(out.path))
            out.idle(time.monotonic())
        for i in range(1, 51):
            out.handle(cap(i, f"to everyone {i}"))
        for c in clients[:20]:
            assert c.pump(has(50, "caption"), out)
            assert [m["seq"] for m in c.of("caption")] == list(range(1, 51))
        turned_away = clients[20]
        assert turned_away.pump(lambda m: False, out, timeout=0.5) is False and turned_away.eof
        assert turned_away.msgs == [
            {"type": "error", "error": "too_many_clients", "message": "too many clients (limit 20)"}
        ]
        assert (out.clients, out.clients_served, out.clients_refused) == (20, 20, 1)
        for c in clients[:5]:
            c.close()
        deadline = time.monotonic() + 2
        while out.clients > 15 and time.monotonic() < deadline:
            out.idle(time.monotonic())
        assert out.clients == 15  # hang-ups noticed without sending them anything
        assert out.bytes_sent > 20 * 50 * 100
    finally:
        out.close()


def test_a_client_that_never_reads_is_cut_while_another_gets_everything(tmp_path: Path) -> None:
    out = SocketOutput(
        config(tmp_path / "s.sock", client_buffer=16384), service="soniox", languages=["en"]
    )
    worker = OutputWorker(out, StatusBoard(), max_finals=5000)
    worker.start()
    try:
        deadline = time.monotonic() + 3
        while not worker.idle and time.monotonic() < deadline:  # opened (listening), asleep
            time.sleep(0.01)
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(str(out.path))  # and never reads until the end
        fast = Client(out.path)
        total = 800
        got = threading.Event()
        reader = threading.Thread(
            target=lambda: fast.pump(has(total, "caption"), timeout=15) and got.set()
        )
        reader.start()
        while out.clients < 2:
            time.sleep(0.01)
        for i in range(1, total + 1):
            worker.publish(cap(i, f"caption number {i} " + "x" * 250))
            if i % 50 == 0:
                time.sleep(0.005)
        assert got.wait(15)
        reader.join(2)
        assert [m["seq"] for m in fast.of("caption")] == list(range(1, total + 1))
        assert out.clients_dropped_slow == 1 and out.clients == 1

        # the slow client got whole lines, in order, then the notice, then EOF
        slow.settimeout(3)
        data = b""
        while chunk := slow.recv(65536):
            data += chunk
        msgs = [json.loads(x) for x in data.split(b"\n")[:-1]]
        assert data.endswith(b"\n")
        assert msgs[0]["type"] == "hello"
        seqs = [m["seq"] for m in msgs if m["type"] == "caption"]
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < total
        assert msgs[-1]["type"] == "error" and msgs[-1]["error"] == "slow_client"
        assert "16384 bytes" in msgs[-1]["message"]
        slow.close()
        fast.close()
    finally:
        worker.request_stop()
        assert worker.join(3)


def test_garbage_input_and_half_close_are_harmless(tmp_path: Path) -> None:
    out = SocketOutput(config(tmp_path / "s.sock"), service="soniox", languages=[])
    worker = OutputWorker(out, StatusBoard())
    worker.start()
    try:
        deadline = time.monotonic() + 3
        while not worker.idle and time.monotonic() < deadline:  # opened (listening), asleep
            time.sleep(0.01)
        noisy, calm = Client(out.path), Client(out.path)
        noisy.sock.settimeout(5)
        noisy.sock.sendall(os.urandom(2 * 1024 * 1024) + b'\n{"type":"bye"}\n\xff\xfe')
        noisy.sock.shutdown(socket.SHUT_WR)  # it will not write any more, it still reads
        noisy.sock.settimeout(0.02)
        for i in range(1, 4):
            worker.publish(cap(i, f"still served {i}"))
        for c in (noisy, calm):
            assert c.pump(has(3, "caption"))
            assert [m["text"] for m in c.of("caption")] == [f"still served {i}" for i in (1, 2, 3)]
        assert out.clients == 2 and out.clients_dropped_slow == 0
        noisy.close()
        calm.close()
    finally:
        worker.request_stop()
        assert worker.join(3)


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))  # a file nobody listens on: left by a crash
    crashed.close()
    out = SocketOutput(config(path), service="local", languages=[])
    out.open()
    try:
        c = connect(out)
        assert c.msgs[0]["type"] == "hello"
        c.close()
    finally:
        out.close()


def test_a_live_server_on_the_path_is_refused(out: SocketOutput) -> None:
    second = SocketOutput(config(out.path), service="local", languages=[])
    done = threading.Event()

    def serve() -> None:  # the first server keeps answering, as under its worker
        while not done.wait(0.01):
            out.idle(time.monotonic())

    server = threading.Thread(target=serve)
    server.start()
    try:
        with pytest.raises(OutputUnavailable) as refused:
            second.open()
    finally:
        done.set()
        server.join()
    message = str(refused.value)
    assert "already serving" in message and str(out.path) in message
    assert f"pid {os.getpid()}" in message
    c = connect(out)  # the first one still serves
    c.close()


def test_a_path_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    path.write_text("precious")
    out = SocketOutput(config(path), service="local", languages=[])
    with pytest.raises(OutputUnavailable, match="is not a socket"):
        out.open()
    assert path.read_text() == "precious"


def test_mode_group_and_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "s.sock"
    group = grp.getgrgid(os.getgid()).gr_name
    old_umask = os.umask(0o077)
    try:
        out = SocketOutput(config(path, mode=0o660, group=group), service="local", languages=[])
        out.open()
    finally:
        os.umask(old_umask)
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == os.getgid()
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o755
    finally:
        out.close()
    numeric = SocketOutput(
        config(path, mode=0o600, group=str(os.getgid())), service="x", languages=[]
    )
    numeric.open()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    numeric.close()


def test_an_unknown_group_is_a_clear_error(tmp_path: Path) -> None:
    out = SocketOutput(
        config(tmp_path / "s.sock", group="no-such-group-edgecap"), service="x", languages=[]
    )
    with pytest.raises(OutputUnavailable, match="group 'no-such-group-edgecap': no such group"):
        out.open()
    assert not (tmp_path / "s.sock").exists()


def test_close_says_bye_and_removes_the_file(out: SocketOutput) -> None:
    c = connect(out)
    out.handle(cap(1, "last words"))
    out.close()
    assert c.pump(lambda m: bool(m) and m[-1]["type"] == "bye")
    assert [m["type"] for m in c.msgs] == ["hello", "caption", "bye"]
    assert c.pump(lambda m: False, timeout=1) is False and c.eof
    assert not out.path.exists()
    c.close()
    out.open()  # the worker reopens the same output after a loss: history kept
    again = connect(out)
    assert again.pump(has(2), out) and again.msgs[1]["text"] == "last words"
    again.close()


def test_close_is_quick_with_a_stuck_client_and_spares_a_file_not_ours(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    out = SocketOutput(config(path, client_buffer=64 * 1024**2), service="x", languages=[])
    out.open()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(str(path))
    out.idle(time.monotonic())
    for i in range(3000):
        out.handle(cap(i + 1, "y" * 400))  # far more than the kernel takes
    path.unlink()
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))  # someone else's socket now lives at the path
    started = time.monotonic()
    out.close()
    assert time.monotonic() - started < 1.0
    assert path.exists()  # not ours: not removed
    other.close()
    stuck.close()


def test_a_removed_socket_file_is_made_again_and_clients_keep_their_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket_server, "_PATH_CHECK_EVERY", 0.0)
    out = SocketOutput(config(tmp_path / "s.sock"), service="x", languages=[])
    out.open()
    try:
        c = connect(out)
        out.path.unlink()  # someone cleaned the directory
        out.idle(time.monotonic())
        assert out.path.exists()
        newcomer = connect(out)
        out.handle(cap(1, "both hear this"))
        for client in (c, newcomer):
            assert client.pump(has(1, "caption"), out)
        c.close()
        newcomer.close()
    finally:
        out.close()
    assert not out.path.exists()


def test_a_long_history_does_not_count_against_a_newcomer(tmp_path: Path) -> None:
    out = SocketOutput(
        config(tmp_path / "s.sock", history=100, client_buffer=4096), service="x", languages=[]
    )
    out.open()
    try:
        for i in range(1, 101):
            out.handle(cap(i, "z" * 500))  # 50 KB of history, a 4 KB allowance
        c = connect(out)
        assert c.pump(has(100, "caption"), out)
        assert out.clients_dropped_slow == 0
        c.close()
    finally:
        out.close()


def test_offline_captions_say_so() -> None:
    from dataclasses import replace

    from edgecap.outputs.socket_server import caption_message

    assert caption_message(replace(cap(1, "from the box"), offline=True))["offline"] is True
    assert caption_message(cap(2, "from the cloud"))["offline"] is False


# --- asleep between events (issue 14) -------------------------------------------------------


def started(out: SocketOutput) -> OutputWorker:
    worker = OutputWorker(out, StatusBoard())
    worker.start()
    deadline = time.monotonic() + 3
    while not worker.idle:  # opened (listening) and asleep
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return worker


def test_a_sleeping_server_serves_a_newcomer_and_remakes_its_removed_file_at_once(
    tmp_path: Path,
) -> None:
    """No timer: the poll wakes for a client connecting and for the socket's directory
    changing (someone cleaned /run), and the server is asleep again right after."""
    out = SocketOutput(config(tmp_path / "run" / "s.sock"), service="x", languages=[])
    worker = started(out)
    try:
        asleep = worker.wakeups
        t0 = time.monotonic()
        first = Client(out.path)
        assert first.pump(has(1)) and time.monotonic() - t0 < 0.5
        first.close()
        out.path.unlink()
        t0 = time.monotonic()
        while not out.path.exists():
            assert time.monotonic() - t0 < 0.5, "the socket file was not made again"
            time.sleep(0.005)
        again = Client(out.path)
        worker.publish(cap(1, "still here"))
        assert again.pump(has(1, "caption"))
        again.close()
        time.sleep(0.1)
        assert worker.wakeups - asleep < 12 and worker.idle  # a few wake-ups, no polling
    finally:
        worker.request_stop()
        assert worker.join(3)


def test_out_of_descriptors_the_listener_rests_instead_of_spinning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """accept() failing with EMFILE leaves the connection in the backlog and the listener
    readable: it leaves the poll for _ACCEPT_PAUSE, then the client is served."""
    monkeypatch.setattr(socket_server, "_ACCEPT_PAUSE", 0.2)
    out = SocketOutput(config(tmp_path / "s.sock"), service="x", languages=[])
    out.open()
    real = out._listener
    assert real is not None

    class Exhausted:
        def fileno(self) -> int:
            return real.fileno()

        def accept(self) -> None:
            raise OSError(errno.EMFILE, "Too many open files")

    try:
        out._listener = Exhausted()  # type: ignore[assignment]
        waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        waiting.connect(str(out.path))
        out.idle(time.monotonic())
        assert out.clients == 0 and 0.15 < (out.wake_in(0) or 0) <= 0.2
        quiet = os.eventfd(0)
        t0 = time.monotonic()
        out.wait_io(0.3, quiet)  # the listener is out of the poll: a real sleep
        assert time.monotonic() - t0 >= 0.29
        os.close(quiet)
        out._listener = real
        time.sleep(0.2)
        out.idle(time.monotonic())  # the pause is over: back in the poll
        out.idle(time.monotonic())
        assert out.clients == 1
        waiting.close()
    finally:
        out._listener = real
        out.close()


def test_a_lines_language_confidence_is_sent_rounded():
    from dataclasses import replace

    from edgecap.outputs.socket_server import caption_message

    line = replace(cap(1, "नमस्ते"), language="hi-IN", language_confidence=0.934567)
    message = caption_message(line)
    assert (message["language"], message["language_confidence"]) == ("hi-IN", 0.935)
