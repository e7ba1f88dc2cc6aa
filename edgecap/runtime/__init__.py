"""The bottom floor every stage stands on: owned worker threads, the status board, the
bounded speech queue, the speech events the gate emits and every consumer reads, audio
frames, reconnect backoff and logging. Nothing here imports from any other edgecap package
except ``config``."""
