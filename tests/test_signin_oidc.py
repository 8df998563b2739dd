"""Sign-in on the page with a real OpenID Provider (tests/oidc: oidc-provider): the code flow with PKCE, the hub's
session cookie on WebSockets and the HTTP API of every node, sign-out, renewal without dropping a subscription, no
open redirect, the cross-site WebSocket refusal, and every failure answered with a page that says what to do."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import websockets

from hubtest import BOB, Cluster, free_port
from oidc_provider import CLIENT_SECRET, ROLE_MAP, OidcProvider, cookie_attrs, sign_in
from runcast.signin import COOKIE, FLOW_COOKIE, safe_next


class Env:
    def __init__(self, op: OidcProvider, main: Cluster, other: Cluster, wrong: Cluster, tmp: Path) -> None:
        self.op, self.main, self.other, self.wrong, self.tmp = op, main, other, wrong, tmp

    @property
    def hub(self) -> str:
        return self.main.url

    def logs(self) -> str:
        return "\n".join(
            p.log_path.read_text() for c in (self.main, self.other, self.wrong) for p in c.nodes if p.log_path.exists()
        )


def _oidc_args(issuer: str, secret_file: Path) -> list[str]:
    return [
        "--oidc-issuer",
        issuer,
        "--oidc-client-id",
        "runcast",
        "--oidc-client-secret-file",
        str(secret_file),
        "--oidc-role-map",
        ROLE_MAP,
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("oidc")
    hub_env = {"RUNCAST_LOG_LEVEL": "INFO"}  # every sign-in line is logged: the test reads them for secrets
    main = Cluster(tmp / "main", "memory", env=hub_env)
    other = Cluster(tmp / "other", "memory", env=hub_env, serve_args=["--allow-origin", "*"])
    wrong = Cluster(tmp / "wrong", "memory", env=hub_env)
    for c in (main, other, wrong):
        c.tmp.mkdir()
    uris = [f"{c.url}/auth/callback" for c in (main, other, wrong)]
    op = OidcProvider(uris, tmp / "provider.log").start()
    good, bad = tmp / "secret", tmp / "wrong-secret"
    good.write_text(CLIENT_SECRET + "\n")
    bad.write_text("not-the-secret\n")
    started: list[Cluster] = []
    try:
        for c, secret in ((main, good), (other, good), (wrong, bad)):
            c.nodes[0].args += _oidc_args(op.issuer, secret)
            started.append(c.start())
        yield Env(op, main, other, wrong, tmp)
    finally:
        for c in started:
            c.stop()
        op.stop()


def _ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/ws"


async def _hello(url: str, cookie: str | None, origin: str | None = None, token: str | None = None) -> dict[str, Any]:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    async with websockets.connect(
        _ws_url(url),
        subprotocols=["runcast.v1.json"],
        additional_headers=headers,  # type: ignore[list-item]
        origin=origin,
    ) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "hello", "id": "h", **({"token": token} if token else {})}))
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


def _signed_in(env: Env, login: str, next_: str | None = None) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(timeout=15)
    return client, sign_in(client, env.hub, login, next_)


async def test_sign_in_maps_groups_to_roles_and_the_cookie_works_everywhere(env: Env) -> None:
    client, r = _signed_in(env, "alex", "/#run=run_x&approval=ap_1")
    assert r.status_code == 303 and r.headers["location"] == "/#run=run_x&approval=ap_1", (r.status_code, r.text)
    attrs = cookie_attrs(r, COOKIE)
    assert attrs.get("httponly") and attrs.get("samesite", "").lower() == "lax" and attrs.get("path") == "/"
    assert "secure" not in attrs  # plain http here; Secure behind https (--public-url https://...)
    cookie = attrs["value"]
    alex = {"sub": "alex", "name": "Alex Approver", "roles": ["approver", "viewer"]}
    # a hello without a token is welcomed as the cookie's person, on this node and on another node of the team
    for url in (env.main.url, env.other.url):
        frame = await _hello(url, cookie, origin=url)
        assert frame["type"] == "welcome" and frame["user"] == alex, frame
        assert frame["expires_at"] > 0
    # a client that is no browser (no Origin) may use it too
    assert (await _hello(env.main.url, cookie))["user"] == alex
    # the HTTP API reads it
    me = client.get(env.hub + "/api/me")
    assert me.status_code == 200 and me.json()["roles"] == ["approver", "viewer"], me.text
    # and so does /auth/session (the page asks it before connecting)
    assert client.get(env.hub + "/auth/session").json()["user"] == alex
    # a POST with the cookie must come from the hub's page
    r = client.post(env.hub + "/api/runs", json={"agent": "demo", "input": "x"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text


async def test_a_page_of_another_origin_with_the_cookie_is_refused(env: Env) -> None:
    client, _ = _signed_in(env, "dana")
    cookie = client.cookies.get(COOKIE, domain="127.0.0.1")
    with pytest.raises(websockets.InvalidStatus) as info:  # the default: other origins get no upgrade
        await _hello(env.main.url, cookie, origin="http://evil.test")
    assert info.value.response.status_code == 403
    # a hub that lets every origin in (--allow-origin '*', for embedding with tokens) still never honours the cookie
    # from one: the cross-site WebSocket is refused at hello
    frame = await _hello(env.other.url, cookie, origin="http://evil.test")
    assert frame["type"] == "error" and frame["code"] == "unauthenticated" and "own page" in frame["message"], frame
    assert (await _hello(env.other.url, None, origin="http://evil.test", token=BOB))["type"] == "welcome"
    # nor does the HTTP API let another origin change something with it
    r = client.post(env.hub + "/api/runs", json={"agent": "demo"}, headers={"Origin": "http://evil.test"})
    assert r.status_code == 403


@pytest.mark.parametrize(
    "next_",
    [
        "https://evil.test/",
        "//evil.test/x",
        "/\\evil.test",
        "http:/evil.test",
        "javascript:alert(1)",
        "/%0d%0aLocation:x",
    ],
)
def test_next_off_the_hub_is_refused(env: Env, next_: str) -> None:
    _, r = _signed_in(env, "vic", next_)
    assert r.status_code == 303
    location = r.headers["location"]
    assert (
        location.startswith("/")
        and not location.startswith("//")
        and "evil" not in location.split("#")[0]
        or location == "/"
    ), location
    assert safe_next(next_) in ("/", next_) and not safe_next(next_).startswith("//")


async def test_sign_out_and_renewal_without_dropping_a_subscription(env: Env) -> None:
    client, _ = _signed_in(env, "dana")
    origin = {"Origin": env.hub}
    run_id = None
    cookie = client.cookies.get(COOKIE, domain="127.0.0.1")
    async with websockets.connect(
        _ws_url(env.hub),
        subprotocols=["runcast.v1.json"],  # type: ignore[list-item]
        additional_headers={"Cookie": f"{COOKIE}={cookie}"},
        origin=env.hub,
    ) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "hello"}))
        assert json.loads(await ws.recv())["user"]["sub"] == "dana"
        await ws.send(json.dumps({"type": "start", "id": "s", "agent": "demo", "input": "free some disk space"}))
        frames: list[dict[str, Any]] = []

        async def until(pred: Any) -> dict[str, Any]:
            while True:
                f = json.loads(await asyncio.wait_for(ws.recv(), 20))
                frames.append(f)
                if pred(f):
                    return f

        run_id = (await until(lambda f: f.get("id") == "s"))["run_id"]
        await ws.send(json.dumps({"type": "subscribe", "id": "sub", "run_id": run_id}))
        await until(lambda f: "seq" in f)
        # renewal: the page asks for a new session (same origin only) and renews the connection in place
        assert client.post(env.hub + "/auth/refresh").status_code == 403  # no Origin: refused
        renewed = client.post(env.hub + "/auth/refresh", headers=origin)
        assert renewed.status_code == 200, renewed.text
        body = renewed.json()
        assert body["user"]["sub"] == "dana" and cookie_attrs(renewed, COOKIE)["httponly"]
        await ws.send(json.dumps({"type": "hello", "id": "renew", "token": body["token"]}))
        welcome = await until(lambda f: f.get("id") == "renew")
        assert welcome["type"] == "welcome" and welcome["expires_at"] >= body["expires_at"] - 1
        # someone else's token cannot take the connection over
        await ws.send(json.dumps({"type": "hello", "id": "other", "token": BOB}))
        assert (await until(lambda f: f.get("id") == "other"))["code"] == "forbidden"
        # the subscription was never dropped: the run's events keep coming, in order, to its end or its approval
        last = await until(lambda f: "seq" in f and f["type"] in ("approval.requested", "run.completed", "run.failed"))
        seqs = [f["seq"] for f in frames if "seq" in f and f.get("run_id") == run_id]
        assert seqs == list(range(1, len(seqs) + 1)) and last["seq"] == seqs[-1]
    # sign-out: only from the hub's page; then the session is gone from the browser
    assert client.post(env.hub + "/auth/logout").status_code == 400
    out = client.post(env.hub + "/auth/logout", headers=origin)
    assert out.status_code == 200 and "signed out" in out.text.lower()
    assert client.cookies.get(COOKIE, domain="127.0.0.1") is None
    assert client.get(env.hub + "/auth/session").json()["user"] is None
    assert client.get(env.hub + "/api/me").status_code == 401


def _failure(r: httpx.Response, status: int, *phrases: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:1000])
    assert "text/html" in r.headers["content-type"]
    text = re.sub(r"\s+", " ", r.text)
    for p in phrases:
        assert p.lower() in text.lower(), (p, text[:1500])
    assert 'href="/login' in r.text and "Sign in again" in r.text  # how to retry
    assert "Traceback" not in r.text


def test_denied_consent(env: Env) -> None:
    client = httpx.Client(timeout=15)
    _failure(sign_in(client, env.hub, "alex", consent=False), 403, "declined", "allow Runcast")


def test_wrong_client_secret(env: Env) -> None:
    client = httpx.Client(timeout=15)
    _failure(sign_in(client, env.wrong.url, "alex"), 502, "client id or secret", "--oidc-client-secret-file")


def test_groups_that_map_to_no_role(env: Env) -> None:
    client = httpx.Client(timeout=15)
    r = sign_in(client, env.hub, "nora")
    _failure(r, 403, "Nora Nogroup", "no role", "marketing", "ops", "oncall")
    assert client.cookies.get(COOKIE, domain="127.0.0.1") is None


@pytest.mark.parametrize("mode,phrase", [("expired", "expired"), ("wrong-aud", "another application")])
def test_an_expired_or_wrong_audience_id_token(env: Env, mode: str, phrase: str) -> None:
    env.op.next_id_token(mode)
    _failure(sign_in(httpx.Client(timeout=15), env.hub, "alex"), 400, phrase)


def test_forged_and_replayed_state_and_code(env: Env) -> None:
    client = httpx.Client(timeout=15)
    to_callback = sign_in(client, env.hub, "alex", stop_at_callback=True)
    callback = to_callback.headers["location"]
    flow = client.cookies.get(FLOW_COOKIE, domain="127.0.0.1", path="/auth")
    assert flow
    # a forged state (the browser's flow is real, the answer is not its own)
    forged = re.sub(r"state=[^&]+", "state=forged", callback)
    _failure(client.get(forged), 400, "does not belong to the sign-in this browser started")
    # the real answer: signed in
    client.cookies.set(FLOW_COOKIE, flow, domain="127.0.0.1", path="/auth")
    assert client.get(callback).status_code == 303
    # replayed: the flow is used up (its cookie went with the first answer)
    _failure(client.get(callback), 400, "already used")
    # replayed with the flow cookie put back (a stolen cookie jar): the provider refuses the used code
    client.cookies.set(FLOW_COOKIE, flow, domain="127.0.0.1", path="/auth")
    _failure(client.get(callback), 400, "already used")
    # a callback this browser never started
    _failure(httpx.get(env.hub + "/auth/callback?code=abc&state=xyz"), 400, "not started in this browser")


def test_an_unreachable_issuer(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    secret = tmp_path / "secret"
    secret.write_text(CLIENT_SECRET)
    hub = Cluster(tmp_path, "memory", serve_args=_oidc_args(f"http://127.0.0.1:{port}", secret)).start()
    try:
        r = httpx.get(hub.url + "/login", timeout=30)
        _failure(r, 502, "cannot reach the sign-in provider", "Try again")
    finally:
        hub.stop()


def test_no_token_code_or_secret_in_any_log_line(env: Env) -> None:
    """Runs last in this module: every flow above has been logged by now."""
    client = httpx.Client(timeout=15)
    to_callback = sign_in(client, env.hub, "dana", stop_at_callback=True)
    code = re.search(r"code=([^&]+)", to_callback.headers["location"]).group(1)  # type: ignore[union-attr]
    done = client.get(to_callback.headers["location"])
    cookie = cookie_attrs(done, COOKIE)["value"]
    logs = env.logs()
    assert "signed in" in logs  # the hubs do log sign-ins
    for secret in (code, cookie, CLIENT_SECRET, cookie.split(".")[2]):
        assert secret not in logs
    assert not re.search(r"eyJ[\w-]{10,}\.", logs), "a JWT in the logs"
    assert "Traceback" not in logs
