"""GET /healthz and GET /metrics on the live app (uvicorn on loopback)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["scheduler"] == "off"
    assert body["slack"] == "not configured"
    assert body["database_backend"] in ("sqlite", "postgresql")


def test_metrics_count_ingested_events(client, settings):
    before = client.get("/metrics")
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    accepted_before = sample(before.text, "stallwatch_events_total", source="segment", outcome="accepted")

    message = {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "health-1",
               "context": {"groupId": "acme"}, "properties": {"plan": "pro"},
               "timestamp": "2026-01-01T00:00:00Z"}
    response = client.post("/v1/track", json=message, auth=(settings.write_key, ""))
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1

    after = client.get("/metrics")
    assert after.status_code == 200
    assert "# TYPE stallwatch_events_total counter" in after.text
    assert sample(after.text, "stallwatch_events_total", source="segment", outcome="accepted") == accepted_before + 1
    assert sample(after.text, "stallwatch_ingest_requests_total", route="segment", status="200") >= 1
    # Every family parses as Prometheus text.
    names = {family.name for family in text_string_to_metric_families(after.text)}
    assert {"stallwatch_events", "stallwatch_scan_seconds"} <= names
