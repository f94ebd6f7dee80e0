"""An S3 endpoint that misbehaves on demand: a small HTTP proxy in front of moto's real server
that answers `503 SlowDown` (S3's throttling error, which every SDK retries and then raises) to
reads of chosen keys while it is armed, or drops the reply to a write that landed. The fault is
in the storage service, not in bc_ray: the SDKs (s3fs/botocore, pyarrow's AWS SDK,
object_store) see exactly what a misbehaving bucket sends."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")
ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied</Message></Error>")


class FaultyS3:
    """`endpoint` forwards to `upstream`; while `failing` holds key fragments, a GET whose key
    or listed prefix contains one is refused with SlowDown (HEADs pass: bc_ray's commits check
    the sizes of the files they add, the throttled reads are the data reads that follow)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.failing: tuple[str, ...] = ()
        # bucket-level calls (HeadBucket, GetBucketLocation) refused with 403, as under an IAM
        # policy that grants object access under a prefix only
        self.bucket_calls_denied = False
        self.refused = 0
        # a key fragment whose next PUT lands upstream but is never answered (the connection
        # drops, as when a reply is lost): the client retries a write that has landed
        self.drop_put_reply: str | None = None
        self.dropped = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                return

            def _forward(self) -> None:
                body = self._body()
                target = unquote(self.path)  # the key, or a listing's prefix
                address = urlsplit(self.path)
                if proxy.bucket_calls_denied and "/" not in address.path.strip("/") and (
                        self.command == "HEAD" or address.query.startswith("location")):
                    self._reply(403, {"Content-Type": "application/xml"}, ACCESS_DENIED)
                    return
                if self.command == "GET" and any(f in target for f in proxy.failing):
                    proxy.refused += 1
                    self._reply(503, {"Content-Type": "application/xml"}, SLOW_DOWN)
                    return
                connection = http.client.HTTPConnection(proxy.upstream.hostname,
                                                        proxy.upstream.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("transfer-encoding", "connection")}
                    if body is not None:
                        headers["Content-Length"] = str(len(body))
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    if self.command == "PUT" and proxy.drop_put_reply is not None \
                            and proxy.drop_put_reply in target:
                        proxy.drop_put_reply, proxy.dropped = None, proxy.dropped + 1
                        self.close_connection = True  # landed; the reply is lost
                        return
                    self._reply(response.status, dict(response.getheaders()), data)
                finally:
                    connection.close()

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while (size := int(self.rfile.readline().split(b";")[0], 16)):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else (
                    b"" if self.command in ("PUT", "POST") else None)

            def _reply(self, status: int, headers: dict, data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length",
                                            "server", "date"):
                        self.send_header(name, value)
                length = headers.get("Content-Length", headers.get("content-length"))
                self.send_header("Content-Length",
                                 length if self.command == "HEAD" and length else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

        return Handler
