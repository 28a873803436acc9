"""``exporter/httpserver.py``: serving on cheroot within fixed limits (idle and
maximum connections, trickling and stalled requests, IPv6, TLS and mutual TLS, the
access log), through real sockets."""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time

import pytest
import requests
import trustme

from viber_exporter.server import HttpServer
from viber_exporter.web.app import is_loopback

from .children import answers, callback_to, limited_exporter, routee_report
from .conftest import wait_for


def open_idle(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        sockets.append(s)
    return sockets


def test_idle_connections_hold_no_thread_and_are_closed_after_idle_timeout(limited):
    server = limited(threads=4, idle_timeout="2s")
    threads_before = threading.active_count()
    idle = open_idle(server.port, 300)
    try:
        # Every scrape is answered while 300 connections sit idle, by the same 4 workers.
        for _ in range(20):
            assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 200
        assert server.worker_threads() == 4
        assert threading.active_count() <= threads_before + 2
        # After idle_timeout the server closes them (a read sees the end of the stream).
        for s in idle[:20]:
            s.settimeout(10)
            assert s.recv(1) == b""
    finally:
        for s in idle:
            s.close()


def test_connections_past_max_connections_are_closed_at_once(limited):
    server = limited(max_connections=10, idle_timeout="30s")
    idle = open_idle(server.port, 10)
    try:
        extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        extra.settimeout(5)
        assert extra.recv(1) == b"", "an 11th connection is closed"
        extra.close()
        assert server.refused_connections >= 1
    finally:
        for s in idle:
            s.close()
    wait_for(lambda: answers(server.url))


def test_a_request_trickling_its_headers_is_cut_off_after_body_timeout(limited):
    server = limited(body_timeout="1s", idle_timeout="30s", threads=2)
    slow = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 12:
        try:
            slow.sendall(b"X-Slow: 1\r\n")
        except OSError:
            closed = True
            break
        slow.settimeout(0.5)
        try:
            if slow.recv(1) == b"":
                closed = True
                break
        except TimeoutError:
            pass
    slow.close()
    assert closed, "a slowloris client was never cut off"
    assert requests.get(f"{server.url}/-/healthy", timeout=5).status_code == 200


def test_an_unauthenticated_body_is_refused_after_its_headers_without_reading_it(limited):
    server = limited(api_token="s3cret-api-token")
    for path in ("/api/v1/messages", "/api/v1/callbacks/routee?token=wrong"):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {10 * 1024 * 1024 - 10}\r\n\r\n".encode() + b"[" * 1000)
        s.settimeout(10)
        answer = s.recv(4096).decode()
        assert answer.startswith("HTTP/1.1 401"), (path, answer[:80])
        assert "Connection: close" in answer
        s.close()


def test_an_authenticated_body_that_stalls_gets_a_408_within_the_deadline(limited):
    server = limited(body_timeout="1s", idle_timeout="30s")
    s = socket.create_connection(("127.0.0.1", server.port), timeout=15)
    s.sendall(b"POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100000\r\n\r\n")
    deadline = time.monotonic() + 10
    answer = b""
    while time.monotonic() < deadline and not answer:
        try:
            s.sendall(b" ")
        except OSError:
            break
        s.settimeout(0.3)
        with contextlib.suppress(TimeoutError):
            answer = s.recv(4096)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]


def test_listening_on_all_ipv6_interfaces_serves_ipv4_too(tmp_path, mock, builtin_host):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    exporter = limited_exporter(tmp_path, mock.url, builtin_host)
    server = HttpServer(exporter, "::", 0)
    server.start()
    try:
        assert "IPv6 and IPv4" in server.bound
        for host in ("127.0.0.1", "[::1]"):
            assert requests.get(f"http://{host}:{server.port}/-/healthy", timeout=5).status_code == 200
        # An IPv4 client appears as ::ffff:127.0.0.1 and is still loopback: it may write.
        answer = requests.post(f"http://127.0.0.1:{server.port}/api/v1/messages", timeout=5,
                               json={"messages": [{"provider": "bsg", "id": "7"}]})
        assert answer.status_code == 200
    finally:
        server.stop()
        exporter.stop()
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("::1") and not is_loopback("::ffff:10.0.0.1")


def test_the_access_log_never_shows_a_callback_token(limited, caplog):
    server = limited()
    with caplog.at_level(logging.DEBUG, logger="viber_exporter.access"):
        callback_to(server, [routee_report("0a047b46-a4dd-4ca8-b817-a6a134dd1234")])
        requests.post(f"{server.url}/api/v1/callbacks/routee?token=a%2Fb", json=[], timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.name == "viber_exporter.access"]
    assert any("/api/v1/callbacks/routee" in line for line in lines)
    assert not any("t0ken" in line or "a/b" in line or "token" in line for line in lines)


def test_tls_still_serves_and_a_client_that_never_handshakes_blocks_nobody(tmp_path, mock, builtin_host):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    exporter = limited_exporter(tmp_path, mock.url, builtin_host, tls_cert_file=str(tmp_path / "server.pem"),
                                tls_key_file=str(tmp_path / "server.pem"), threads=2, idle_timeout="30s")
    server = HttpServer(exporter, "127.0.0.1", 0)
    server.start()
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    try:
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        for _ in range(5):
            answer = requests.get(f"{server.url}/-/healthy", verify=str(tmp_path / "ca.pem"), timeout=5)
            assert answer.status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{server.url}/-/healthy", timeout=5)
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        with socket.create_connection(("127.0.0.1", server.port)) as raw, context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        for s in silent:
            s.close()
        server.stop()
        exporter.stop()


@pytest.fixture
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("prometheus@example.test")
    files = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "server.pem", "key": tmp_path / "server.key",
             "client": tmp_path / "client.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    server.cert_chain_pems[0].write_to_path(str(files["cert"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(files["client"]))
    return files


def serve_with(make_config, run_exporter, **exporter_keys):
    exporter = run_exporter(make_config(exporter=exporter_keys))
    http = HttpServer(exporter, "127.0.0.1", 0)
    http.start()
    return exporter, http


def test_tls(make_config, run_exporter, pki):
    _, http = serve_with(make_config, run_exporter, tls_cert_file=str(pki["cert"]), tls_key_file=str(pki["key"]))
    try:
        assert http.url.startswith("https://")
        assert requests.get(f"{http.url}/metrics", verify=str(pki["ca"]), timeout=5).status_code == 200
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{http.url}/metrics", timeout=5)  # not trusted without our CA
        with pytest.raises(requests.RequestException):
            requests.get(http.url.replace("https://", "http://") + "/metrics", timeout=5)
    finally:
        http.stop()


def test_mutual_tls(make_config, run_exporter, pki):
    _, http = serve_with(make_config, run_exporter, tls_cert_file=str(pki["cert"]), tls_key_file=str(pki["key"]),
                         tls_client_ca_file=str(pki["ca"]))
    try:
        ok = requests.get(f"{http.url}/metrics", verify=str(pki["ca"]), cert=str(pki["client"]), timeout=5)
        assert ok.status_code == 200
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(f"{http.url}/metrics", verify=str(pki["ca"]), timeout=5)
    finally:
        http.stop()
