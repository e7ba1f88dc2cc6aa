"""The offline engine: speech recognition on the box, in the role of a cloud service."""
