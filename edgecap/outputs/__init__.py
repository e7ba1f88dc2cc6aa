"""Where captions go. Every output runs on its own thread (``worker.OutputWorker``) behind
its own bounded, coalescing queue (``event_queue``), fed by ``fanout.FanOut`` without ever
waiting: ``hdmi`` (the framebuffer), ``console`` (a text VT), ``serial`` (``serial/``: plain
lines, character LCDs, caption encoders), ``socket`` (JSON lines on a Unix socket),
``transcript`` (files) and ``stdout``. ``base`` is the contract they all implement;
``rollup`` the layout the screens share."""
