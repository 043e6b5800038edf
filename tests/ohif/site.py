"""One origin for the OHIF tests: OHIF's built app as static files plus a proxy to Orthanc's DICOMweb.

Serving both from one origin avoids CORS (Orthanc's DICOMweb plugin sends no CORS headers). Unknown
paths fall back to ``index.html`` (OHIF routes such as ``/viewer``); ``/app-config.js`` is the config
given, not the one in ``dist``; ``/dicom-web/...`` is forwarded to Orthanc with the Host header kept, so
the bulk-data URLs Orthanc writes into its metadata point back at this origin.
"""

from __future__ import annotations

import http.client
import mimetypes
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LOOPBACK = "127.0.0.1"
DICOMWEB_PREFIX = "/dicom-web/"
APP_CONFIG = "/app-config.js"
INDEX = "index.html"
PROXY_TIMEOUT_S = 60.0
COPY_CHUNK = 1 << 16
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade"}
# Cross-origin isolation lets Cornerstone3D use SharedArrayBuffer; everything is same-origin here.
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin",
                     "Cross-Origin-Embedder-Policy": "require-corp"}
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("application/javascript", ".js")
mimetypes.add_type("application/json", ".jsonc")


@dataclass
class Site:
    """A running site: its URL and the server (``stop()`` shuts it down)."""

    url: str
    server: ThreadingHTTPServer
    thread: threading.Thread

    @property
    def dicomweb_url(self) -> str:
        return self.url + DICOMWEB_PREFIX.rstrip("/")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _handler(dist: Path, app_config: str, orthanc_port: int) -> type[BaseHTTPRequestHandler]:
    root = dist.resolve()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base-class name)
            pass

        def do_GET(self) -> None:
            self._dispatch()

        def do_HEAD(self) -> None:
            self._dispatch()

        def do_POST(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            path = urlsplit(self.path).path
            if path.startswith(DICOMWEB_PREFIX):
                self._proxy()
            elif path == APP_CONFIG:
                self._send(200, app_config.encode(), "application/javascript")
            else:
                self._static(path)

        def _static(self, url_path: str) -> None:
            target = (root / unquote(url_path).lstrip("/")).resolve()
            if not target.is_relative_to(root) or not target.is_file():
                target = root / INDEX
            kind = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            self._send(200, target.read_bytes(), kind)

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            for key, value in ISOLATION_HEADERS.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _proxy(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream = http.client.HTTPConnection(LOOPBACK, orthanc_port, timeout=PROXY_TIMEOUT_S)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


def start_site(dist: Path, app_config: str, orthanc_port: int) -> Site:
    """Serve ``dist`` with ``app_config`` and the DICOMweb proxy on a free loopback port (a thread)."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _handler(dist, app_config, orthanc_port))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ohif-site", daemon=True)
    thread.start()
    return Site(f"http://{LOOPBACK}:{server.server_address[1]}", server, thread)
