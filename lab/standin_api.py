"""
A stand-in OpenStack API for the lab: answers every GET/HEAD with 200 and a small JSON body
naming the service and the controller that served it, and every POST with 201. Each POST's
X-Request-Id is appended to a journal file, so a test can tell whether a request was
executed, and where, and how many times (a replayed POST shows up twice).

Usage: standin_api.py --service NAME --address ADDR --port PORT [--pidfile FILE] [--journal FILE]
"""

import argparse
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(service, journal=None):
    body_for = lambda method: json.dumps({"service": service, "controller": socket.gethostname(), "method": method}).encode() + b"\n"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, status, method):
            body = body_for(method)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def do_GET(self):
            self._answer(200, "GET")

        def do_HEAD(self):
            self._answer(200, "HEAD")

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if journal:
                with open(journal, "a") as fh:
                    fh.write("{}\n".format(self.headers.get("X-Request-Id", "-")))
            self._answer(201, "POST")

        def log_message(self, fmt, *args):  # quiet: the lab runs 21 of these
            pass

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--service", required=True)
    parser.add_argument("--address", action="append", required=True, help="an address to listen on (repeat for each)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pidfile")
    parser.add_argument("--journal", help="append each POST's X-Request-Id to this file")
    args = parser.parse_args()
    handler = make_handler(args.service, args.journal)
    servers = [make_server(address, args.port, handler) for address in args.address]
    if args.pidfile:
        with open(args.pidfile, "w") as fh:
            fh.write("%d\n" % os.getpid())
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()


def make_server(address, port, handler):
    """A threading HTTP server on ``address`` (IPv4 or IPv6) and ``port``."""
    server_class = type("Server", (ThreadingHTTPServer,), {
        "allow_reuse_address": True, "daemon_threads": True,
        "address_family": socket.AF_INET6 if ":" in address else socket.AF_INET})
    return server_class((address, port), handler)


if __name__ == "__main__":
    main()
