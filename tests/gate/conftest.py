"""Fixtures for the speech gate tests: the shared corpus, read in place (never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.corpus import corpus_available

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not corpus_available(CORPUS):
        pytest.skip(f"speech corpus not found at {CORPUS} (see TESTBED.md, 'Speech audio')")
    return CORPUS
