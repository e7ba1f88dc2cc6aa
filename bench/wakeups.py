"""What one wake-up of a thread costs on this machine (not a test): prints a table.

    .venv/bin/python bench/wakeups.py [--wakes N]

The daemon does little work per 100 ms block (the gate, a send, a parse: tens of µs of
Python), so its CPU per hour is mostly what its threads pay to sleep and wake again. That
price depends on the machine far more than on the code: on bare metal a wake-up costs a few
µs; on a virtual machine each one may exit to the hypervisor (the timer, the interprocessor
interrupt that wakes a thread on another core), which costs tens to hundreds of µs. This
prints, for the shapes the daemon's threads use, the CPU time per wake-up of the thread that
sleeps and of the thread that wakes it (each from its own ``RUSAGE_THREAD``), and what ten of
them a second (one per 100 ms block) add up to per hour:

- timer: a thread sleeping 100 ms in ``select()`` on nothing (a deadline);
- eventfd: a thread in ``select()`` on an eventfd another thread writes every 100 ms (the
  link woken by the capture thread's put; the waker's cost is the write);
- pipe across processes: the same with a pipe written by another process (a microphone's
  driver, or the bench's ALSA FIFO, waking the capture thread);
- event: ``threading.Event.wait`` set by another thread (what the link used before).
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import statistics
import sys
import threading
import time
from collections.abc import Callable


def thread_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime + r.ru_stime


def timer(n: int, period: float) -> tuple[float, float]:
    c0 = thread_cpu()
    for _ in range(n):
        select.select([], [], [], period)
    return (thread_cpu() - c0) / n, 0.0


def woken_by_a_thread(
    n: int, period: float, wait: Callable[[], object], wake: Callable[[], object]
) -> tuple[float, float]:
    """A thread sleeping in ``wait()``, woken by this one calling ``wake()`` every
    ``period``: each side's CPU per wake-up."""
    sleeper: list[float] = []

    def sleep() -> None:
        c0 = thread_cpu()
        for _ in range(n):
            wait()
        sleeper.append(thread_cpu() - c0)

    t = threading.Thread(target=sleep)
    t.start()
    waker = 0.0
    for _ in range(n):
        time.sleep(period)
        c0 = thread_cpu()
        wake()
        waker += thread_cpu() - c0
    t.join()
    return sleeper[0] / n, waker / n


def eventfd(n: int, period: float) -> tuple[float, float]:
    fd = os.eventfd(0, os.EFD_NONBLOCK)

    def wait() -> None:
        select.select([fd], [], [], 5.0)
        os.eventfd_read(fd)

    try:
        return woken_by_a_thread(n, period, wait, lambda: os.eventfd_write(fd, 1))
    finally:
        os.close(fd)


def pipe_across_processes(n: int, period: float) -> tuple[float, float]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: another process, like a driver or the bench's FIFO feeder
        os.close(r)
        for _ in range(n):
            time.sleep(period)
            os.write(w, b"x")
        os._exit(0)
    os.close(w)
    c0 = thread_cpu()
    for _ in range(n):
        select.select([r], [], [], 5.0)
        os.read(r, 1)
    cost = (thread_cpu() - c0) / n
    os.waitpid(pid, 0)
    os.close(r)
    return cost, float("nan")


def event(n: int, period: float) -> tuple[float, float]:
    ev = threading.Event()

    def wait() -> None:
        ev.wait(5.0)
        ev.clear()

    return woken_by_a_thread(n, period, wait, ev.set)


SHAPES = {
    "timer (select timeout)": timer,
    "eventfd from a thread": eventfd,
    "pipe from a process": pipe_across_processes,
    "threading.Event": event,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wakes", type=int, default=100, help="per shape and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    period = 0.1
    print(f"{os.cpu_count()} CPUs; {args.wakes} wake-ups 100 ms apart per shape, medians of")
    print(f"{args.rounds} rounds; CPU µs per wake-up, and CPU-s per hour at 10 a second")
    print(f"{'shape':26s} {'sleeper µs':>10s} {'waker µs':>9s} {'CPU-s/h':>8s}")
    for name, shape in SHAPES.items():
        runs = [shape(args.wakes, period) for _ in range(args.rounds)]
        sleeper = statistics.median(r[0] for r in runs)
        waker = statistics.median(r[1] for r in runs)
        both = sleeper + (0.0 if waker != waker else waker)  # NaN: the waker is not ours
        print(f"{name:26s} {sleeper * 1e6:10.0f} {waker * 1e6:9.0f} {both * 10 * 3600:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
