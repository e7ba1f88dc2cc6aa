"""The link to a cloud speech service: one WebSocket session layer, one codec per service."""
