"""A vendor API double on 127.0.0.1 for tests that run in another process (an Airflow api-server).

In-process tests mock vendors with requests-mock; a server process cannot see that, so this serves
canned JSON bodies, shaped like the vendors', by request path, and answers 401 when the key is wrong.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# Where each vendor carries its key: a header or a query parameter.
_KEY_HEADERS = ("X-Finnhub-Token", "APCA-API-KEY-ID")
_KEY_PARAMS = ("apikey", "token")


class FakeVendor:
    """Serve ``routes`` (path -> JSON body) on 127.0.0.1; stopped on exit.

    :param routes: request path (no query) -> body served with HTTP 200 and JSON content type.
    :param keys: keys accepted.
    :param denied: request path -> (status, body) answered to a wrong key, as that vendor answers it;
        other paths answer HTTP 401 ``{"error": "Invalid API key"}``.
    """

    def __init__(self, routes: dict[str, object], keys: set[str],
                 denied: dict[str, tuple[int, object]] | None = None):
        self.routes = routes
        self.keys = keys
        self.denied = denied or {}
        self.requests: list[str] = []
        vendor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                vendor.requests.append(parts.path)
                query = parse_qs(parts.query)
                given = [self.headers.get(h) for h in _KEY_HEADERS] + [query.get(p, [None])[0] for p in _KEY_PARAMS]
                given = [k for k in given if k]
                if not given or any(k not in vendor.keys for k in given):
                    return self._send(*vendor.denied.get(parts.path, (401, {"error": "Invalid API key"})))
                if parts.path not in vendor.routes:
                    return self._send(404, {"error": f"no route {parts.path}"})
                return self._send(200, vendor.routes[parts.path])

            def _send(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeVendor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
