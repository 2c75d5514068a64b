"""A loopback "origin" for the pull tests: serves original-format fixture checkpoints at release URLs.

Requests arrive as ZOO_ORIGINAL_MIRROR/<host>/<path>?<query> (zoo/resolvers.py). What is served:

- plain HTTPS links: the bytes at /<host>/<path>, with HTTP Range (206) support; a file listed in `cut`
  is cut in the middle (full Content-Length, half the body, connection closed) that many times;
- Google Drive file links: /drive.google.com/uc?export=download&id=ID answers an HTML "virus scan warning"
  page whose form (confirm + uuid) leads to /drive.usercontent.google.com/download?..., which serves the file
  only with the right confirm token and uuid;
- Hub files: /huggingface.co/ORG/NAME/resolve/main/FILE.

Every request is logged as (method, path, Range header), so tests can assert that a second pull did not
touch the network and that a cut download was resumed with a Range request.
"""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DRIVE_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<p>{name} ({size} bytes) is too large for Google Drive to scan for viruses. Download anyway?</p>
<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{uuid}"></form>
</body></html>"""


class Origin:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # "/host/path" -> bytes
        self.drive: dict[str, tuple[str, bytes]] = {}  # Drive file id -> (name, bytes)
        self.cut: dict[str, int] = {}  # "/host/path" or Drive id -> how many more times to cut it
        self.log: list[tuple[str, str, str | None]] = []
        self.uuid = uuid.uuid4().hex
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                origin.log.append(("GET", self.path, self.headers.get("Range")))
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                if parts.path == "/drive.google.com/uc":
                    file_id = (query.get("id") or [""])[0]
                    if file_id not in origin.drive:
                        return self.send_error(404)
                    name, data = origin.drive[file_id]
                    page = DRIVE_PAGE.format(name=name, size=len(data), id=file_id, uuid=origin.uuid).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(page)))
                    self.end_headers()
                    self.wfile.write(page)
                    return None
                if parts.path == "/drive.usercontent.google.com/download":
                    file_id = (query.get("id") or [""])[0]
                    if (query.get("confirm") != ["t"] or query.get("uuid") != [origin.uuid]
                            or file_id not in origin.drive):
                        return self.send_error(403)
                    return self._send(file_id, origin.drive[file_id][1])
                if parts.path not in origin.files:
                    return self.send_error(404)
                return self._send(parts.path, origin.files[parts.path])

            def _send(self, key: str, data: bytes):
                start = 0
                header = self.headers.get("Range")
                if header and header.startswith("bytes=") and header.endswith("-"):
                    start = int(header[6:-1])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if origin.cut.get(key, 0) > 0:
                    origin.cut[key] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Origin:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
