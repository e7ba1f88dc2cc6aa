"""Offline recognizers behind one small interface: pocketsphinx (its en-US model ships in
the wheel: the embedded default) and Vosk (when the owner installed a model)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Protocol

from edgecap.runtime.frames import SAMPLE_RATE

Word = tuple[str, int, int]  # text, start ms, end ms (within the utterance)
_VARIANT = re.compile(r"\(\d+\)$")  # pocketsphinx pronunciation variants: "the(2)"
# The longest piece of audio one process_raw() call decodes: pocketsphinx holds the GIL for
# the whole call, so this bounds how long the capture thread can be kept waiting (40 ms of
# audio takes ~10 ms here, ~80 on a Pi Zero 2 W, inside the device's 200 ms buffer).
FEED_SLICE_BYTES = 40 * SAMPLE_RATE // 1000 * 2


class EngineError(Exception):
    """The configured engine or model cannot be used (a config problem: exit 78)."""


class Recognizer(Protocol):
    name: str

    def start(self) -> None: ...

    def feed(self, pcm: bytes) -> None: ...

    def partial(self) -> str: ...

    def finish(self) -> list[Word]: ...

    def close(self) -> None: ...


class PocketsphinxRecognizer:
    """pocketsphinx, streaming, with cepstral mean normalization done the way it works live.

    pocketsphinx normalizes its features by their mean over the utterance (CMN). Decoding a
    whole file it knows that mean; decoding live it starts from a built-in guess and adapts
    slowly (a prior worth 5 s of speech) — on the corpus that doubled the word error rate
    (JFK 0.45 → 1.09). So each utterance starts with a short *look-ahead*: its first
    ``lookahead`` seconds are held, then given to pocketsphinx as a batch without search
    (feature extraction only, a few ms), which computes their own mean; that mean, blended
    with the running mean of the utterances before (the look-ahead is trusted in proportion
    to its length, fully from ``trust`` seconds), becomes the mean the rest of the utterance
    is decoded with, and the search runs over all of it from the first frame. No audio is
    decoded twice. The cost: the first provisional words come ``lookahead`` later. The gain
    (bench/offline.py): captions as accurate as decoding the whole file at once, or more.
    """

    name = "pocketsphinx"

    def __init__(
        self, model_path: Path | None = None, *, lookahead: float = 1.0, trust: float = 4.0
    ) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise EngineError(
                "pocketsphinx is not installed (pip install 'edgecap[offline]')"
            ) from None
        # fwdflat off: its second pass runs in end_utt() over the whole utterance, holding
        # the GIL (pocketsphinx never releases it) for seconds on a long one, longer than
        # the capture device's buffer; without it the daemon's captions are as accurate on
        # the corpus (bench/offline.py: WER 0.555 vs 0.570) and the final comes at once
        # (p50 38 vs 176 ms after speech end)
        options: dict = {"samprate": SAMPLE_RATE, "loglevel": "FATAL", "fwdflat": False}
        if model_path is not None:
            if not model_path.is_dir():
                raise EngineError(f"no pocketsphinx model at {model_path}")
            options["hmm"] = str(model_path)
        try:
            self._decoder = Decoder(**options)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"pocketsphinx could not load its model: {exc}") from None
        self._frame_ms = 10  # pocketsphinx's frame rate is 100 per second
        self._lookahead_bytes = round(lookahead * SAMPLE_RATE) * 2
        self._trust = trust
        self._running: list[float] | None = None  # mean of the utterances so far
        self._utterance = bytearray()  # the look-ahead being held
        self._decoding = False

    def start(self) -> None:
        self._utterance.clear()
        self._decoding = False

    def feed(self, pcm: bytes) -> None:
        if self._decoding:
            # in slices, so that the GIL is free between them for the capture thread
            process, step = self._decoder.process_raw, FEED_SLICE_BYTES
            for i in range(0, len(pcm), step):
                process(pcm[i : i + step], False, False)
            return
        self._utterance += pcm
        if len(self._utterance) >= self._lookahead_bytes:
            self._begin()

    def partial(self) -> str:
        if not self._decoding:
            return ""
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> list[Word]:
        if not self._decoding:
            if not self._utterance:
                return []
            self._begin()  # shorter than the look-ahead: all of it is the look-ahead
        self._decoder.end_utt()
        self._decoding = False
        self._utterance.clear()
        words = []
        for seg in self._decoder.seg() or ():  # None when nothing was heard
            word = _VARIANT.sub("", seg.word)
            if word.startswith(("<", "[")) or not word:
                continue  # <s>, </s>, <sil>, [NOISE]
            start, end = seg.start_frame * self._frame_ms, (seg.end_frame + 1) * self._frame_ms
            words.append((word, start, end))
        # the live mean at the end of the utterance: its look-ahead's, adapted over the rest
        self._running = _vector(self._decoder.get_cmn(False)) or self._running
        return words

    def close(self) -> None:
        """Nothing to release: the decoder goes with the object."""

    def _begin(self) -> None:
        """Open the utterance: the look-ahead's mean, then decoding from its first frame."""
        held = bytes(self._utterance)
        d = self._decoder
        d.start_utt()
        d.process_raw(held, True, True)  # features only, normalized by their own mean
        mean = _vector(d.get_cmn(False))
        if mean is not None and self._running is not None:
            w = min(1.0, len(held) / 2 / SAMPLE_RATE / self._trust)
            mean = [w * a + (1 - w) * b for a, b in zip(mean, self._running, strict=True)]
        if mean is not None:
            d.set_cmn(",".join(f"{v:.4f}" for v in mean))
        self._utterance.clear()
        self._decoding = True


def _vector(text: str) -> list[float] | None:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        return None
    return values if values and all(math.isfinite(v) for v in values) else None


class VoskRecognizer:
    name = "vosk"

    def __init__(self, model_path: Path | None) -> None:
        if model_path is None:
            raise EngineError("engine = vosk needs model_path = the directory of a Vosk model")
        try:
            import vosk  # type: ignore[import-not-found]
        except ImportError:
            raise EngineError("engine = vosk, but vosk is not installed") from None
        if not (model_path / "conf").is_dir() and not (model_path / "am").is_dir():
            raise EngineError(f"no Vosk model at {model_path}")
        vosk.SetLogLevel(-1)
        self._model = vosk.Model(str(model_path))
        self._vosk = vosk
        self._rec = None

    def start(self) -> None:
        self._rec = self._vosk.KaldiRecognizer(self._model, SAMPLE_RATE)
        self._rec.SetWords(True)

    def feed(self, pcm: bytes) -> None:
        self._rec.AcceptWaveform(pcm)

    def partial(self) -> str:
        return json.loads(self._rec.PartialResult()).get("partial", "")

    def finish(self) -> list[Word]:
        result = json.loads(self._rec.FinalResult())
        return [
            (w["word"], round(w["start"] * 1000), round(w["end"] * 1000))
            for w in result.get("result", [])
        ]

    def close(self) -> None:
        """Nothing to release: the model goes with the object."""


def make_recognizer(engine: str, model_path: Path | None) -> Recognizer:
    if engine == "vosk":
        return VoskRecognizer(model_path)
    return PocketsphinxRecognizer(model_path)
