"""The Keystone client against local HTTP servers on loopback: a proxy with no Keystone
behind it (HTTP 503) is the same as an unreachable Keystone, not an API error."""

import http.server
import json
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "_utils"))
import openstack_ha_keystone as keystone  # noqa: E402


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
