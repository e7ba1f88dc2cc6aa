"""Word error rate, and decoding a clip directly with pocketsphinx (the reference the
daemon's captions are compared with)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import CORPUS, read_pcm16


def words(text: str) -> list[str]:
    text = text.lower().replace("’", "'")
    return re.findall(r"[a-z0-9']+", text)


def wer(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / max(1, len(ref))


def transcript(base: str) -> str:
    entries = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    return next(e["transcript"] for e in entries if e["base"] == base)


def direct_decode(path: Path, *, fwdflat: bool = False) -> str:
    """The whole file in one utterance, as pocketsphinx's own example decodes it, with the
    daemon's search (one pass: no ``fwdflat``, see edgecap/services/local/recognizers.py);
    ``fwdflat=True`` adds pocketsphinx's default second pass."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=16000, loglevel="FATAL", fwdflat=fwdflat)
    decoder.start_utt()
    decoder.process_raw(read_pcm16(path), False, True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return hyp.hypstr if hyp else ""
