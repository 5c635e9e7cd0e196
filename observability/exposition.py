"""A worker process's own metrics port (`run_huey --metrics-port`): what it counted, served by
prometheus-client's WSGI app behind the same access rule as `/metrics` (access.py).

Each worker process listens on its own port (Prometheus scrapes each and adds them up) rather
than sharing prometheus-client's multiprocess mode: that mode needs a directory set before the
library is imported, works on one machine only and must be cleaned of dead processes' files,
where a port per process needs nothing. The port serves this process's counters only; the
gauges read from the database are on the servers' `/metrics`.
"""

import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from observability.access import allowed

FORBIDDEN = b"Forbidden: metrics are served to METRICS_ALLOWED_NETWORKS or with METRICS_TOKEN.\n"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        """Scrapes are not logged (one every few seconds)."""


def guarded_app(registry=REGISTRY):
    """prometheus-client's WSGI app for `registry`, answering 403 to clients not allowed."""
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        if not allowed(environ.get("REMOTE_ADDR"), environ.get("HTTP_AUTHORIZATION")):
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
            return [FORBIDDEN]
        return metrics(environ, start_response)

    return app


def start_metrics_server(port: int, host: str = "127.0.0.1", registry=REGISTRY) -> WSGIServer:
    """Serve this process's metrics on host:port from a daemon thread; returns the server (its
    `server_address` tells the port when 0 asked for any)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

    class Server(ThreadingWSGIServer):
        address_family = family

    server = make_server(host, port, guarded_app(registry), Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True).start()
    return server
