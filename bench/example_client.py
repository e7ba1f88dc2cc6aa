"""The services' example pattern, as a peer of the daemon in bench/compare.py (not a test).

    python bench/example_client.py --service soniox|sarvam --url WSS_URL --key KEY
        --pcm FILE [--ca FILE] [--chunk-ms 120]

What the vendors' raw WebSocket examples do (Soniox's ``soniox_realtime.py``; for Sarvam
the same shape on its streaming endpoint, PROTOCOLS.md §2): websocket-client, the whole
file streamed *ungated* (silence and all) in 120 ms chunks at real time from the main
thread, the results read by a second thread, the end of audio declared, the last results
awaited. Soniox: binary frames of raw s16le, an empty text frame at the end, until
``finished``. Sarvam (saaras:v3, ``/speech-to-text/ws``): base64 in a JSON audio message
per chunk, a flush at the end, until the flush's transcript.

Prints one JSON line on stdout at the end (what it sent and received), so the bench can
check the run did its work; nothing else goes to stdout.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import websocket

SAMPLE_RATE = 16000
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
SARVAM_QUERY = {
    "language-code": "hi-IN",
    "model": "saaras:v3",
    "mode": "transcribe",
    "sample_rate": "16000",
    "high_vad_sensitivity": "false",
    "vad_signals": "true",
    "flush_signal": "true",
    "input_audio_codec": "pcm_s16le",
}
FINISH_TIMEOUT_S = 30.0


class Reader:
    """Reads the results on its own thread until the server closes or ``done`` says so."""

    def __init__(self, ws: websocket.WebSocket, service: str) -> None:
        self.ws = ws
        self.service = service
        self.messages = 0
        self.finals = 0  # final tokens (Soniox) or transcripts (Sarvam)
        self.error: str | None = None
        self.finished = threading.Event()
        self.flushed = threading.Event()  # Sarvam: the flush went out; its answer is the last
        self.thread = threading.Thread(target=self._run, name="example-reader")

    def _run(self) -> None:
        try:
            while True:
                raw = self.ws.recv()
                if not raw:  # the server closed
                    break
                message: dict[str, Any] = json.loads(raw)
                self.messages += 1
                if self._take(message):
                    break
        except (websocket.WebSocketException, OSError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished.set()

    def _take(self, m: dict[str, Any]) -> bool:
        """Count one message; True once it is the last one expected."""
        if self.service == "soniox":
            if m.get("error_code") is not None:
                self.error = f"error {m['error_code']}: {m.get('error_message')}"
                return True
            self.finals += sum(1 for t in m.get("tokens", []) if t.get("is_final"))
            return bool(m.get("finished"))
        if m.get("type") == "error":
            self.error = f"error: {m.get('data')}"
            return True
        if m.get("type") == "data":
            self.finals += 1
            return self.flushed.is_set()
        return False


def stream(ws: websocket.WebSocket, service: str, pcm: Path, chunk_ms: int) -> int:
    """Send the whole file at real time (a chunk every ``chunk_ms``); returns bytes of PCM."""
    size = chunk_ms * BYTES_PER_MS
    sent = 0
    start = time.monotonic()
    with pcm.open("rb") as f:
        while chunk := f.read(size):
            if service == "soniox":
                ws.send_binary(chunk)
            else:
                data = base64.b64encode(chunk).decode("ascii")
                audio = {"data": data, "sample_rate": SAMPLE_RATE, "encoding": "audio/wav"}
                ws.send(json.dumps({"audio": audio}))
            sent += len(chunk)
            delay = start + sent / BYTES_PER_MS / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", choices=("soniox", "sarvam"), required=True)
    parser.add_argument("--url", required=True, help="wss://host:port (Sarvam) or the full URL")
    parser.add_argument("--key", required=True)
    parser.add_argument("--pcm", type=Path, required=True, help="16 kHz mono s16le, raw")
    parser.add_argument("--ca", help="CA file to trust (the emulator's)")
    parser.add_argument("--chunk-ms", type=int, default=120)
    args = parser.parse_args()

    sslopt = {"ca_certs": args.ca} if args.ca else {}
    if args.service == "soniox":
        ws = websocket.create_connection(
            args.url, header=[f"Authorization: Bearer {args.key}"], sslopt=sslopt
        )
        config = {
            "model": "stt-rt-v5",
            "audio_format": "pcm_s16le",
            "num_channels": 1,
            "sample_rate": SAMPLE_RATE,
            "enable_language_identification": True,
            "enable_endpoint_detection": True,
        }
        ws.send(json.dumps(config))
    else:
        url = f"{args.url.rstrip('/')}/speech-to-text/ws?{urlencode(SARVAM_QUERY)}"
        ws = websocket.create_connection(
            url, header=[f"api-subscription-key: {args.key}"], sslopt=sslopt
        )
    reader = Reader(ws, args.service)
    reader.thread.start()
    sent = stream(ws, args.service, args.pcm, args.chunk_ms)
    if args.service == "soniox":
        ws.send("")  # end of audio: an empty text frame
    else:
        reader.flushed.set()
        ws.send(json.dumps({"type": "flush"}))
    reader.finished.wait(FINISH_TIMEOUT_S)
    ws.close()
    reader.thread.join(5)
    summary = {
        "sent_pcm_bytes": sent,
        "messages": reader.messages,
        "finals": reader.finals,
        "error": reader.error,
        "finished": reader.finished.is_set() and reader.error is None,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if summary["finished"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
