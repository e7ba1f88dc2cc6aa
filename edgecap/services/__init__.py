"""The speech services: the codec contract (``codec.py``), one module per cloud service, the
offline engine (``local/``) and the registry that names them (``registry.py``). Read
``docs/services.md`` before adding one."""
