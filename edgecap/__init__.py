"""edgecap: live captions on a small box, from microphone to screen, serial display and socket."""

__version__ = "0.1.0"
