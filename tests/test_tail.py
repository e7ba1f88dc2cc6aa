"""`edgecap tail` against a real SocketOutput on a real Unix socket (no mocks)."""

from __future__ import annotations

import io
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import SocketConfig
from edgecap.outputs.socket_server import SocketOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard
from edgecap.tail import run_tail

ERASE = "\r\x1b[2K"


def cap(
    seq: int,
    text: str,
    *,
    final: bool = True,
    translations: dict[str, str] | None = None,
    tfinal: bool | None = None,
    speaker: str | None = None,
) -> CaptionLine:
    return CaptionLine(
        seq=seq,
        text=text,
        translations=translations or {},
        speaker=speaker,
        language="en",
        start=seq * 2.0 + 60.5,
        end=seq * 2.0 + 62.0,
        final=final,
        translation_final=final if tfinal is None else tfinal,
    )


def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


@contextmanager
def daemon(path: Path, **cfg) -> Iterator[OutputWorker]:
    """The socket output as the daemon runs it: behind its own OutputWorker thread."""
    out = SocketOutput(SocketConfig(path=path, **cfg), service="soniox", languages=["en"])
    worker = OutputWorker(out, StatusBoard())
    worker.start()
    assert wait_for(path.exists)
    try:
        yield worker
    finally:
        worker.request_stop()
        assert worker.join(3)


@contextmanager
def tailing(path: Path, **kw) -> Iterator[tuple[io.StringIO, io.StringIO, threading.Thread]]:
    out, err = io.StringIO(), io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    kw.setdefault("json_mode", False)
    kw.setdefault("retry_interval", 0.05)
    thread = threading.Thread(
        target=lambda: result.append(run_tail(path, out=out, err=err, stop=stop, **kw))
    )
    thread.start()
    try:
        yield out, err, thread
    finally:
        stop.set()
        thread.join(3)
        assert not thread.is_alive() and result == [0]


