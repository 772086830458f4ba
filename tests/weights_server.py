"""A loopback stand-in for every weight-file source (Hugging Face, GitHub raw, torchvision, Google Drive), for
``tools/download_weights.py --mirror http://127.0.0.1:PORT``: a mirror serves ``https://HOST/PATH?QUERY`` at
``/HOST/PATH?QUERY``.

It honours ``Range: bytes=N-`` (206), can drop a connection halfway through a file once (an interrupted
download), and answers ``drive.google.com/uc?...&id=ID`` as Google Drive does for large files: an HTML page
("can't scan this file for viruses") whose form carries a confirm token to ``drive.usercontent.google.com``.
Every request is logged as ``(path with query, Range header or None)``.
"""
from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional, Tuple

DRIVE_HOST = 'drive.google.com'
DRIVE_DOWNLOAD = 'drive.usercontent.google.com/download'
CONFIRM_TOKEN = 't'

# Drive's page is minified: the form and its hidden inputs sit on one line (gdown's parser reads it line by line).
DRIVE_CONFIRM_PAGE = (
    '<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>\n'
    '<div class="uc-main"><p class="uc-warning-caption">Google Drive can\'t scan this file for viruses.</p>'
    '<p class="uc-warning-subcaption">{name} is too large for Google to scan for viruses.</p>'
    '<form id="download-form" action="https://{download}" method="get"><input type="submit" value="Download anyway"/>'
    '<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" value="download">'
    '<input type="hidden" name="confirm" value="{token}"><input type="hidden" name="uuid" value="0a1b2c3d"></form>'
    '</div>\n</body></html>\n')


class WeightsServer:
    """``files``: ``{'HOST/PATH': bytes}``; ``drive``: ``{file id: (name, bytes)}``. Start with ``with``."""

    def __init__(self, files: Dict[str, bytes], drive: Optional[Dict[str, Tuple[str, bytes]]] = None):
        self.files = dict(files)
        self.drive = dict(drive or {})
        self.drop_once: set = set()  # 'HOST/PATH' whose next full response stops halfway
        self.log: List[Tuple[str, Optional[str]]] = []
        self._server = ThreadingHTTPServer(('127.0.0.1', 0), self._handler())
        self.url = f'http://127.0.0.1:{self._server.server_address[1]}'

    def __enter__(self) -> 'WeightsServer':
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def requests_for(self, fragment: str) -> list:
        return [entry for entry in self.log if fragment in entry[0]]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                server.log.append((self.path, self.headers.get('Range')))
                parts = urllib.parse.urlsplit(self.path)
                key, query = parts.path.lstrip('/'), urllib.parse.parse_qs(parts.query)
                if key == f'{DRIVE_HOST}/uc' and query.get('id', [''])[0] in server.drive:
                    name, _ = server.drive[query['id'][0]]
                    page = DRIVE_CONFIRM_PAGE.format(name=name, download=DRIVE_DOWNLOAD, file_id=query['id'][0],
                                                     token=CONFIRM_TOKEN).encode()
                    return self._send(200, page, 'text/html; charset=utf-8')
                if key == DRIVE_DOWNLOAD:
                    entry = server.drive.get(query.get('id', [''])[0])
                    if entry is None or query.get('confirm') != [CONFIRM_TOKEN]:
                        return self._send(403, b'no confirm token', 'text/plain')
                    return self._send_file(key, entry[1], {'Content-Disposition': f'attachment; filename="{entry[0]}"'})
                if key in server.files:
                    return self._send_file(key, server.files[key])
                self._send(404, b'not found', 'text/plain')

            def _send(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header('Content-Type', kind)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _send_file(self, key: str, data: bytes, headers: Optional[dict] = None) -> None:
                start = 0
                wanted = self.headers.get('Range')
                if wanted and wanted.startswith('bytes=') and wanted.endswith('-'):
                    start = int(wanted[len('bytes='):-1])
                    if start >= len(data):
                        return self._send(416, b'', 'text/plain')
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header('Content-Type', 'application/octet-stream')
                self.send_header('Content-Length', str(len(body)))
                if start:
                    self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                if key in server.drop_once:  # an interrupted transfer: half the body, then the connection closes
                    server.drop_once.discard(key)
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler
