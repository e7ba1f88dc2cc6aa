"""Sarvam's official SDK (sarvamai 0.1.39) as a peer of the daemon in bench/compare.py.

    bench/.venv-sdk/bin/python bench/sdk_sarvam.py --url WSS_BASE --key KEY --pcm FILE

Runs in the bench's SDK venv (never edgecap's), in the shape of the SDK's streaming
example: ``SarvamAI(environment=SarvamAIEnvironment(production=...))`` (how the SDK is
pointed at another host: it appends ``/speech-to-text/ws`` and the query),
``speech_to_text_streaming.connect`` (saaras:v3, hi-IN, raw PCM, flush and VAD signals on),
the main thread sending the whole raw file ungated with ``transcribe`` (base64 in JSON) in
120 ms chunks at real time, a thread iterating the socket's messages; at the end a
``flush`` and its transcript awaited. The emulator's CA is trusted through
``SSL_CERT_FILE``. Prints one JSON line on stdout at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from pathlib import Path

from sarvamai import SarvamAI
from sarvamai.environment import SarvamAIEnvironment

BYTES_PER_MS = 32
CHUNK_BYTES = 120 * BYTES_PER_MS
FINISH_TIMEOUT_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="wss://host:port")
    parser.add_argument("--key", required=True)
    parser.add_argument("--pcm", type=Path, required=True)
    args = parser.parse_args()

    base = args.url.rstrip("/")
    env = SarvamAIEnvironment(base=base.replace("wss:", "https:"), creative=base, production=base)
    client = SarvamAI(api_subscription_key=args.key, environment=env)
    counts = {"messages": 0, "finals": 0}
    errors: list[str] = []
    flushed = threading.Event()
    last = threading.Event()

    with client.speech_to_text_streaming.connect(
        language_code="hi-IN",
        model="saaras:v3",
        mode="transcribe",
        sample_rate="16000",
        high_vad_sensitivity="false",
        vad_signals="true",
        flush_signal="true",
        input_audio_codec="pcm_s16le",
    ) as ws:

        def read() -> None:
            try:
                for message in ws:
                    counts["messages"] += 1
                    if message.type == "error":
                        errors.append(f"error: {message.data}")
                        break
                    if message.type == "data":
                        counts["finals"] += 1
                        if flushed.is_set():
                            break
            except Exception as exc:  # reported in the summary
                errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                last.set()

        reader = threading.Thread(target=read, name="sdk-reader")
        reader.start()
        start = time.monotonic()
        sent = 0
        with args.pcm.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                ws.transcribe(
                    audio=base64.b64encode(chunk).decode("ascii"),
                    encoding="audio/wav",
                    sample_rate=16000,
                )
                sent += len(chunk)
                delay = start + sent / BYTES_PER_MS / 1000 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        flushed.set()
        ws.flush()
        last.wait(FINISH_TIMEOUT_S)
    reader.join(5)
    summary = {
        "sent_pcm_bytes": sent,
        **counts,
        "error": errors[0] if errors else None,
        "finished": last.is_set() and not errors,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if summary["finished"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
