"""`edgecap tail` against a real SocketOutput on a real Unix socket (no mocks)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgecap import cli
from edgecap.captions.events import AudioLoss, CaptionLine
from edgecap.config.schema import SocketConfig
from edgecap.outputs.socket_server import SocketOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard
from edgecap.tail import EX_NOPERM, EX_UNAVAILABLE, run_tail

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
    board = StatusBoard()
    worker = OutputWorker(out, board)
    worker.start()
    # listening (the file exists a moment before: a connect then would be refused)
    assert wait_for(lambda: board.snapshot().state_of(worker.part) == "ok")
    try:
        yield worker
    finally:
        worker.request_stop()
        assert worker.join(3)


@contextmanager
def tailing(
    path: Path, status: int = 0, **kw
) -> Iterator[tuple[io.StringIO, io.StringIO, threading.Thread]]:
    """run_tail on its own thread; at the end it is stopped and must have returned
    ``status`` (by itself, or when stopped)."""
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
        assert not thread.is_alive() and result == [status]


def lines(*messages: object) -> bytes:
    """Protocol lines as a daemon sends them: UTF-8 JSON, not escaped to ASCII."""
    return b"".join(json.dumps(m, ensure_ascii=False).encode() + b"\n" for m in messages)


@contextmanager
def fake_daemon(path: Path, payload: bytes) -> Iterator[None]:
    """A socket at ``path`` that sends ``payload`` to its first client, then closes."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(5)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.sendall(payload)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield
    finally:
        thread.join(6)
        server.close()


