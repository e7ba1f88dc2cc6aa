"""Load: 200 caption pages following one web output on loopback, and one that stopped
reading.

The viewers are a separate process (their parsing must not share this process's CPU or
GIL with the server); the server is the real WebOutput under its OutputWorker. Captions are
published at live speed — a provisional update every 50 ms, a final line with two
translations every second — for ``EDGECAP_WEB_LOAD_SECONDS`` (15 s by default; 60 for the
figures in docs/performance.md). Measured: the CPU time of the output's thread per caption
update (from /proc, that thread alone), the delay from publishing to each viewer reading
it, the bytes held for viewers, and the process's memory. Checked: every reading viewer gets
every update in order and in time, the stuck one is cut, memory stays bounded.
``EDGECAP_WEB_LOAD_REPORT=FILE`` writes the figures as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from edgecap.captions.events import CaptionLine
from edgecap.config.schema import WebConfig
from edgecap.outputs.web.output import WebOutput
from edgecap.outputs.worker import OutputWorker
from edgecap.runtime.status import StatusBoard

pytestmark = pytest.mark.slow

VIEWERS = 200
SECONDS = float(os.environ.get("EDGECAP_WEB_LOAD_SECONDS", "15"))
STEP = 0.05  # a provisional update every 50 ms …
FINAL_EVERY = 20  # … and every 20th update a final line (one a second)
CLIENT_BUFFER = 64 * 1024

# The viewers: N stream clients read with one poll(); one more never reads. Prints one
# JSON line: per reader, the updates received (in order?) and their delays.
CLIENTS = r"""
import json, select, socket, sys, time
port, n, last, limit = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
REQUEST = b"GET /events HTTP/1.1\r\nHost: load\r\n\r\n"
stuck = socket.socket()
stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
stuck.connect(("127.0.0.1", port))
stuck.sendall(REQUEST)
readers = {}
poller = select.poll()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(REQUEST)
    s.setblocking(False)
    readers[s.fileno()] = dict(sock=s, buf=b"", seqs=[], delays=[], eof=False, head=False)
    poller.register(s.fileno(), select.POLLIN)
print("ready", flush=True)
deadline = time.monotonic() + limit
def done():
    ends = [r["eof"] or (r["seqs"] and r["seqs"][-1] % 1000000 == last) for r in readers.values()]
    return all(ends)
while not done() and time.monotonic() < deadline:
    for fd, _ in poller.poll(200):
        r = readers[fd]
        try:
            chunk = r["sock"].recv(262144)
        except BlockingIOError:
            continue
        if not chunk:
            r["eof"] = True
            poller.unregister(fd)
            continue
        now = time.monotonic()
        r["buf"] += chunk
        if not r["head"]:
            if b"\r\n\r\n" not in r["buf"]:
                continue
            r["buf"] = r["buf"].split(b"\r\n\r\n", 1)[1]
            r["head"] = True
        *frames, r["buf"] = r["buf"].split(b"\n\n")
        for f in frames:
            if f.startswith(b"event: caption\n"):
                msg = json.loads(f[f.index(b"data: ") + 6:])
                r["seqs"].append(msg["seq"] * 1000000 + int(msg["text"].split()[1]))
                r["delays"].append(now - float(msg["text"].split()[2]))
stuck.settimeout(3.0)
got, cut = 0, False
try:
    while True:
        chunk = stuck.recv(65536)
        if not chunk:
            cut = True
            break
        got += len(chunk)
except (ConnectionResetError, TimeoutError):
    cut = not isinstance(sys.exc_info()[1], TimeoutError)
print(json.dumps({
    "readers": [dict(seqs=r["seqs"], delays=r["delays"], eof=r["eof"]) for r in readers.values()],
    "stuck_cut": cut, "stuck_bytes": got,
}), flush=True)
"""


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def line(seq: int, n: int, now: float, final: bool) -> CaptionLine:
    """A long caption line as the page gets it (about 1.4 kB of JSON: text and two
    translations of 350 characters each, at every update: a heavy case); the text
    carries the update's number and the moment it was published."""
    words = "and so the council agreed to look again at the timetable " * 6
    return CaptionLine(
        seq=seq,
        text=f"{seq} {n} {now:.6f} {words}",
        speaker=None,
        language="en",
        start=seq * 1.0,
        end=seq * 1.0 + 0.9,
        final=final,
        translation_final=final,
        translations={"es": words.upper(), "de": words.title()},
    )


