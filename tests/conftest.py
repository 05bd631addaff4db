"""Shared fixtures: a migrated database (SQLite always, PostgreSQL when
STALLWATCH_TEST_POSTGRES_URL is set), settings, and the real app served on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import uvicorn
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text

from bot.settings import Settings
from storage import migrate
from storage.db import make_engine
from storage.models import metadata

PG_URL = os.environ.get("STALLWATCH_TEST_POSTGRES_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])

# CI (which sets CI=true) draws hypothesis examples from a fixed seed, so a red run is red again
# when re-run and its failing example is printed; local runs keep exploring new examples.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

WRITE_KEY = "test-write-key"
SEGMENT_SECRET = "segment-secret"
STRIPE_SECRET = "whsec_test_secret"
TICKETS_SECRET = "tickets-secret"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """One migrated SQLite file, copied for each test (migrations run once per session)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_schema_url():
    """A private schema on the test server, migrated once; tables are truncated per test."""
    if not PG_URL:
        return None
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path, sqlite_template) -> str:
    if request.param == "sqlite":
        path = tmp_path / "stallwatch.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_schema_url")
    engine = make_engine(url)
    names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(db_url) -> Settings:
    return Settings(
        _env_file=None,
        DATABASE_URL=db_url,
        STALLWATCH_WRITE_KEY=WRITE_KEY,
        SEGMENT_SHARED_SECRET=SEGMENT_SECRET,
        STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
        TICKETS_SHARED_SECRET=TICKETS_SECRET,
        SLACK_BOT_TOKEN=None,
        SLACK_SIGNING_SECRET=None,
    )


@pytest.fixture
def rules(settings):
    return settings.rules


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """Runs an ASGI app with uvicorn in a thread on a loopback port."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def app(settings, engine):
    from bot.app import create_app

    return create_app(settings, engine=engine)


@pytest.fixture
def server(app):
    with LiveServer(app) as live:
        yield live


@pytest.fixture
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
