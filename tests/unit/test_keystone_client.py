"""The Keystone client against local HTTP servers on loopback: a proxy with no Keystone
behind it (HTTP 503) is the same as an unreachable Keystone, not an API error."""

import contextlib
import http.server
import json
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_utils"))
import openstack_ha_keystone as keystone  # noqa: E402


TOKEN_BODY = json.dumps({"token": {"expires_at": "2999-01-01T00:00:00.000000Z", "catalog": []}}).encode()


def _issue_token(handler, token):
    """Answer a token request (reading its body first) with 201 and ``token``."""
    handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
    handler.send_response(201)
    handler.send_header("X-Subject-Token", token)
    handler.send_header("Content-Length", str(len(TOKEN_BODY)))
    handler.end_headers()
    handler.wfile.write(TOKEN_BODY)


class _Proxy(http.server.BaseHTTPRequestHandler):
    """Issues tokens (as if one Keystone were up), then answers every API call 503."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"token": {"expires_at": "2999-01-01T00:00:00.000000Z", "catalog": []}}).encode()
        if self.server.tokens_left > 0:
            self.server.tokens_left -= 1
            self.send_response(201)
            self.send_header("X-Subject-Token", "t")
        else:
            self.send_response(503)
            body = b"<html>No server is available to handle this request.</html>"
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        body = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PATCH(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    server.tokens_left = 1
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/v3" % server.server_address[1]
    server.shutdown()
    server.server_close()


def _closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_proxy_without_keystone_behind_it_is_unreachable_not_an_api_error(proxy):
    session = keystone.connect([proxy, "http://127.0.0.1:%d/v3" % _closed_port()], "admin", "secret", timeout=2)
    session.authenticate()
    with pytest.raises(keystone.KeystoneError) as err:
        session.services()
    assert keystone.error_kind(err.value) == "unreachable", str(err.value)
    assert "no Keystone answered" in str(err.value)
    assert "secret" not in str(err.value)


class _Flaky(http.server.BaseHTTPRequestHandler):
    """A Keystone whose database connection was cut once: the first API call of each kind
    answers 500, the next works. Counts the calls by method."""

    def _answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _flaky(self, ok_status, body):
        self.server.calls.append(self.command)
        if self.server.calls.count(self.command) == 1:
            self._answer(500, json.dumps({"error": {"message": "An unexpected error prevented the server"}}).encode())
        else:
            self._answer(ok_status, body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path.endswith("/auth/tokens"):
            body = json.dumps({"token": {"expires_at": "2999-01-01T00:00:00.000000Z", "catalog": []}}).encode()
            self.send_response(201)
            self.send_header("X-Subject-Token", "t")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._flaky(201, json.dumps({"service": {"id": "s1"}}).encode())

    def do_GET(self):
        self._flaky(200, json.dumps({"services": [{"id": "s1"}]}).encode())

    def do_PATCH(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._flaky(200, json.dumps({"endpoint": {"id": "e1", "url": "http://x"}}).encode())

    def do_DELETE(self):
        # The first DELETE took effect before the 500: the retry finds nothing.
        self.server.calls.append("DELETE")
        self._answer(500 if self.server.calls.count("DELETE") == 1 else 404)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    server.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, "http://127.0.0.1:%d/v3" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_500_is_retried_once_for_repeatable_requests_but_never_for_a_create(flaky):
    server, url = flaky
    session = keystone.connect([url], "admin", "secret", timeout=2)
    assert session.services() == [{"id": "s1"}]
    assert session.update_endpoint("e1", "http://x")["url"] == "http://x"
    session.delete_endpoint("e1")
    assert server.calls == ["GET", "GET", "PATCH", "PATCH", "DELETE", "DELETE"]
    with pytest.raises(keystone.KeystoneError) as err:
        session.create_service("nova", "compute")
    assert keystone.error_kind(err.value) == "api" and "HTTP 500" in str(err.value)
    assert server.calls.count("POST") == 1, "a create must not be sent twice"


class _MovedVip(http.server.BaseHTTPRequestHandler):
    """Keeps connections alive (HTTP/1.1) like HAProxy, and resets a kept connection at its
    second request, unanswered: what the client meets when the VIP has moved to a controller
    whose kernel knows nothing of the connection. Counts the tokens it issues."""

    protocol_version = "HTTP/1.1"

    def _answer(self, status, body, headers=()):
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.server.tokens += 1
        _issue_token(self, "t%d" % self.server.tokens)

    def do_GET(self):
        self.requests_here = getattr(self, "requests_here", 0) + 1
        if self.requests_here == 2:
            import socket
            import struct

            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        self.server.seen_tokens.append(self.headers.get("X-Auth-Token"))
        self._answer(200, json.dumps({"services": [{"id": "s1"}]}).encode())

    def log_message(self, *args):
        pass


def test_a_kept_connection_reset_by_a_vip_move_is_replaced_without_a_new_token():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MovedVip)
    server.tokens, server.seen_tokens = 0, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        session = keystone.connect(["http://127.0.0.1:%d/v3" % server.server_address[1]], "admin", "secret", timeout=2)
        assert session.services() == [{"id": "s1"}]
        # The token request and this first call shared one kept connection; the next call on
        # it is reset, unanswered.
        assert session.services() == [{"id": "s1"}]
        assert server.tokens == 1, "a reset connection must not cost a new token"
        assert server.seen_tokens == ["t1", "t1"]
    finally:
        server.shutdown()
        server.server_close()


def test_after_a_fall_back_the_next_burst_goes_to_the_first_url_again_with_the_same_token(proxy, flaky):
    # The first URL (the VIP's proxy) has nobody behind it: the session falls back to the
    # second; once told to prefer the first again it tries it first, keeping its token.
    server, url = flaky
    session = keystone.connect([proxy, url], "admin", "secret", timeout=2)
    session.authenticate()
    assert session.url == proxy
    assert session.services() == [{"id": "s1"}]
    assert session.url == url
    token = session.token
    session.prefer_first()
    assert session.url == proxy and session.token == token


class _Ok(http.server.BaseHTTPRequestHandler):
    """A Keystone that answers every call, a little slowly; counts the tokens it issues."""

    def do_POST(self):
        self.server.tokens += 1
        _issue_token(self, "ok%d" % self.server.tokens)

    def do_PATCH(self):
        import time

        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(0.02)
        body = json.dumps({"endpoint": {"id": self.path.rsplit("/", 1)[-1], "url": "http://x"}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_parallel_updates_that_lose_their_url_together_all_land_with_one_new_token(proxy):
    # 24 updates in flight through a proxy that has lost every Keystone behind it: each
    # falls back to the next URL; none may see a half-replaced URL or token, and the
    # fall-back costs one new token, not one per thread.
    from concurrent.futures import ThreadPoolExecutor

    class Server(http.server.ThreadingHTTPServer):
        request_queue_size = 64  # 24 connections at once (the default backlog is 5)

    server = Server(("127.0.0.1", 0), _Ok)
    server.tokens = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        session = keystone.connect([proxy, "http://127.0.0.1:%d/v3" % server.server_address[1]], "admin", "secret", timeout=5)
        session.authenticate()
        with ThreadPoolExecutor(max_workers=24) as pool:
            results = list(pool.map(lambda i: session.update_endpoint("e%d" % i, "http://x")["id"], range(24)))
        assert results == ["e%d" % i for i in range(24)]
        assert server.tokens == 1
    finally:
        server.shutdown()
        server.server_close()


class _SlowOnce(http.server.BaseHTTPRequestHandler):
    """A Keystone whose first PATCH is stuck (it answers after 3 s); counts PATCHes."""

    def do_POST(self):
        _issue_token(self, "t")

    def do_PATCH(self):
        import time

        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.patches += 1
        if self.server.patches == 1:
            time.sleep(3)
        body = json.dumps({"endpoint": {"id": "e1", "url": "http://x"}}).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up on this one

    def log_message(self, *args):
        pass


def test_a_stuck_update_is_sent_again_after_the_quick_wait_not_the_whole_timeout(monkeypatch):
    import time

    monkeypatch.setattr(keystone, "QUICK_READ", 0.5)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowOnce)
    server.patches = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        session = keystone.connect(["http://127.0.0.1:%d/v3" % server.server_address[1]], "admin", "secret", timeout=5)
        session.authenticate()
        started = time.monotonic()
        assert session.update_endpoint("e1", "http://x")["url"] == "http://x"
        assert time.monotonic() - started < 2.5
        assert server.patches == 2
    finally:
        server.shutdown()
        server.server_close()


class _NotKeystone(http.server.BaseHTTPRequestHandler):
    """Issues tokens, then answers every GET 200 with JSON that is not Keystone's (a stand-in
    API behind the same port)."""

    def do_POST(self):
        _issue_token(self, "t")

    def do_GET(self):
        _send_json(self, 200, {"status": "ok"})

    def log_message(self, *args):
        pass


def _send_json(handler, status, document):
    """Answer ``handler``'s request with ``status`` and ``document`` as JSON."""
    body = json.dumps(document).encode()
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@contextlib.contextmanager
def _keystone_on(handler):
    """A client of one Keystone URL on loopback, served by ``handler`` while the block runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield keystone.connect(["http://127.0.0.1:%d/v3" % server.server_address[1]], "admin", "secret", timeout=2)
    finally:
        server.shutdown()
        server.server_close()


def test_an_answer_without_the_expected_list_is_an_api_error_not_a_crash():
    with _keystone_on(_NotKeystone) as session:
        with pytest.raises(keystone.KeystoneError) as err:
            session.services()
    assert keystone.error_kind(err.value) == "api" and "without 'services'" in str(err.value)


class _NoToken(http.server.BaseHTTPRequestHandler):
    """Answers a token request 201 with a JSON body and no token header (the lab's stand-in
    APIs answer every request so)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _send_json(self, 201, {"service": "keystone", "method": "POST"})

    def log_message(self, *args):
        pass


def test_a_201_without_a_token_header_says_what_is_missing():
    """Before, the error read "answered the token request with HTTP 201", as if 201 were the
    fault; the missing header is."""
    with _keystone_on(_NoToken) as session:
        with pytest.raises(keystone.KeystoneError) as err:
            session.authenticate()
    assert keystone.error_kind(err.value) == "api"
    assert "without an X-Subject-Token header" in str(err.value), err.value
