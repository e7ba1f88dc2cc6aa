"""Offline recognizers behind one small interface: pocketsphinx (its en-US model ships in
the wheel: the embedded default) and Vosk (when the owner installed a model)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Protocol

from edgecap.audio.frames import SAMPLE_RATE

Word = tuple[str, int, int]  # text, start ms, end ms (within the utterance)
_VARIANT = re.compile(r"\(\d+\)$")  # pocketsphinx pronunciation variants: "the(2)"


class EngineError(Exception):
    """The configured engine or model cannot be used (a config problem: exit 78)."""


class Recognizer(Protocol):
    name: str

    def start(self) -> None: ...

    def feed(self, pcm: bytes) -> None: ...

    def partial(self) -> str: ...

    def finish(self) -> list[Word]: ...


class PocketsphinxRecognizer:
    name = "pocketsphinx"

    def __init__(self, model_path: Path | None = None) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError:
            raise EngineError(
                "pocketsphinx is not installed (pip install 'edgecap[offline]')"
            ) from None
        options: dict = {"samprate": SAMPLE_RATE, "loglevel": "FATAL"}
        if model_path is not None:
            if not model_path.is_dir():
                raise EngineError(f"no pocketsphinx model at {model_path}")
            options["hmm"] = str(model_path)
        try:
            self._decoder = Decoder(**options)
        except (RuntimeError, ValueError) as exc:
            raise EngineError(f"pocketsphinx could not load its model: {exc}") from None
        self._frame_ms = 10  # pocketsphinx's frame rate is 100 per second

    def start(self) -> None:
        self._decoder.start_utt()

    def feed(self, pcm: bytes) -> None:
        self._decoder.process_raw(pcm, False, False)

    def partial(self) -> str:
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> list[Word]:
        self._decoder.end_utt()
        words = []
        for seg in self._decoder.seg() or ():  # None when nothing was heard
            word = _VARIANT.sub("", seg.word)
            if word.startswith(("<", "[")) or not word:
                continue  # <s>, </s>, <sil>, [NOISE]
            start, end = seg.start_frame * self._frame_ms, (seg.end_frame + 1) * self._frame_ms
            words.append((word, start, end))
        return words


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


def make_recognizer(engine: str, model_path: Path | None) -> Recognizer:
    if engine == "vosk":
        return VoskRecognizer(model_path)
    return PocketsphinxRecognizer(model_path)
