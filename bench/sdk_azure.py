"""Microsoft's official Speech SDK (azure-cognitiveservices-speech 1.53.0) as a peer of the
daemon in bench/compare.py.

    bench/.venv-sdk/bin/python bench/sdk_azure.py --url WSS_HOST --key KEY --pcm FILE
        [--ca FILE]

Runs in the bench's SDK venv (never edgecap's), in the shape of the SDK's push-stream
sample (``speech_recognition_with_push_stream``): ``SpeechConfig(host=wss://…)`` (how the
SDK is pointed at another host), en-US, continuous recognition, a ``PushAudioInputStream``
fed from the main thread with the whole raw file ungated in 120 ms chunks at real time, the
results arriving on the SDK's own threads through its event callbacks; then the stream
closed and the session's end awaited.

Trusting the emulator's CA: the native SDK does its own TLS (OpenSSL inside the library),
so ``SSL_CERT_FILE`` (set by compare.py) is what is tried first; ``--ca`` adds the SDK's
own switch for a private certificate (``OPENSSL_SINGLE_TRUSTED_CERT``, CRL check off).
Prints one JSON line on stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import azure.cognitiveservices.speech as speechsdk

BYTES_PER_MS = 32
CHUNK_BYTES = 120 * BYTES_PER_MS
FINISH_TIMEOUT_S = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="wss://host:port")
    parser.add_argument("--key", required=True)
    parser.add_argument("--pcm", type=Path, required=True)
    parser.add_argument("--ca", help="trust this PEM certificate (the SDK's own property)")
    args = parser.parse_args()

    config = speechsdk.SpeechConfig(host=args.url, subscription=args.key)
    config.speech_recognition_language = "en-US"
    if args.ca:
        config.set_property_by_name("OPENSSL_SINGLE_TRUSTED_CERT", Path(args.ca).read_text())
        config.set_property_by_name("OPENSSL_SINGLE_TRUSTED_CERT_CRL_CHECK", "false")
    stream = speechsdk.audio.PushAudioInputStream(
        speechsdk.audio.AudioStreamFormat(samples_per_second=16000, bits_per_sample=16, channels=1)
    )
    recognizer = speechsdk.SpeechRecognizer(
        speech_config=config, audio_config=speechsdk.audio.AudioConfig(stream=stream)
    )
    counts = {"messages": 0, "finals": 0}
    errors: list[str] = []
    done = threading.Event()

    def recognizing(_evt: speechsdk.SpeechRecognitionEventArgs) -> None:
        counts["messages"] += 1

    def recognized(evt: speechsdk.SpeechRecognitionEventArgs) -> None:
        counts["messages"] += 1
        if evt.result.reason == speechsdk.ResultReason.RecognizedSpeech:
            counts["finals"] += 1

    def canceled(evt: speechsdk.SpeechRecognitionCanceledEventArgs) -> None:
        if evt.reason == speechsdk.CancellationReason.Error:
            errors.append(f"canceled: {evt.error_code}: {evt.error_details}")
        done.set()

    recognizer.recognizing.connect(recognizing)
    recognizer.recognized.connect(recognized)
    recognizer.canceled.connect(canceled)
    recognizer.session_stopped.connect(lambda _evt: done.set())
    recognizer.start_continuous_recognition()
    start = time.monotonic()
    sent = 0
    with args.pcm.open("rb") as f:
        while (chunk := f.read(CHUNK_BYTES)) and not done.is_set():
            stream.write(chunk)
            sent += len(chunk)
            delay = start + sent / BYTES_PER_MS / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    stream.close()  # the end of the audio: the SDK ends the turn
    finished = done.wait(FINISH_TIMEOUT_S)
    recognizer.stop_continuous_recognition()
    summary = {
        "sent_pcm_bytes": sent,
        **counts,
        "error": errors[0] if errors else (None if finished else "no session end"),
        "finished": finished and not errors,
    }
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if summary["finished"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
