"""The first minute: `runcast serve` with no secret prints links that work; `runcast token` prints a working token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx

from hubtest import ROOT, SECRET, Client, Process, base_env, free_port

from runcast import auth


async def test_serve_without_a_secret_prints_working_links(tmp_path) -> None:
    env = base_env(tmp_path)
    env.pop("RUNCAST_SECRET")
    port = free_port()
    proc = Process(["serve", "--port", str(port)], env, tmp_path / "serve.log", port).start()
    try:
        deadline = time.monotonic() + 10
        while "Vic" not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        out = (tmp_path / "serve.log").read_text()
        links = dict(re.findall(r"(Dana|Alex|Vic), an? \w+ \([^)]*\):\s+(http://\S+)", out))
        assert set(links) == {"Dana", "Alex", "Vic"}, out
        assert "You" not in out.split("No RUNCAST_SECRET")[1], "the demo's people have real names"
        admin_token = links["Dana"].split("#token=")[1]
        assert links["Dana"].startswith(f"http://127.0.0.1:{port}/#token=")
        # the page and the client it imports are served; nothing else of client_js/ is
        page = httpx.get(proc.url + "/")
        assert page.status_code == 200 and 'data-testid="start-form"' in page.text
        for path in ("/static/app.js", "/client/src/runcast.js", "/client/src/state.js"):
            r = httpx.get(proc.url + path)
            assert r.status_code == 200 and "javascript" in r.headers["content-type"], path
        for path in ("/client/package.json", "/client/test/helpers.mjs", "/client/node_modules/ws/package.json"):
            assert httpx.get(proc.url + path).status_code == 404, path
        c = await Client.connect(proc.ws_url, admin_token)
        ack = await c.request({"type": "start", "agent": "demo", "input": "hello"})
        assert ack["type"] == "ack" and ack["run_id"].startswith("run_")
        alex = await Client.connect(proc.ws_url, links["Alex"].split("#token=")[1])
        assert alex.frames[0]["user"] == {"sub": "alex", "name": "Alex", "roles": ["approver"]}
        await c.close()
        await alex.close()
    finally:
        proc.stop()


def test_serve_on_a_busy_port_fails_before_printing_links(tmp_path) -> None:
    import socket

    env = base_env(tmp_path)
    env.pop("RUNCAST_SECRET")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "runcast.cli", "serve", "--port", str(port)], env=env,
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "PORT=9000" in out.stderr, out.stderr
    assert "#token=" not in out.stdout, "no links to a hub that is not there"


def test_token_command_signs_with_the_secret() -> None:
    env = dict(os.environ, RUNCAST_SECRET=SECRET, PYTHONPATH=str(ROOT / "server"))
    out = subprocess.run([sys.executable, "-m", "runcast.cli", "token", "--sub", "kim", "--name", "Kim",
                          "--roles", "approver,finance", "--runs", "run_a,run_b", "--ttl", "60"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    who = auth.verify(SECRET, out)
    assert (who.sub, who.name, who.roles, who.runs) == ("kim", "Kim", ("approver", "finance"), ("run_a", "run_b"))
    assert who.exp is not None and 50 < who.exp - time.time() <= 60
    env.pop("RUNCAST_SECRET")
    failed = subprocess.run([sys.executable, "-m", "runcast.cli", "token", "--sub", "kim"], env=env, capture_output=True, text=True)
    assert failed.returncode != 0 and "RUNCAST_SECRET" in failed.stderr
