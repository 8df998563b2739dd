"""A real nginx (Debian's package) in front of hub nodes, configured from the project's own deploy/nginx.conf.

The deploy file is an http-level snippet (it goes in conf.d): the test wraps it in a minimal nginx.conf and replaces
only the upstream's servers and the listen address, so what is tested is the file operators deploy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from hubtest import free_port

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
DEPLOY_CONF = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"
UPSTREAM_LINE = "    server hub:8765"
LISTEN_LINE = "    listen 80;"


def site_conf(upstreams: list[int], port: int) -> str:
    text = DEPLOY_CONF.read_text()
    assert text.count(UPSTREAM_LINE) == 1 and text.count(LISTEN_LINE) == 1, "deploy/nginx.conf changed shape"
    line = next(x for x in text.splitlines() if x.startswith(UPSTREAM_LINE))
    options = line[len(UPSTREAM_LINE) :].rstrip(";")  # max_fails=... fail_timeout=... as deployed
    servers = "\n".join(f"    server 127.0.0.1:{p}{options};" for p in upstreams)
    return text.replace(line, servers).replace(LISTEN_LINE, f"    listen 127.0.0.1:{port};")


class Nginx:
    def __init__(self, upstreams: list[int]) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed (scripts/system-deps installs it)")
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="runcast-nginx-"))
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / d).mkdir()
        (self.dir / "nginx.conf").write_text(f"""
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {self.dir}/body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
{site_conf(upstreams, self.port)}
}}
""")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> "Nginx":
        self.proc = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(self.dir),
                "-c",
                str(self.dir / "nginx.conf"),
                "-e",
                str(self.dir / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        import socket

        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen: {self.log()}") from None
                time.sleep(0.02)

    def log(self) -> str:
        p = self.dir / "error.log"
        return p.read_text()[-3000:] if p.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
