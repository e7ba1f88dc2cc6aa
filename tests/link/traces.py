"""The recorded protocol traces of ../shared/protocol-traces, read in place (never copied)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "protocol-traces"


def load_trace(name: str) -> list[dict[str, Any]]:
    """All records of one trace (one JSON object a line); skips the test when it is absent."""
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"protocol trace {name} not found at {TRACES} (the shared traces are absent)")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == kind]


def client_texts(records: list[dict[str, Any]]) -> list[str]:
    """What the SDK sent as TEXT frames, in order."""
    return [r["text"] for r in of_kind(records, "client_frame") if r.get("opcode") == "text"]


def handshake_headers(records: list[dict[str, Any]]) -> dict[str, str]:
    (handshake,) = of_kind(records, "handshake")
    return {name.lower(): value for name, value in handshake["headers"]}
