"""Ingestion: turn webhook and tracking-API bodies into `IncomingEvent`s, then store them."""
