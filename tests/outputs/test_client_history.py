"""CaptionHistory: what a client connecting mid-talk is greeted with (socket and web)."""

from __future__ import annotations

from edgecap.captions.events import CaptionLine
from edgecap.outputs.client_history import PROVISIONAL_KEEP, CaptionHistory


def line(seq: int, text: str, final: bool = True) -> CaptionLine:
    return CaptionLine(seq, text, None, "en", None, None, final, final)


def test_finals_in_order_then_open_provisional_lines_within_their_bounds() -> None:
    h = CaptionHistory(history=3)
    for seq in range(1, 6):
        h.remember(line(seq, f"final {seq}"), f"F{seq}".encode())
    h.remember(line(3, "final 3, its translation grown"), b"F3'")  # keeps its place
    for seq in range(6, 6 + PROVISIONAL_KEEP + 2):
        h.remember(line(seq, "open", final=False), f"P{seq}".encode())
    h.remember(line(7, "open, newer", final=False), b"P7'")  # moves to the end, 8 drops
    expected_open = [f"P{s}".encode() for s in range(9, 6 + PROVISIONAL_KEEP + 2)] + [b"P7'"]
    assert list(h.messages()) == [b"F3'", b"F4", b"F5", *expected_open]


def test_a_final_replaces_its_provisional_and_a_withdrawn_line_leaves() -> None:
    h = CaptionHistory(history=10)
    h.remember(line(1, "hello"), b"F1")
    h.remember(line(2, "wor", final=False), b"P2")
    h.remember(line(2, "world"), b"F2")
    assert list(h.messages()) == [b"F1", b"F2"]
    h.remember(line(1, ""), b"W1")  # withdrawn: a newcomer never sees it
    assert list(h.messages()) == [b"F2"]
