"""`runcast login`, `runcast whoami`, `runcast logout`: the terminal signs in with the team's provider, like
`gh auth login`, and keeps what the hub gave it in a file only the user can read.

`runcast login --hub URL` asks the hub how (`GET /auth/cli`: the provider's endpoints and the terminal's public
client). Where the provider offers the OAuth device authorization grant (RFC 8628), it prints a code and an address
to open in any browser and waits; otherwise it opens a loopback redirect (http://127.0.0.1:<port>/callback, PKCE)
in this machine's browser. Either way it gets an ID token, which the hub checks like a page's sign-in (signature,
iss, aud, exp; groups to roles) and trades for a session token (`POST /auth/token`), kept in
`$XDG_CONFIG_HOME/runcast/credentials.json` (0600). Every terminal command then uses it for that hub; RUNCAST_TOKEN
(or --token) still wins. Nothing here prints or logs a token, a code (other than the user code meant for the person)
or a secret.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.server
import json
import os
import secrets
import sys
import threading
import time
import webbrowser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HTTP_TIMEOUT_S = 15.0
LOOPBACK_WAIT_S = 300.0


class LoginError(Exception):
    """Something the person can act on: the message says what went wrong and what to do."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "runcast"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def _norm(url: str) -> str:
    return url.rstrip("/")


def load() -> dict[str, Any]:
    try:
        doc = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return {"hubs": {}}
    return doc if isinstance(doc, dict) and isinstance(doc.get("hubs"), dict) else {"hubs": {}}


def save(doc: dict[str, Any]) -> None:
    """Written whole to a new file created 0600, then renamed over the old one: never readable by others, never half."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def saved(hub: str | None) -> tuple[str, dict[str, Any]] | None:
    """The saved sign-in for `hub` (or, without one, the last hub signed in to), unless it has expired."""
    doc = load()
    url = _norm(hub) if hub else doc.get("default")
    entry = doc["hubs"].get(url) if url else None
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
        return None
    if isinstance(entry.get("expires_at"), (int, float)) and entry["expires_at"] < time.time():
        return None
    return url, entry  # type: ignore[return-value]


def token_for(url: str | None) -> str | None:
    found = saved(url)
    return found[1]["token"] if found else None


def default_hub() -> str | None:
    return load().get("default")


def saved_for_command(url: str, explicit_url: bool, default_url: str) -> tuple[str, str | None]:
    """A terminal command with no token: the saved sign-in for its hub. With no hub named (--url left at its default,
    `default_url` (terminal.DEFAULT_URL, handed in: terminal.py imports this module), and no RUNCAST_URL), the hub
    last signed in to."""
    if not explicit_url and _norm(url) == _norm(default_url) and default_hub():
        url = default_hub()  # type: ignore[assignment]
    return url, token_for(url)


# ------------------------------------------------------------------------------------------------ the flows


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _provider_error(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    return str(body.get("error_description") or body.get("error") or f"HTTP {resp.status_code}")


def device_flow(client: httpx.Client, info: dict[str, Any], out: Any, sleep: Any = time.sleep) -> str:
    """RFC 8628: a user code to enter in any browser; polls the token endpoint until the person has signed in."""
    r = client.post(
        info["device_authorization_endpoint"], data={"client_id": info["client_id"], "scope": info["scopes"]}
    )
    if r.status_code != 200:
        raise LoginError(
            f"the provider refused to start a device sign-in ({_provider_error(r)}); check the hub's "
            "--oidc-cli-client-id allows the device flow"
        )
    d = r.json()
    where = d.get("verification_uri_complete") or d["verification_uri"]
    print(
        f"Open {where} in a browser and enter the code {d['user_code']} (it is valid for "
        f"{int(d.get('expires_in', 600)) // 60} minutes). Waiting…",
        file=out,
        flush=True,
    )
    interval = float(d.get("interval", 5))
    deadline = time.monotonic() + float(d.get("expires_in", 600))
    while time.monotonic() < deadline:
        sleep(interval)
        t = client.post(
            info["token_endpoint"],
            data={"grant_type": DEVICE_GRANT, "device_code": d["device_code"], "client_id": info["client_id"]},
        )
        body = t.json() if t.content else {}
        if t.status_code == 200 and isinstance(body.get("id_token"), str):
            return body["id_token"]
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        if error == "access_denied":
            raise LoginError("the sign-in was declined in the browser; run `runcast login` again to retry")
        if error == "expired_token":
            break
        raise LoginError(f"the provider refused the sign-in ({_provider_error(t)}); run `runcast login` again")
    raise LoginError("the code expired before the sign-in was finished; run `runcast login` again")


def loopback_flow(client: httpx.Client, info: dict[str, Any], out: Any, open_browser: Any = webbrowser.open) -> str:
    """The authorization code flow with PKCE to a one-shot server on 127.0.0.1 (RFC 8252), in this machine's browser."""
    result: dict[str, str] = {}
    done = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if urlsplit(self.path).path != "/callback":
                self.send_response(404)
                self.end_headers()
                return
            result.update(q)
            ok = "code" in q
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.end_headers()
            self.wfile.write(
                b"Signed in: you can close this tab and go back to the terminal.\n"
                if ok
                else b"Sign-in did not finish: go back to the terminal.\n"
            )
            done.set()

        def log_message(self, *a: Any) -> None:  # the query holds the code: never logged
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    redirect = f"http://127.0.0.1:{server.server_address[1]}/callback"
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    url = (
        info["authorization_endpoint"]
        + "?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": info["client_id"],
                "redirect_uri": redirect,
                "scope": info["scopes"],
                "state": state,
                "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
                "code_challenge_method": "S256",
            }
        )
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        print(f"Opening your browser to sign in; if it does not open, go to:\n  {url}", file=out, flush=True)
        with contextlib.suppress(Exception):
            open_browser(url)
        if not done.wait(LOOPBACK_WAIT_S):
            raise LoginError("no sign-in within 5 minutes; run `runcast login` again")
    finally:
        server.shutdown()
        server.server_close()
    if result.get("error"):
        raise LoginError(f"the provider refused the sign-in ({result.get('error')}); run `runcast login` again")
    if not secrets.compare_digest(result.get("state", ""), state):
        raise LoginError("the sign-in answer does not belong to this sign-in; run `runcast login` again")
    t = client.post(
        info["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": result.get("code", ""),
            "redirect_uri": redirect,
            "client_id": info["client_id"],
            "code_verifier": verifier,
        },
    )
    body = t.json() if t.content else {}
    if t.status_code != 200 or not isinstance(body.get("id_token"), str):
        raise LoginError(f"the provider did not hand out an ID token ({_provider_error(t)}); run `runcast login` again")
    return body["id_token"]


