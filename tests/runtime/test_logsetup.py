import logging

from edgecap.runtime.logsetup import DISTINCT_MAX, RepeatLimiter


def record(msg: str, *args, level: int = logging.WARNING, **fields) -> logging.LogRecord:
    rec = logging.LogRecord("edgecap.x", level, __file__, 1, msg, args, None)
    for k, v in fields.items():
        setattr(rec, f"EDGECAP_{k.upper()}", v)
    return rec


def test_true_repeats_are_dropped_then_counted():
    now = [0.0]
    limiter = RepeatLimiter(60, clock=lambda: now[0])
    assert limiter.filter(record("audio %s: %s", "device missing", "hw:1"))
    for i in range(500):
        now[0] = i * 0.1
        assert not limiter.filter(record("audio %s: %s", "device missing", "hw:1"))
    assert limiter.filter(record("another message"))  # other messages pass
    now[0] = 61
    again = record("audio %s: %s", "device missing", "hw:1")
    assert limiter.filter(again)
    assert "(and 500 similar messages in the last 61 s)" in again.getMessage()


def test_new_values_pass_and_a_flood_of_them_is_capped_and_counted():
    now = [0.0]
    limiter = RepeatLimiter(60, clock=lambda: now[0])
    passed = [limiter.filter(record("bad message: %s", f"junk {i}")) for i in range(100)]
    assert passed == [True] * DISTINCT_MAX + [False] * (100 - DISTINCT_MAX)
    now[0] = 60
    after = record("bad message: %s", "junk 100")
    assert limiter.filter(after)
    assert f"(and {100 - DISTINCT_MAX} similar messages" in after.getMessage()


def test_losses_with_new_values_are_never_dropped():
    """Two different losses within a minute: both reach the journal (they were folded
    together before, and the totals in the log did not add up)."""
    limiter = RepeatLimiter(60, clock=lambda: 5.0)
    msg = "%.1f s of speech lost (%s), captured between %.2f s and %.2f s"
    first = record(msg, 22.8, "service unreachable", 1.0, 23.8)
    second = record(msg, 30.0, "service unreachable", 40.0, 70.0)
    assert limiter.filter(first)
    assert limiter.filter(second)


def test_structured_records_pass_on_a_new_state_and_not_on_the_same_one():
    limiter = RepeatLimiter(60, clock=lambda: 1.0)
    msg = "%s session ended: %s; retrying in %.1f s"
    retry = {"state": "retrying", "service": "soniox", "error": "connect_failed"}
    assert limiter.filter(record(msg, "soniox", "refused", 1.2, **retry))
    # the same state again with another delay: a repeat, however many (no flood of lines)
    assert not any(limiter.filter(record(msg, "soniox", "x", d / 10, **retry)) for d in range(99))
    other = dict(retry, error="no_response")
    assert limiter.filter(record(msg, "soniox", "dead", 2.0, **other))
    # a state change passes even past the flood cap of unstructured records
    for i in range(DISTINCT_MAX + 5):
        state = dict(retry, error=f"kind{i}")
        assert limiter.filter(record(msg, "soniox", "e", 1.0, **state))


def test_errors_are_never_dropped():
    """A key refused again after a reload is the same error again, and must be seen."""
    limiter = RepeatLimiter(60, clock=lambda: 1.0)
    refused = {"state": "rejected", "service": "soniox", "error": "unauthenticated"}
    for _ in range(3):
        assert limiter.filter(
            record("%s refused the session: %s", "soniox", "401", level=logging.ERROR, **refused)
        )


def test_zero_interval_lets_everything_through():
    limiter = RepeatLimiter(0)
    assert all(limiter.filter(record("same")) for _ in range(10))


JOURNAL_SOCKET = "/run/systemd/journal/socket"


def test_journal_records_carry_edgecap_fields():
    """A stand-in journald: a datagram socket at the path libsystemd writes to (only when
    no real journald owns it). It receives the native journal protocol as sent."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    path = Path(JOURNAL_SOCKET)
    if path.exists():
        pytest.skip("a real journald runs here")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        pytest.skip("cannot create /run/systemd/journal (not root)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(JOURNAL_SOCKET)
        sock.settimeout(5)
        code = (
            "import logging\n"
            "from edgecap.runtime.logsetup import setup_logging, fields\n"
            "setup_logging('info', 'journal', 60)\n"
            "logging.getLogger('edgecap.link').error('soniox refused: %s', 'unauthenticated 401',"
            " **fields(state='rejected', service='soniox', error='unauthenticated'))\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, timeout=30, env=dict(os.environ))
        data = sock.recv(65536).decode()
    finally:
        sock.close()
        path.unlink(missing_ok=True)
    lines = data.split("\n")
    assert "MESSAGE=soniox refused: unauthenticated 401" in lines
    assert "EDGECAP_STATE=rejected" in lines
    assert "EDGECAP_SERVICE=soniox" in lines
    assert "EDGECAP_ERROR=unauthenticated" in lines
    assert "SYSLOG_IDENTIFIER=edgecap" in lines
    assert "PRIORITY=3" in lines


def test_log_lines_escape_terminal_sequences_from_local_text():
    """A WAV file named with an escape sequence reached the log raw (issue: it could clear
    or recolour the owner's terminal, or forge a log line with a line break)."""
    import subprocess
    import sys

    code = (
        "import logging\n"
        "from edgecap.runtime.logsetup import setup_logging\n"
        "setup_logging('info', 'stderr', 60)\n"
        "logging.getLogger('edgecap.audio').info('opened %s', 'wav:a\\x1b[2J\\u202eb\\nFAKE.wav')\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError:\n"
        "    logging.getLogger('edgecap.x').exception('failed')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    err = proc.stderr
    assert "\x1b" not in err and "\u202e" not in err
    assert r"opened wav:a\x1b[2J\u202eb\x0aFAKE.wav" in err
    lines = err.splitlines()
    assert not any(line.startswith("FAKE") for line in lines)
    assert "Traceback (most recent call last):" in lines  # a traceback keeps its lines


def test_escape_controls_leaves_every_script_alone():
    from edgecap.runtime.escape import escape_controls

    for text in ("plain", "हिन्दी — क्ष", "العربية", "日本語", "zero\u200dwidth joiner"):
        assert escape_controls(text) == text
    assert escape_controls("a\tb\x7f\x9b") == r"a\x09b\x7f\x9b"
