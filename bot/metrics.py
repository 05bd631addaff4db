"""Prometheus metrics, served at GET /metrics."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("stallwatch_ingest_requests_total", "Ingest requests by route and status", ["route", "status"])
REQUEST_SECONDS = Histogram(
    "stallwatch_ingest_request_seconds", "Ingest request latency", ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS = Counter("stallwatch_events_total", "Ingested messages by source and outcome", ["source", "outcome"])
SCAN_SECONDS = Histogram("stallwatch_scan_seconds", "Duration of stall scans", buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60))
SCAN_ACCOUNT_FAILURES = Counter("stallwatch_scan_account_failures_total",
                                "Accounts a scan skipped because evaluating them failed")
STALL_CHANGES = Counter("stallwatch_stall_changes_total", "Stall changes by action", ["action"])
OPEN_STALLS = Gauge("stallwatch_open_stalls", "Open stalls after the last scan")
OUTBOX_PENDING = Gauge("stallwatch_outbox_pending", "Pending outbox messages", ["outbox"])
