"""The LAN caption page: captions on every phone in the room, and ``/metrics`` for a fleet.

``output.WebOutput`` is the ``web`` output (one thread, the OutputWorker's, serving every
viewer through one poll()); ``page`` builds the HTML pages and their security headers;
``metrics`` the Prometheus collector; ``address`` the address viewers open (``edgecap
web-url``) and its QR code. Nothing is imported here, so ``edgecap web-url`` and the HDMI
screen's QR code need neither the HTTP parser nor the Prometheus client.
"""
