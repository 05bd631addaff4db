"""`stallwatch serve` against slow and idle clients (bot/serving.py), on loopback."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from bot.serving import MAX_HEADER_BYTES, uvicorn_options
from tests.conftest import free_port

IDLE_CONNECTIONS = 1200
ROOT = Path(__file__).resolve().parent.parent


def _lower_open_files(limit: int):
    def preexec() -> None:  # the usual default soft limit, the hard one left as it is
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    return preexec


@pytest.fixture
def served(tmp_path):
    """`stallwatch serve --no-scheduler` in a subprocess started with a soft limit of 1,024 open files."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'sw.db'}", "SLACK_BOT_TOKEN": "",
           "SLACK_SIGNING_SECRET": "", "PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve", "--no-scheduler", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=ROOT,  # this tree's code, not an installed copy
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_lower_open_files(1024))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("stallwatch serve did not start")
            time.sleep(0.2)
        yield url, port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_1200_idle_connections_do_not_lock_out_health_checks(served):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < IDLE_CONNECTIONS + 300:  # this test process holds the client ends
        if hard < IDLE_CONNECTIONS + 300:
            pytest.skip("the open-file hard limit is too low for this test")
        resource.setrlimit(resource.RLIMIT_NOFILE, (IDLE_CONNECTIONS + 300, hard))
    url, port = served
    idle = []
    try:
        for _ in range(IDLE_CONNECTIONS):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)  # let the server accept them all
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
    finally:
        for s in idle:
            s.close()


# ------------------------------------------------------------------ the header deadline

@pytest.fixture
def quick_server(app):
    """The app on uvicorn with serve's options, but a header deadline of half a second."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                            **uvicorn_options(4096, header_timeout=0.5))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.01)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def _closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_a_connection_that_never_sends_a_header_is_closed(quick_server):
    with socket.create_connection(("127.0.0.1", quick_server)) as sock:
        assert _closed_by_server(sock)


def test_a_header_dripped_byte_by_byte_is_cut_off(quick_server):
    with socket.create_connection(("127.0.0.1", quick_server)) as sock:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        try:
            for byte in request[:-4]:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)  # each byte well within uvicorn's keep-alive timeout
        except OSError:
            pass  # closed while dripping
        assert _closed_by_server(sock)


def test_kept_alive_connections_still_serve_requests(quick_server):
    with httpx.Client(base_url=f"http://127.0.0.1:{quick_server}", timeout=10) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.2)  # within the deadline: the connection is reused


def test_endless_headers_are_refused(quick_server):
    """httptools took 20 MB of headers; h11 buffers at most MAX_HEADER_BYTES of an incomplete
    head (plus one socket read), then answers 400 and closes."""
    answer = b""
    with socket.create_connection(("127.0.0.1", quick_server)) as sock:
        sock.settimeout(10)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            for _ in range(1024):  # up to 8 MB, one header line of 8 KB at a time
                sock.sendall(b"X-Big: " + b"a" * 8192 + b"\r\n")
            sock.sendall(b"\r\n")
        except OSError:
            pass  # refused while sending
        try:
            answer = sock.recv(64)
        except OSError:
            pass
    assert not answer.startswith(b"HTTP/1.1 200")
    assert answer in (b"",) or answer.startswith(b"HTTP/1.1 400")
