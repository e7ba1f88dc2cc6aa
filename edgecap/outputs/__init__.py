"""Where captions go: stdout now; the screen, serial displays, the socket and files later."""
