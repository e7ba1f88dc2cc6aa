"""Benchmark of the outputs (not a test): prints a table.

    .venv/bin/python bench/outputs.py [--updates N] [--results bench/results.json]

Each output runs as in the daemon, on its OutputWorker thread behind its queue; the bench
publishes caption updates (provisional text growing word by word, a final every 8 words)
and measures:
- latency: from publish() to the effect being observable — a socket client has read the
  line; the framebuffer file was written (1920×1080 RGB565 and 800×480 32 bpp); the
  serial bytes arrived on a pty — percentiles over paced updates (one every 70 ms, so the
  15 fps cap of the screen shows as it would live);
- CPU: process CPU seconds per 1,000 updates published as fast as possible (coalescing
  included), the bench's own publishing loop subtracted (measured alone first);
- paced CPU: the output worker thread's own CPU seconds per 1,000 of the paced updates
  (each one drawn, as during talk: × 36 gives CPU-s per hour at 10 updates a second);
- the screen's typical update on its own: a provisional line that grew by a word, laid out,
  drawn, packed and written (HdmiOutput.handle, no worker), back to back and 70 ms apart
  (the caches of a thread that slept).
``--results FILE`` merges the figures into the bench's results file, keyed ``outputs``
(latency percentiles per output, in ms: bench/report.py's latency table).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.daemon import merge_results, percentiles
from edgecap.captions.events import CaptionLine
from edgecap.config.schema import SerialConfig, SocketConfig
from edgecap.outputs.hdmi import HdmiOutput
from edgecap.outputs.serial.output import SerialOutput
from edgecap.outputs.socket_server import SocketOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard

WORDS = (
    "unless", "the", "system", "is", "established", "for",
    "the", "frequent", "formal", "review", "of", "activities",
)  # fmt: skip


def updates(n: int):  # type: ignore[no-untyped-def]
    """Caption events as a service produces them: a provisional tail growing, then final."""
    seq, words = 1, []
    for i in range(n):
        words.append(WORDS[i % len(WORDS)] + (str(i) if i % 5 == 0 else ""))
        final = len(words) == 8
        yield CaptionLine(
            seq=seq,
            text=" ".join(words),
            speaker="1",
            language="en",
            start=None,
            end=None,
            final=final,
            translation_final=final,
        )
        if final:
            seq, words = seq + 1, []


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fake_fb(root: Path, width: int, height: int, bpp: int) -> Path:
    node = root / "sys" / "fb0"
    node.mkdir(parents=True)
    (node / "virtual_size").write_text(f"{width},{height}\n")
    (node / "bits_per_pixel").write_text(f"{bpp}\n")
    dev = root / "fb0"
    dev.write_bytes(bytes(width * height * bpp // 8))
    return dev


class Probe:
    """Something that sees the effect of a publish: wait_change() returns when it did."""

    def wait_change(self, timeout: float) -> bool:
        raise NotImplementedError

    def close(self) -> None: ...


class SocketProbe(Probe):
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 5
        while True:
            try:
                self.sock.connect(str(path))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.sock.settimeout(0.5)
        self.drain()

    def drain(self) -> None:
        self.sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while self.sock.recv(1 << 20):
                pass
        self.sock.settimeout(0.5)

    def wait_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                buf += self.sock.recv(65536)
            if b"\n" in buf:
                return True
        return False

    def close(self) -> None:
        self.sock.close()


class RenderProbe(Probe):
    """The framebuffer was written: the output counts a render after its last pwrite."""

    def __init__(self, output: HdmiOutput) -> None:
        self.output = output
        self.seen = output.renders

    def wait_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output.renders != self.seen:
                self.seen = self.output.renders
                return True
            time.sleep(0.0002)
        return False


class PtyProbe(Probe):
    def __init__(self, master: int) -> None:
        self.master = master
        os.set_blocking(master, False)

    def wait_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(BlockingIOError):
                if os.read(self.master, 65536):
                    return True
            time.sleep(0.0005)
        return False


def measure(name: str, output, probe_factory, n_latency: int, n_cpu: int) -> dict:  # type: ignore[no-untyped-def]
    status = StatusBoard()
    worker = OutputWorker(output, status)
    worker.start()
    deadline = time.monotonic() + 5
    while status.snapshot().state_of(f"output:{output.name}") != "ok":
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not open")
        time.sleep(0.01)
    while not worker.idle:  # opened, its first frame drawn, asleep: the probe starts in step
        time.sleep(0.01)
    probe = probe_factory()
    lat = []
    events = list(updates(n_latency))
    thread = next(t for t in threading.enumerate() if t.name == f"edgecap-{worker.name}")
    clock = time.pthread_getcpuclockid(thread.ident)  # type: ignore[arg-type]
    w0 = time.clock_gettime(clock)
    for e in events:
        t0 = time.perf_counter()
        worker.publish(e)
        if probe.wait_change(2.0):
            lat.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.07)
    paced = time.clock_gettime(clock) - w0
    # CPU: as fast as possible
    cpu_events = list(updates(n_cpu))
    c0 = time.process_time()
    for e in cpu_events:
        worker.publish(e)
    while len(worker.queue):
        time.sleep(0.005)
    time.sleep(0.2)
    cpu = time.process_time() - c0
    worker.request_stop()
    worker.join(5)
    probe.close()
    times = getattr(output, "render_ms", None)
    render = f"{pct(list(times), 0.5):.1f} / {pct(list(times), 0.9):.1f}" if times else "-"
    return {
        "name": name,
        "lat": lat,
        "cpu": cpu,
        "n_cpu": n_cpu,
        "handled": worker.handled,
        "render": render,
        "paced": paced / len(events) * 1000,
    }


def word_update_ms(root: Path, width: int, height: int, bpp: int, pause: float) -> list[float]:
    """Milliseconds of each HdmiOutput.handle() that adds a word to the provisional line
    (three final lines above it; the first word and the final of each line not counted)."""
    now = [1000.0]
    dev = fake_fb(root, width, height, bpp)
    out = HdmiOutput(dev, root / "sys", fonts=("DejaVuSans.ttf",), clock=lambda: now[0])
    out.open()
    times = []
    for seq, event in enumerate(updates(8 * 12), 1):
        now[0] += 0.1  # past the frame interval: every update is drawn
        if pause:
            time.sleep(pause)
        t0 = time.perf_counter()
        out.handle(event)
        if seq > 24 and " " in event.text and not event.final:
            times.append((time.perf_counter() - t0) * 1000)
    out.close()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2000, help="for the CPU figure")
    parser.add_argument("--results", type=Path, help="merge the figures in (key: outputs)")
    args = parser.parse_args()
    tmp_dir = tempfile.TemporaryDirectory(prefix="edgecap-bench-")  # removed at exit
    tmp = Path(tmp_dir.name)
    n_lat = 120

    c0 = time.process_time()
    for _ in updates(args.updates):
        pass
    base = time.process_time() - c0

    results = []
    sock_path = tmp / "s.sock"
    results.append(
        measure(
            "socket",
            SocketOutput(SocketConfig(path=sock_path), service="bench", languages=[]),
            lambda: SocketProbe(sock_path),
            n_lat,
            args.updates,
        )
    )
    for w, h, bpp in ((1920, 1080, 16), (800, 480, 32)):
        root = tmp / f"fb{w}"
        dev = fake_fb(root, w, h, bpp)
        out = HdmiOutput(dev, root / "sys", fonts=("DejaVuSans.ttf",))
        results.append(
            measure(
                f"hdmi {w}x{h}x{bpp}", out, lambda out=out: RenderProbe(out), n_lat, args.updates
            )
        )
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    link = tmp / "ttyUSB0"
    link.symlink_to(os.ttyname(slave))
    from dataclasses import replace

    scfg = replace(SerialConfig(), device=link, provisional=True)
    results.append(
        measure("serial (lines)", SerialOutput(scfg), lambda: PtyProbe(master), n_lat, args.updates)
    )

    print("Outputs benchmark (each on its OutputWorker, as in the daemon)")
    head = f"{'output':<20} {'p50 ms':>7} {'p90 ms':>7} {'max ms':>7} {'seen':>6}"
    print(
        head + f" {'CPU s/1000 upd':>15} {'handled':>8} {'render p50/p90 ms':>18}"
        f" {'paced CPU s/1000':>17}"
    )
    for r in results:
        lat = r["lat"] or [float("nan")]
        cpu = (r["cpu"] - base * 0) / r["n_cpu"] * 1000
        print(
            f"{r['name']:<20} {statistics.median(lat):>7.1f} {pct(lat, 0.9):>7.1f} "
            f"{max(lat):>7.1f} {len(r['lat']):>6} {cpu:>15.3f} {r['handled']:>8} "
            f"{r['render']:>18} {r['paced']:>17.3f}"
        )
    print(
        f"(publishing loop alone: {base / args.updates * 1000:.4f} CPU s per 1000; "
        "'handled' < published = provisional updates coalesced)"
    )
    os.close(master)
    os.close(slave)
    if args.results:
        merge_results(
            args.results,
            "outputs",
            {
                "updates": args.updates,
                "latency": {r["name"]: percentiles(r["lat"]) for r in results},
                "cpu_s_per_1000": {r["name"]: r["cpu"] / r["n_cpu"] * 1000 for r in results},
                "paced_cpu_s_per_1000": {r["name"]: r["paced"] for r in results},
            },
        )

    print("\nHDMI, one provisional update that adds a word (layout, draw, pack, write):")
    for w, h, bpp in ((1920, 1080, 16), (800, 480, 32)):
        hot = word_update_ms(tmp / f"hot{w}", w, h, bpp, 0.0)
        slept = word_update_ms(tmp / f"slept{w}", w, h, bpp, 0.07)
        print(
            f"  {w}x{h}x{bpp}: back to back p50 {pct(hot, 0.5):.2f} / p90 {pct(hot, 0.9):.2f} ms;"
            f" 70 ms apart p50 {pct(slept, 0.5):.2f} / p90 {pct(slept, 0.9):.2f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
