"""Helpers for the source tests: read blocks, check their shape, get at their samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgecap.runtime.frames import Frame


def pcm(blocks: Sequence[Frame]) -> np.ndarray:
    """The samples of consecutive blocks, joined."""
    return np.frombuffer(b"".join(b.pcm for b in blocks), "<i2")


def frame_count(blocks: Sequence[Frame], frame_samples: int = 320) -> int:
    return sum(b.samples for b in blocks) // frame_samples


def assert_blocks(
    blocks: Sequence[Frame], frame_samples: int, block_frames: int, *, full: bool = True
) -> None:
    """Whole frames, at most ``block_frames`` of them (all of them if ``full``, the last
    block apart), each block starting where the one before ended."""
    for i, b in enumerate(blocks):
        assert b.samples % frame_samples == 0, f"block {i}: {b.samples} samples"
        assert 0 < b.samples <= frame_samples * block_frames, f"block {i}: {b.samples}"
        if full and i < len(blocks) - 1:
            assert b.samples == frame_samples * block_frames, f"block {i}: {b.samples}"
        if i:
            assert b.start == blocks[i - 1].end, f"block {i} starts at {b.start}"
