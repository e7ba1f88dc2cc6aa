import logging

from edgecap.runtime.logsetup import RepeatLimiter


def record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord("edgecap.x", logging.WARNING, __file__, 1, msg, args, None)


def test_repeats_are_dropped_then_counted():
    now = [0.0]
    limiter = RepeatLimiter(60, clock=lambda: now[0])
    assert limiter.filter(record("audio %s: %s", "device missing", "a"))
    for i in range(500):
        now[0] = i * 0.1
        assert not limiter.filter(record("audio %s: %s", "device missing", i))
    assert limiter.filter(record("another message"))  # other messages pass
    now[0] = 61
    again = record("audio %s: %s", "device missing", "b")
    assert limiter.filter(again)
    assert "(and 500 similar messages in the last 61 s)" in again.getMessage()


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