def login(hub: str, out: Any = sys.stdout, method: str = "auto") -> dict[str, Any]:
    hub = _norm(hub)
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        try:
            r = client.get(hub + "/auth/cli")
        except httpx.HTTPError as exc:
            raise LoginError(f"cannot reach the hub at {hub} ({type(exc).__name__}); check --hub") from None
        if r.status_code != 200:
            raise LoginError(
                f"{hub} has no sign-in for the terminal ({_provider_error_hub(r)}); ask whoever runs it "
                "for a token and set RUNCAST_TOKEN"
            )
        info = r.json()
        try:
            if info.get("device_authorization_endpoint") and method in ("auto", "device"):
                id_token = device_flow(client, info, out)
            else:
                id_token = loopback_flow(client, info, out)
        except httpx.HTTPError as exc:
            raise LoginError(
                f"cannot reach the sign-in provider ({type(exc).__name__}); try again in a minute"
            ) from None
        t = client.post(hub + "/auth/token", json={"id_token": id_token})
        if t.status_code != 200:
            raise LoginError(f"the hub refused the sign-in: {_provider_error_hub(t)}")
        got = t.json()
    doc = load()
    doc["hubs"][hub] = {"token": got["token"], "user": got["user"], "expires_at": got["expires_at"]}
    doc["default"] = hub
    save(doc)
    return got


def _provider_error_hub(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {resp.status_code}"


# ------------------------------------------------------------------------------------------------ commands


def cmd_login(args: argparse.Namespace) -> None:
    try:
        got = login(args.hub, method=args.method)
    except LoginError as err:
        print(f"runcast login: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    u = got["user"]
    print(
        f"Signed in to {_norm(args.hub)} as {u['name']} ({u['sub']}; {', '.join(u['roles'])}), until "
        f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(got['expires_at']))}. Saved in {credentials_path()}."
    )


def cmd_whoami(args: argparse.Namespace) -> None:
    env_token = os.environ.get("RUNCAST_TOKEN")
    hub = _norm(args.hub or os.environ.get("RUNCAST_URL") or default_hub() or "http://127.0.0.1:8765")
    token = env_token or token_for(hub)
    if not token:
        print(
            f"runcast whoami: not signed in to {hub}: run `runcast login --hub {hub}` (or set RUNCAST_TOKEN)",
            file=sys.stderr,
        )
        raise SystemExit(1)
    try:
        r = httpx.get(hub + "/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        print(f"runcast whoami: cannot reach {hub} ({type(exc).__name__})", file=sys.stderr)
        raise SystemExit(1) from None
    if r.status_code != 200:
        print(
            f"runcast whoami: {hub} refused the {'RUNCAST_TOKEN' if env_token else 'saved sign-in'} "
            f"({_provider_error_hub(r)}); run `runcast login --hub {hub}`",
            file=sys.stderr,
        )
        raise SystemExit(1)
    me = r.json()
    source = "RUNCAST_TOKEN" if env_token else f"signed in, saved in {credentials_path()}"
    print(f"{me['name']} ({me['sub']}) on {hub}: {', '.join(me['roles']) or 'no roles'} [{source}]")


def cmd_logout(args: argparse.Namespace) -> None:
    doc = load()
    hub = _norm(args.hub) if args.hub else doc.get("default")
    if not hub or hub not in doc["hubs"]:
        print(f"runcast logout: not signed in{f' to {hub}' if hub else ''}")
        return
    del doc["hubs"][hub]
    if doc.get("default") == hub:
        doc["default"] = next(iter(doc["hubs"]), None)
    save(doc)
    print(f"Signed out of {hub} (its saved sign-in is removed from {credentials_path()}).")


def add_commands(sub: Any) -> None:
    lg = sub.add_parser("login", help="sign in to a hub with your team's identity provider (like gh auth login)")
    lg.add_argument("--hub", required=True, metavar="URL", help="the hub, e.g. https://runcast.example.com")
    lg.add_argument(
        "--method",
        choices=["auto", "device", "browser"],
        default="auto",
        help="device: a code to enter in any browser (where the provider offers it); browser: this "
        "machine's browser and a loopback redirect; auto: device if offered",
    )
    lg.set_defaults(func=cmd_login)
    wh = sub.add_parser("whoami", help="who the hub says you are (RUNCAST_TOKEN, else your saved sign-in)")
    wh.add_argument("--hub", metavar="URL", help="default: $RUNCAST_URL, else the hub you last signed in to")
    wh.set_defaults(func=cmd_whoami)
    lo = sub.add_parser("logout", help="forget the saved sign-in for a hub")
    lo.add_argument("--hub", metavar="URL", help="default: the hub you last signed in to")
    lo.set_defaults(func=cmd_logout)
