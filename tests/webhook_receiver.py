"""A real HTTP receiver for webhook tests, run as its own process:

    python webhook_receiver.py PORT LOGFILE [--fail-first N] [--hang]

It answers 500 to the first N attempts of each (path, webhook-id) and 200 after that; with --hang it never answers.
Every request is written to LOGFILE as one JSON line (path, headers, body, the status answered) before it is answered.
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
            status = "hang" if hang else (500 if n <= fail_first else 200)
            line = {"path": self.path, "id": wid, "timestamp": self.headers.get("webhook-timestamp"),
                    "signature": self.headers.get("webhook-signature"), "content_type": self.headers.get("content-type"),
                    "body": body, "attempt": n, "status": status, "at": time.time()}
            with open(logfile, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
        if hang:
            time.sleep(3600)
            return
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
