"""Audio capture: sources that yield fixed frames of 16 kHz mono s16le."""