def test_two_hundred_viewers_for_a_while(tmp_path):
    board = StatusBoard()
    cfg = replace(WebConfig(enabled=True, listen="127.0.0.1:0"), max_clients=VIEWERS + 10)
    out = WebOutput(cfg, board, client_buffer=CLIENT_BUFFER)
    worker = OutputWorker(out, board)
    worker.start(lambda w: None)
    updates = int(SECONDS / STEP)
    clients = None
    try:
        deadline = time.monotonic() + 5.0
        while out.address is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        rss_before = rss_bytes()
        clients = subprocess.Popen(
            [
                sys.executable,
                "-c",
                CLIENTS,
                str(out.address[1]),
                str(VIEWERS),
                str(updates - 1),
                str(SECONDS + 20),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert clients.stdout is not None
        assert clients.stdout.readline().strip() == "ready"
        while out.viewers < VIEWERS + 1:
            assert time.monotonic() < deadline + 10.0, f"only {out.viewers} viewers"
            time.sleep(0.01)
        tid = worker._thread.native_id
        assert tid is not None
        cpu_before = thread_cpu(tid)
        held_max = 0
        rss: list[int] = []  # once a second
        started = time.monotonic()
        seq = 1
        for n in range(updates):
            due = started + n * STEP
            time.sleep(max(0.0, due - time.monotonic()))
            final = _final(n, updates)
            worker.publish(line(seq, n, time.monotonic(), final))
            seq += final
            if n % 20 == 0:
                held_max = max(held_max, sum(len(c.out) for c in list(out._streams.values())))
                rss.append(rss_bytes())
        elapsed = time.monotonic() - started
        cpu = thread_cpu(tid) - cpu_before
        report_raw, _ = clients.communicate(timeout=SECONDS + 30)
    finally:
        if clients is not None and clients.poll() is None:
            clients.kill()
            clients.wait()
        worker.request_stop()
        assert worker.join(5.0)

    report = json.loads(report_raw)
    readers = report["readers"]
    assert len(readers) == VIEWERS
    # Every viewer got the same updates, in order: every final one, and every provisional
    # one the output handled (a provisional update superseded while the output was busy is
    # coalesced in its queue, for all viewers alike: that is the design).
    numbering = _numbering(updates)
    finals = [s * 1000000 + n for n, s in numbering if _final(n, updates)]
    got = readers[0]["seqs"]
    assert len(got) == out.caption_updates
    assert got == sorted(got) and set(finals) <= set(got)
    starved = [i for i, r in enumerate(readers) if r["seqs"] != got]
    assert not starved, f"{len(starved)} viewers missed or reordered updates"
    delays = sorted(d for r in readers for d in r["delays"])
    per_viewer_p99 = [_quantile(sorted(r["delays"]), 0.99) for r in readers]
    figures = {
        "viewers": VIEWERS,
        "seconds": round(elapsed, 1),
        "updates": updates,
        "coalesced": updates - out.caption_updates,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_update": round(cpu / out.caption_updates * 1000, 3),
        "cpu_us_per_update_per_viewer": round(cpu / out.caption_updates / VIEWERS * 1e6, 2),
        "cpu_share_of_one_core": round(cpu / elapsed, 4),
        "delay_ms_p50": round(_quantile(delays, 0.5) * 1000, 2),
        "delay_ms_p99": round(_quantile(delays, 0.99) * 1000, 2),
        "delay_ms_max": round(delays[-1] * 1000, 2),
        "viewer_p99_ms_spread": [
            round(min(per_viewer_p99) * 1000, 2),
            round(max(per_viewer_p99) * 1000, 2),
        ],
        "held_for_viewers_max_bytes": held_max,
        "rss_mb_serving_200": round((rss[0] - rss_before) / 2**20, 1),
        "rss_mb_growth_second_half": round((max(rss) - rss[len(rss) // 2]) / 2**20, 1),
        "stuck_viewer_cut": report["stuck_cut"],
        "stuck_viewer_read_bytes": report["stuck_bytes"],
        "viewers_cut": out.viewers_cut,
    }
    sys.stdout.write(f"\nweb load: {json.dumps(figures)}\n")
    path = os.environ.get("EDGECAP_WEB_LOAD_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2)
    # the stuck viewer was cut; the others never waited for it
    assert out.viewers_cut == 1 and report["stuck_cut"]
    assert max(per_viewer_p99) < 0.5, figures
    assert statistics.median(delays) < 0.05, figures
    # memory stays bounded: what is held for viewers is at most their allowance
    assert held_max <= (VIEWERS + 1) * (CLIENT_BUFFER + 4096), figures
    assert rss[0] - rss_before < 64 * 2**20, figures  # 200 viewers connected
    assert max(rss) - rss[len(rss) // 2] < 8 * 2**20, figures  # and no growth after that
    # and it is cheap: well under a tenth of one core for 200 viewers
    assert cpu / elapsed < 0.1, figures


def _numbering(updates: int) -> list[tuple[int, int]]:
    """(update number, line seq) of every update, as the publisher numbered them."""
    out = []
    seq = 1
    for n in range(updates):
        out.append((n, seq))
        seq += _final(n, updates)
    return out


def _final(n: int, updates: int) -> bool:
    return n % FINAL_EVERY == FINAL_EVERY - 1 or n == updates - 1


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]
