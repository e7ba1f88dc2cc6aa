"""The speech gate: keeps only speech (webrtcvad), with pre-roll and hang-over."""