def test_following_prints_finals_and_survives_a_daemon_restart(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with tailing(path, follow=True) as (out, err, _):
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


def test_following_waits_for_a_daemon_that_is_not_running_and_says_so_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "captions.sock"
    with tailing(path, follow=True) as (out, err, _):
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
        with tailing(path, follow=True) as (text, err, _):
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
    # the same objects, in the same order, re-encoded in ASCII (\u escapes)
    assert out.getvalue().isascii()
    assert [json.loads(x) for x in out.getvalue().splitlines()] == [
        json.loads(x) for x in data.decode().splitlines()
    ]
    hello, caption, gap = (json.loads(x) for x in out.getvalue().splitlines())
    assert hello["v"] == 2 and caption["text"] == "¿Qué tal? 你好" and gap["type"] == "gap"


def test_every_translation_is_printed_once_and_translation_only_lines_too(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with tailing(path, follow=True) as (out, _, _):
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
    with fake_daemon(path, lines(*recorded)), tailing(path) as (out, err, thread):
        thread.join(3)  # not following: the daemon's bye ends it, with status 0
        assert not thread.is_alive()
    assert err.getvalue() == "edgecap tail: edgecap stopped\n"
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
        with tailing(path, follow=True) as (out, err, _):
            assert wait_for(lambda: d.output.clients_refused >= 4)
            assert err.getvalue().count("too many clients") == 1
            first.close()
            assert wait_for(lambda: "connected" in err.getvalue())
            d.publish(cap(1, "Room for one."))
            assert wait_for(lambda: "Room for one." in out.getvalue())


def test_ctrl_c_exits_0(tmp_path: Path) -> None:
    code = (  # SIGINT as a terminal has it, even when the suite runs in the background
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler);"
        "import sys; from pathlib import Path; from edgecap.tail import run_tail;"
        "sys.exit(run_tail(Path(sys.argv[1]), json_mode=False, out=sys.stdout,"
        " err=sys.stderr, follow=True, retry_interval=0.05))"
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


# --- the socket is not trusted (issue 11, item 4) ------------------------------------------

# What a terminal acts on: C0 controls but the line feed, DEL, C1 controls (\x9b is CSI),
# bidi overrides and isolates, the Unicode line and paragraph separators.
RAW_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")

HOSTILE = [
    {"type": "hello", "v": 2, "server": "edgecap \x1b]0;owned\x07", "service": "x"},
    {"type": "caption", "seq": 1, "final": False, "text": "Hel\x1b[2Jlo\x9b31m there"},
    {
        "type": "caption",
        "seq": 1,
        "final": True,
        "text": "Hello \x1b[2J\x1b]0;pwned\x07world\x07 \x9b31mred\u202eevil\u202c\nnext",
        "language": "en",
        "speaker": "1\x1b]0;x\x07",
        "start": 1.0,
        "translations": [
            {"language": "d\x1b[31me", "text": "Hallo \x1b[5mWelt\r\nzwei\x1b(0", "final": True}
        ],
    },
    {
        "type": "caption",
        "seq": 2,
        "final": True,
        "text": "",
        "start": 3.0,
        "translations": [{"language": "\u202eus", "text": "\x1bcReset\u2066!", "final": True}],
    },
    {"type": "gap", "seconds": 2.0, "reason": "net \x1b[2J down\x9b\u202e\nforged line"},
    {"type": "error", "error": "x", "message": "go \x1b]0;t\x07away\x07\r\nedgecap tail: forged"},
]


def raw_controls(text: str) -> list[str]:
    """Control characters in ``text`` that tail did not put there itself (its erase-line)."""
    return RAW_CONTROL.findall(text.replace(ERASE, ""))


def test_hostile_socket_text_never_reaches_the_terminal_raw(tmp_path: Path) -> None:
    """Escape sequences (CSI, OSC title sets, RIS, charset), BEL, 8-bit CSI, bidi overrides
    and line breaks in every field tail prints: caption text, translations, language tags,
    speaker labels, a gap's reason, an error notice."""
    path = tmp_path / "captions.sock"
    with (
        fake_daemon(path, lines(*HOSTILE)),
        tailing(path, EX_UNAVAILABLE, tty=True) as (out, err, thread),
    ):
        thread.join(3)  # the daemon closed the connection with a notice: tail is done
    assert out.getvalue() == (
        f"{ERASE}Hello there"  # the line being spoken, in place
        f"{ERASE}[00:01.00] S1: Hello world redevil next\n"
        "           → [de] Hallo Welt  zwei\n"
        "[00:03.00] [us] Reset!\n"
        "⚠ 2.0 s of speech lost (net \\x1b[2J down\\x9b\\u202e\\x0aforged line)\n"
    )
    assert err.getvalue() == (
        "edgecap tail: the daemon closed the connection: "
        "go \\x1b]0;t\\x07away\\x07\\x0d\\x0aedgecap tail: forged\n"
    )
    assert raw_controls(out.getvalue()) == [] and raw_controls(err.getvalue()) == []


def test_json_mode_re_encodes_every_line_in_ascii_and_drops_what_is_not_json(
    tmp_path: Path,
) -> None:
    path = tmp_path / "captions.sock"
    payload = lines(*HOSTILE[:3]) + b"\x1b[2J\x1b]0;not json\x07\n" + lines(*HOSTILE[3:])
    with (
        fake_daemon(path, payload),
        tailing(path, EX_UNAVAILABLE, json_mode=True) as (out, err, thread),
    ):
        thread.join(3)
    assert out.getvalue().isascii() and raw_controls(out.getvalue()) == []
    assert [json.loads(x) for x in out.getvalue().splitlines()] == HOSTILE  # nothing lost
    assert raw_controls(err.getvalue()) == []


def test_records_of_the_wrong_shape_never_crash_tail(tmp_path: Path) -> None:
    """Types the protocol does not have, numbers JSON cannot hold, a nesting deeper than
    the parser goes and a lone surrogate (which a strict UTF-8 stream refuses to write)."""
    path = tmp_path / "captions.sock"
    payload = (
        b"[" * 100_000
        + b"\n"
        + lines(
            {"type": "caption", "final": True, "seq": [1], "text": "a", "translations": 5},
            {"type": "caption", "final": True, "seq": 2, "text": {"x": 1}, "start": "soon"},
            {"type": "gap", "seconds": None, "reason": ["x"]},
            {"type": ["caption"]},
            [1, 2],
        )
        + b'{"type":"caption","final":true,"seq":3,"text":"b\\ud800c","speaker":7}\n'
        + b'{"type":"caption","final":true,"seq":4,"text":"d","start":1e999}\n'
        + b'{"type":"gap","seconds":Infinity,"reason":"r"}\n'
        + lines({"type": "bye"})
    )
    stream = io.BytesIO()
    out = io.TextIOWrapper(stream, encoding="utf-8", write_through=True)  # errors="strict"
    with fake_daemon(path, payload):
        status = run_tail(path, json_mode=False, out=out, err=io.StringIO())
    assert status == 0
    assert stream.getvalue().decode() == (
        "[--:--.--] a\n"
        "[--:--.--] {'x': 1}\n"
        "⚠ some of speech lost (['x'])\n"
        "[--:--.--] S7: bc\n"
        "[--:--.--] d\n"
        "⚠ some of speech lost (r)\n"
    )


# --- exits and messages (issue 11, item 6) -------------------------------------------------


def test_without_follow_tail_exits_0_when_the_daemon_stops(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    with daemon(path) as d, tailing(path) as (out, err, thread):
        assert wait_for(lambda: d.output.clients == 1)
        d.publish(cap(1, "Last words."))
        assert wait_for(lambda: "Last words." in out.getvalue())
        d.request_stop()  # the daemon says bye to its clients
        thread.join(3)
        assert not thread.is_alive()  # ended by itself
    assert out.getvalue() == "[01:02.50] Last words.\n"
    assert err.getvalue() == "edgecap tail: edgecap stopped\n"


def test_without_follow_and_no_daemon_tail_says_so_and_exits_69_at_once(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    stale = tmp_path / "stale.sock"  # left by a crash: nobody listens on it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    for path, why in ((missing, "No such file or directory"), (stale, "Connection refused")):
        err = io.StringIO()
        t0 = time.monotonic()
        status = run_tail(path, json_mode=False, out=io.StringIO(), err=err)
        assert (status, err.getvalue()) == (
            EX_UNAVAILABLE,
            f"edgecap tail: edgecap is not running ({path}: {why})\n",
        )
        assert time.monotonic() - t0 < 1
    # the command line says the same, with the same status
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert cli.main(["tail", "--socket", str(missing)]) == EX_UNAVAILABLE
    assert "edgecap is not running" in err.getvalue()


def test_without_follow_a_daemon_that_vanishes_without_bye_is_exit_69(tmp_path: Path) -> None:
    path = tmp_path / "captions.sock"
    hello = {"type": "hello", "v": 2, "server": "edgecap", "service": "x"}
    caption = {"type": "caption", "seq": 1, "final": True, "text": "Cut", "start": 0.5}
    with fake_daemon(path, lines(hello, caption)), tailing(path, EX_UNAVAILABLE) as (o, e, t):
        t.join(3)
    assert o.getvalue() == "[00:00.50] Cut\n"
    assert e.getvalue() == "edgecap tail: edgecap went away\n"


def _tail_as_nobody(path: Path, *args: str, timeout: float = 5.0) -> tuple[int, str]:
    """`edgecap tail --socket path ARGS` in a forked child that runs as nobody; killed
    (status -9) if it has not ended within ``timeout``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with (
                contextlib.redirect_stderr(io.StringIO()) as err,
                contextlib.redirect_stdout(io.StringIO()),
            ):
                code = cli.main(["tail", "--socket", str(path), *args])
            os.write(write_end, err.getvalue().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if done[0] == 0:  # still retrying: a permission error must end it
        os.kill(pid, signal.SIGKILL)
        done = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        err = pipe.read().decode()
    return os.waitstatus_to_exitcode(done[1]), err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client as nobody")
def test_permission_denied_is_said_and_exits_77_at_once() -> None:
    """A socket only root may open (mode 0600), in a directory anyone may enter, and a
    client that runs as nobody: EACCES is not "edgecap is not running"."""
    with tempfile.TemporaryDirectory(prefix="edgecap-tail-", dir="/tmp") as tmp:
        os.chmod(tmp, 0o755)
        path = Path(tmp) / "captions.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            server.listen(1)
            path.chmod(0o600)
            for args in ((), ("--follow",)):  # waiting would not help either
                code, err = _tail_as_nobody(path, *args)
                assert code == EX_NOPERM, err
                assert err == (
                    f"edgecap tail: permission denied: {path} (join the group edgecap: "
                    "sudo usermod -aG edgecap $USER, then log in again)\n"
                )
