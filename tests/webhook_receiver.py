"""A real HTTP receiver for webhook tests, run as its own process:

    python webhook_receiver.py PORT LOGFILE [--fail-first N] [--hang | --trickle | --huge]

It answers 500 to the first N attempts of each (path, webhook-id) and 200 after that; with --hang it never answers.
Hostile receivers: --trickle answers 1 byte every 2 s (status line included, so no single read ever waits long);
--huge answers 200 with a 200 MB body, as fast as the client takes it.
Every request is written to LOGFILE as one JSON line (path, headers, body, the status answered) before it is answered;
with --trickle and --huge, a second line {"id", "closed_after" (s), "sent" (bytes)} when the client hangs up.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, logfile = int(sys.argv[1]), sys.argv[2]
fail_first = int(sys.argv[sys.argv.index("--fail-first") + 1]) if "--fail-first" in sys.argv else 0
hang = "--hang" in sys.argv
trickle = "--trickle" in sys.argv
huge = "--huge" in sys.argv
HUGE_BYTES = 200 * 1024 * 1024
seen: dict[tuple[str, str], int] = {}
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode("utf-8")
        wid = self.headers.get("webhook-id", "")
        with lock:
            n = seen[(self.path, wid)] = seen.get((self.path, wid), 0) + 1
            status = "hang" if hang else "trickle" if trickle else "huge" if huge else (500 if n <= fail_first else 200)
            line = {
                "path": self.path,
                "id": wid,
                "timestamp": self.headers.get("webhook-timestamp"),
                "signature": self.headers.get("webhook-signature"),
                "content_type": self.headers.get("content-type"),
                "body": body,
                "attempt": n,
                "status": status,
                "at": time.time(),
            }
            with open(logfile, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        if hang:
            time.sleep(3600)
            return
        if trickle or huge:
            t0, sent = time.time(), 0
            try:
                if trickle:
                    for b in b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok":
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        sent += 1
                        time.sleep(2)
                else:
                    self.wfile.write(f"HTTP/1.1 200 OK\r\ncontent-length: {HUGE_BYTES}\r\n\r\n".encode())
                    chunk = b"x" * 65536
                    while sent < HUGE_BYTES:
                        self.wfile.write(chunk)
                        sent += len(chunk)
            except OSError:
                pass
            with lock, open(logfile, "a", encoding="utf-8") as f:
                f.write(
                    json.dumps({"id": wid, "path": self.path, "closed_after": time.time() - t0, "sent": sent}) + "\n"
                )
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
