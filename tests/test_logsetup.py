import logging

from edgecap.logsetup import RepeatLimiter


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