def test_text_mode_prints_finals_and_survives_a_daemon_restart(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with tailing(path) as (out, err, _):
        with daemon(path) as d:
            assert wait_for(lambda: d.output.clients == 1)
            d.publish(cap(1, "Good even", final=False))  # a pipe shows finals only
            d.publish(cap(1, "Good evening.", translations={"es": "Buenas noches."}, speaker="1"))
            d.publish(AudioLoss(3.25, 70.0, 73.25, "network down"))
            d.publish(cap(2, "Welcome."))
            assert wait_for(lambda: "Welcome." in out.getvalue())
        assert wait_for(lambda: "went away" in err.getvalue())
        time.sleep(0.2)  # several failed reconnects: not told again
        with daemon(path) as d:  # a restarted daemon numbers its lines from 1 again
            assert wait_for(lambda: err.getvalue().count("connected") == 2)
            d.publish(cap(1, "After the restart."))
            assert wait_for(lambda: "After the restart." in out.getvalue())
        assert wait_for(lambda: err.getvalue().count("went away") == 2)
    assert out.getvalue() == (
        "[01:02.50] S1: Good evening.\n"
        "           → [es] Buenas noches.\n"
        "⚠ 3.2 s of speech lost (network down)\n"
        "[01:04.50] Welcome.\n"
        "[01:02.50] After the restart.\n"
    )
    # tail started first; every situation is told once, however many attempts it took
    told = [
        line.split(": ", 1)[1].split(" (")[0].split(";")[0] for line in err.getvalue().splitlines()
    ]
    assert told == [
        "edgecap is not running",
        f"connected to {path}",
        "edgecap went away",
        f"connected to {path}",
        "edgecap went away",
    ]


def test_waits_for_a_daemon_that_is_not_running_and_says_so_once(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with tailing(path) as (out, err, _):
        assert wait_for(lambda: "not running" in err.getvalue())
        time.sleep(0.3)  # six more attempts
        assert err.getvalue().count("\n") == 1
        assert str(path) in err.getvalue()
        with daemon(path) as d:
            d.publish(cap(1, "There it is."))
            assert wait_for(lambda: "There it is." in out.getvalue())
    assert err.getvalue().splitlines()[1] == f"edgecap tail: connected to {path}"


def test_a_reconnect_to_the_same_daemon_prints_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    out = SocketOutput(SocketConfig(path=path, history=5), service="x", languages=[])
    jobs: queue.Queue[Callable[[], object]] = queue.Queue()
    done = threading.Event()

    def own() -> None:  # one thread owns the output, as its worker would
        while not done.is_set():
            try:
                jobs.get(timeout=0.01)()
            except queue.Empty:
                out.idle(time.monotonic())

    owner = threading.Thread(target=own)
    jobs.put(out.open)
    owner.start()
    try:
        with tailing(path) as (text, err, _):
            assert wait_for(lambda: out.clients == 1)
            for i in (1, 2, 3):
                jobs.put(lambda i=i: out.handle(cap(i, f"line {i}")))
            assert wait_for(lambda: "line 3" in text.getvalue())
            jobs.put(out.close)  # the output is lost and reopened: its history is sent again
            jobs.put(out.open)
            assert wait_for(lambda: "connected" in err.getvalue())
            jobs.put(lambda: out.handle(cap(4, "line 4")))
            assert wait_for(lambda: "line 4" in text.getvalue())
        assert [ln.split("] ")[1] for ln in text.getvalue().splitlines()] == [
            "line 1",
            "line 2",
            "line 3",
            "line 4",
        ]
    finally:
        jobs.put(out.close)
        jobs.put(done.set)
        owner.join(3)


def test_json_mode_passes_the_lines_through(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with daemon(path) as d:
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        raw.connect(str(path))
        with tailing(path, json_mode=True) as (out, _, _):
            assert wait_for(lambda: d.output.clients == 2)
            d.publish(cap(1, "¿Qué tal? 你好", translations={"en": "How are you? Hello"}))
            d.publish(AudioLoss(1.0, 5.0, 6.0, "buffer full"))
            assert wait_for(lambda: '"gap"' in out.getvalue())
        raw.settimeout(2)
        data = b""
        while data.count(b"\n") < 3:
            data += raw.recv(65536)
        raw.close()
    assert out.getvalue() == data.decode()
    hello, caption, gap = (json.loads(x) for x in out.getvalue().splitlines())
    assert hello["v"] == 2 and caption["text"] == "¿Qué tal? 你好" and gap["type"] == "gap"


def test_every_translation_is_printed_once_and_translation_only_lines_too(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with tailing(path) as (out, _, _):
        with daemon(path) as d:
            assert wait_for(lambda: d.output.clients == 1)
            # a provisional translation is not printed; the final ones in the daemon's order
            d.publish(cap(1, "Thank you.", translations={"fr": "Merci."}, tfinal=False))
            d.publish(cap(1, "Thank you.", translations={"de": "Danke.", "fr": "Merci."}))
            d.publish(cap(2, "", translations={"en": "Good morning"}, final=False))
            d.publish(cap(2, "", translations={"en": "Good morning.", "": "Hi."}))
            d.publish(cap(3, "", translations={"en": "maybe"}, final=False))
            d.publish(cap(3, ""))  # withdrawn: nothing printed
            d.publish(cap(4, "Bye."))
            assert wait_for(lambda: "Bye." in out.getvalue())
        with daemon(path) as d:  # the same lines again as a restarted daemon's history
            assert wait_for(lambda: d.output.clients == 1)
            d.publish(cap(1, "Thank you.", translations={"de": "Danke.", "fr": "Merci."}))
            d.publish(cap(2, "", translations={"en": "Good morning.", "": "Hi."}))
            d.publish(cap(5, "Done."))
            assert wait_for(lambda: "Done." in out.getvalue())
    assert out.getvalue() == (
        "[01:02.50] Thank you.\n"
        "           → [de] Danke.\n"
        "           → [fr] Merci.\n"
        "[01:04.50] [en] Good morning.\n"
        "           → Hi.\n"
        "[01:08.50] Bye.\n"
        "[01:10.50] Done.\n"
    )


def test_a_version_1_daemon_is_read_alike(tmp_path: Path) -> None:
    """Recorded lines of a version-1 daemon (the shape of a caption did not change)."""
    path = tmp_path / "captions.sock"
    recorded = [
        {"type": "hello", "v": 1, "server": "edgecap 0.1.0", "service": "soniox"},
        {
            "type": "caption",
            "id": "c12",
            "seq": 12,
            "final": True,
            "done": True,
            "text": "Unless the system is established",
            "language": "en",
            "translations": [
                {"language": "es", "text": "A menos que el sistema se establezca", "final": True}
            ],
            "speaker": "1",
            "start": 31.2,
            "end": 33.82,
        },
        {"type": "bye"},
    ]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in recorded))

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with tailing(path) as (out, err, _):
            assert wait_for(lambda: "went away" in err.getvalue())
    finally:
        thread.join(3)
        server.close()
    assert out.getvalue() == (
        "[00:31.20] S1: Unless the system is established\n"
        "           → [es] A menos que el sistema se establezca\n"
    )


def test_on_a_terminal_the_line_being_spoken_is_shown_in_place(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    long = "word " * 30
    with daemon(path) as d, tailing(path, tty=True) as (out, _, _):
        assert wait_for(lambda: d.output.clients == 1)
        d.publish(cap(1, "Hello wor", final=False))
        assert wait_for(lambda: "wor" in out.getvalue())
        d.publish(cap(1, "Hello world."))
        assert wait_for(lambda: "world." in out.getvalue())
        d.publish(cap(2, long.strip(), final=False))
        assert wait_for(lambda: out.getvalue().endswith("word"))
        d.publish(cap(2, ""))  # withdrawn
        assert wait_for(lambda: out.getvalue().endswith(ERASE))
    shown = out.getvalue()
    assert shown.startswith(f"{ERASE}Hello wor{ERASE}[01:02.50] Hello world.\n{ERASE}…")
    spoken = shown.split("\n")[1].removeprefix(ERASE).removesuffix(ERASE)
    assert len(spoken) == 79 and spoken.endswith("word word")  # never wraps an 80-col line


def test_on_a_terminal_a_translation_only_line_is_shown_in_place_too(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with daemon(path) as d, tailing(path, tty=True) as (out, _, _):
        assert wait_for(lambda: d.output.clients == 1)
        d.publish(cap(1, "", translations={"en": "Good mor"}, final=False))
        assert wait_for(lambda: "mor" in out.getvalue())
        d.publish(cap(1, "", translations={"en": "Good morning."}))
        assert wait_for(lambda: "morning." in out.getvalue())
    assert out.getvalue() == f"{ERASE}[en] Good mor{ERASE}[01:02.50] [en] Good morning.\n"


def test_turned_away_by_a_full_daemon_is_told_once(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with daemon(path, max_clients=1) as d:
        first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        first.connect(str(path))
        with tailing(path) as (out, err, _):
            assert wait_for(lambda: d.output.clients_refused >= 4)
            assert err.getvalue().count("too many clients") == 1
            first.close()
            assert wait_for(lambda: "connected" in err.getvalue())
            d.publish(cap(1, "Room for one."))
            assert wait_for(lambda: "Room for one." in out.getvalue())


def test_ctrl_c_exits_0(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from edgecap.tail import run_tail;"
        "sys.exit(run_tail(Path(sys.argv[1]), json_mode=False, out=sys.stdout,"
        " err=sys.stderr, retry_interval=0.05))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "none.sock")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    assert "not running" in proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=5)
    assert proc.returncode == 0, rest
