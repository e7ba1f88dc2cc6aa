"""Soniox's official SDK (soniox 2.10.0) as a peer of the daemon in bench/compare.py.

    bench/.venv-sdk/bin/python bench/sdk_soniox.py --url WSS_URL --key KEY --pcm FILE

Runs in the bench's SDK venv (never edgecap's), in the shape of the SDK's real-time
example: ``SonioxClient(websocket_base_url=...)`` (how the SDK is pointed at another
endpoint), ``realtime.stt.connect``, a thread sending the whole raw file with the SDK's
own ``throttle_audio`` (3840 B every 120 ms: real time, ungated) and the end of audio,
the main thread iterating ``receive_events`` until the server closes. The emulator's CA
is trusted through ``SSL_CERT_FILE`` (the SDK's websockets uses Python's default
context). Prints one JSON line on stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from soniox import SonioxClient
from soniox.types.realtime import RealtimeSTTConfig
from soniox.utils import throttle_audio

CHUNK_BYTES = 3840  # 120 ms of 16 kHz s16le mono
CHUNK_S = 0.12


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--pcm", type=Path, required=True)
    args = parser.parse_args()

    client = SonioxClient(api_key=args.key, websocket_base_url=args.url)
    config = RealtimeSTTConfig(
        model="stt-rt-v5",
        audio_format="pcm_s16le",
        num_channels=1,
        sample_rate=16000,
        enable_language_identification=True,
        enable_endpoint_detection=True,
    )
    messages = finals = 0
    error = None
    failed: list[str] = []
    with client.realtime.stt.connect(config=config) as session:

        def send() -> None:
            try:
                audio = throttle_audio(
                    str(args.pcm), chunk_size_bytes=CHUNK_BYTES, delay_seconds=CHUNK_S
                )
                session.send_bytes(audio)  # then the end of audio
            except Exception as exc:  # reported in the summary
                failed.append(f"{type(exc).__name__}: {exc}")

        sender = threading.Thread(target=send, name="sdk-sender")
        sender.start()
        for event in session.receive_events():
            messages += 1
            if event.error_code is not None:
                error = f"error {event.error_code}: {event.error_message}"
            finals += sum(1 for t in event.tokens or [] if t.is_final)
        sender.join()
    summary = {
        "messages": messages,
        "finals": finals,
        "error": error or (failed[0] if failed else None),
        "finished": error is None and not failed,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if summary["finished"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
