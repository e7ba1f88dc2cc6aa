"""Captions: what the speech services say, as tokens, lines and events for the outputs."""
