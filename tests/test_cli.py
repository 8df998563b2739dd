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


def _dev_sign_in(base: str, sub: str) -> str:
    """Sign in on the demo's dev page as `sub` (a form POST from the page itself); returns the session cookie."""
    page = httpx.get(base + "/login")
    assert page.status_code == 200 and f'name="sub" value="{sub}"' in page.text, page.text
    r = httpx.post(base + "/auth/dev", data={"sub": sub, "next": "/#run=r1"}, headers={"Origin": base})
    assert r.status_code == 303 and r.headers["location"] == "/#run=r1", r.text
    return r.cookies["runcast_session"]


async def test_serve_without_a_secret_prints_one_sign_in_link_that_survives_a_restart(tmp_path) -> None:
    env = base_env(tmp_path, XDG_STATE_HOME=str(tmp_path / "state"))
    env.pop("RUNCAST_SECRET")
    port = free_port()

    def serve() -> tuple[Process, str]:
        log = tmp_path / f"serve-{time.monotonic_ns()}.log"
        proc = Process(["serve", "--port", str(port), "--trusted-proxy", "127.0.0.1"], env, log, port).start()
        deadline = time.monotonic() + 10
        while "/login" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc, log.read_text()

    proc, out = serve()
    try:
        links = re.findall(r"http://127\.0\.0\.1:\d+/\S*", out)
        assert links == [f"http://127.0.0.1:{port}/login"], out  # one link, and no token in it
        assert "#token=" not in out
        assert "Dana" in out and "Alex" in out and "Vic" in out
        secret_file = tmp_path / "state" / "runcast" / "dev-secret"
        assert secret_file.stat().st_mode & 0o777 == 0o600
        # the page and the client it imports are served; nothing else of client_js/ is
        page = httpx.get(proc.url + "/")
        assert page.status_code == 200 and 'data-testid="start-form"' in page.text
        for path in ("/static/app.js", "/static/signin.js", "/client/src/runcast.js", "/client/src/state.js"):
            r = httpx.get(proc.url + path)
            assert r.status_code == 200 and "javascript" in r.headers["content-type"], path
        for path in ("/client/package.json", "/client/test/helpers.mjs", "/client/node_modules/ws/package.json"):
            assert httpx.get(proc.url + path).status_code == 404, path
        # a sign-in from another site's form is refused
        forged = httpx.post(proc.url + "/auth/dev", data={"sub": "dana"}, headers={"Origin": "http://evil.test"})
        assert forged.status_code == 400 and "runcast_session" not in forged.cookies
        # behind an https proxy (X-Forwarded-Proto from a --trusted-proxy), the cookie is Secure; on plain http it is not
        secure = httpx.post(
            proc.url + "/auth/dev",
            data={"sub": "vic"},
            headers={"Origin": f"https://127.0.0.1:{port}", "X-Forwarded-Proto": "https"},
        )
        assert secure.status_code == 303 and "; secure" in secure.headers["set-cookie"].lower(), secure.headers
        plain = httpx.post(proc.url + "/auth/dev", data={"sub": "vic"}, headers={"Origin": proc.url})
        assert (
            "; secure" not in plain.headers["set-cookie"].lower() and "httponly" in plain.headers["set-cookie"].lower()
        )
        dana = _dev_sign_in(proc.url, "dana")
        alex = _dev_sign_in(proc.url, "alex")
        c = await Client.connect(proc.ws_url, additional_headers={"Cookie": f"runcast_session={dana}"})
        assert (await c.request({"type": "hello"}))["user"] == {"sub": "dana", "name": "Dana", "roles": ["admin"]}
        ack = await c.request({"type": "start", "agent": "demo", "input": "hello"})
        assert ack["type"] == "ack" and ack["run_id"].startswith("run_")
        await c.close()
    finally:
        proc.stop()
    # make demo again: the same secret from the state dir, so the sessions (and their links) still work
    proc, _ = serve()
    try:
        again = await Client.connect(proc.ws_url, additional_headers={"Cookie": f"runcast_session={alex}"})
        assert (await again.request({"type": "hello"}))["user"] == {
            "sub": "alex",
            "name": "Alex",
            "roles": ["approver"],
        }
        await again.close()
    finally:
        proc.stop()


async def test_no_dev_sign_in_with_a_secret_or_an_issuer(tmp_path) -> None:
    from keyserver import AUDIENCE, ISSUER, KeyServer

    keys = KeyServer().start()
    try:
        for extra_env, args in (
            ({}, []),  # RUNCAST_SECRET is set (base_env)
            ({"RUNCAST_SECRET": ""}, ["--jwks-url", keys.url, "--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE]),
        ):
            env = base_env(tmp_path, XDG_STATE_HOME=str(tmp_path / "state"), **extra_env)
            if not env.get("RUNCAST_SECRET"):
                env.pop("RUNCAST_SECRET")
            port = free_port()
            log = tmp_path / f"serve-{port}.log"
            proc = Process(["serve", "--port", str(port), *args], env, log, port).start()
            try:
                assert "/login" not in log.read_text() and "Dana" not in log.read_text()
                assert httpx.get(proc.url + "/login").status_code == 404
                r = httpx.post(proc.url + "/auth/dev", data={"sub": "dana"}, headers={"Origin": proc.url})
                assert r.status_code in (404, 405) and "runcast_session" not in r.cookies
                assert httpx.get(proc.url + "/auth/session").status_code == 404
            finally:
                proc.stop()
        assert not (tmp_path / "state" / "runcast" / "dev-secret").exists()
    finally:
        keys.stop()


def test_serve_on_a_busy_port_fails_before_printing_links(tmp_path) -> None:
    import socket

    env = base_env(tmp_path)
    env.pop("RUNCAST_SECRET")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "runcast.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    assert out.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr and "PORT=9000" in out.stderr, out.stderr
    assert "http://" not in out.stdout, "no links to a hub that is not there"


def test_token_command_signs_with_the_secret() -> None:
    env = dict(os.environ, RUNCAST_SECRET=SECRET, PYTHONPATH=str(ROOT / "server"))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "runcast.cli",
            "token",
            "--sub",
            "kim",
            "--name",
            "Kim",
            "--roles",
            "approver,finance",
            "--runs",
            "run_a,run_b",
            "--ttl",
            "60",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    who = auth.verify(SECRET, out)
    assert (who.sub, who.name, who.roles, who.runs) == ("kim", "Kim", ("approver", "finance"), ("run_a", "run_b"))
    assert who.exp is not None and 50 < who.exp - time.time() <= 60
    env.pop("RUNCAST_SECRET")
    failed = subprocess.run(
        [sys.executable, "-m", "runcast.cli", "token", "--sub", "kim"], env=env, capture_output=True, text=True
    )
    assert failed.returncode != 0 and "RUNCAST_SECRET" in failed.stderr
