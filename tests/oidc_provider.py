"""The test OpenID Provider (tests/oidc/provider.mjs: the npm package oidc-provider) as a subprocess on a free port,
and a browserless sign-in through its real login and consent pages (httpx, following every redirect by hand)."""

from __future__ import annotations

import json
import re
import subprocess
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

HERE = Path(__file__).resolve().parent / "oidc"
CLIENT_SECRET = "runcast-test-client-secret-0123456789"
ROLE_MAP = "ops=admin,oncall=approver,eng=viewer"


class OidcProvider:
    def __init__(self, redirect_uris: list[str], log_path: Path, secret: str = CLIENT_SECRET) -> None:
        self.redirect_uris, self.log_path, self.secret = redirect_uris, log_path, secret
        self.proc: subprocess.Popen[bytes] | None = None
        self.issuer = ""

    def start(self) -> "OidcProvider":
        if not (HERE / "node_modules" / "oidc-provider").exists():
            raise RuntimeError(f"the test OpenID Provider is not installed: run `npm ci` in {HERE} (make test does)")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["node", str(HERE / "provider.mjs"),
                                      json.dumps({"redirect_uris": self.redirect_uris, "secret": self.secret})],
                                     stdout=subprocess.PIPE, stderr=log, cwd=HERE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the test OpenID Provider did not start: {self.log_path.read_text()[-2000:]}")
        self.issuer = json.loads(line)["issuer"]
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def next_id_token(self, mode: str) -> None:
        """The next ID token the token endpoint hands out is `expired` or for another client (`wrong-aud`)."""
        httpx.post(self.issuer + "/__test/next-id-token", json={"mode": mode}, timeout=10).raise_for_status()


def _form(page: str, prompt: str | None = None) -> str:
    """The action of the provider page's form (the one for `prompt`, when the page has several)."""
    for m in re.finditer(r'<form[^>]*action="([^"]+)"[^>]*method="post"[^>]*>(.*?)</form>', page, re.S):
        if prompt is None or f'value="{prompt}"' in m.group(2):
            return unescape(m.group(1))
    raise AssertionError(f"no form for {prompt} in the provider's page:\n{page[:2000]}")


def sign_in(client: httpx.Client, hub: str, login: str, next_: str | None = None, consent: bool = True,
            stop_at_callback: bool = False) -> httpx.Response:
    """Sign in as `login` through the provider's own pages. Returns the hub's answer to /auth/callback (or, with
    stop_at_callback, the provider's redirect to it, not yet followed)."""
    r = client.get(hub + "/login", params={"next": next_} if next_ is not None else None)
    for _ in range(20):
        if r.is_redirect:
            url = urljoin(str(r.url), r.headers["location"])
            if url.startswith(hub + "/auth/callback") and stop_at_callback:
                return r
            r = client.get(url)
            if url.startswith(hub + "/auth/callback"):
                return r
            continue
        if r.status_code != 200 or str(r.url).startswith(hub):
            return r  # an error page (the hub's, or the provider's)
        page = r.text
        if 'name="login"' in page:
            r = client.post(urljoin(str(r.url), _form(page, "login")),
                            data={"prompt": "login", "login": login, "password": "any"})
        elif 'value="consent"' in page:
            if not consent:
                m = re.search(r'href="([^"]*/abort)"', page)
                assert m, page[:2000]
                r = client.get(urljoin(str(r.url), unescape(m.group(1))))
            else:
                r = client.post(urljoin(str(r.url), _form(page, "consent")), data={"prompt": "consent"})
        else:
            raise AssertionError(f"an unexpected provider page:\n{page[:2000]}")
    raise AssertionError("too many redirects")


def cookie_attrs(resp: httpx.Response, name: str) -> dict[str, Any]:
    """The Set-Cookie attributes the response gives cookie `name` (lower-cased keys)."""
    for header in resp.headers.get_list("set-cookie"):
        if header.startswith(name + "="):
            parts = [p.strip() for p in header.split(";")]
            out: dict[str, Any] = {"value": parts[0].split("=", 1)[1]}
            for p in parts[1:]:
                k, _, v = p.partition("=")
                out[k.lower()] = v or True
            return out
    raise AssertionError(f"no Set-Cookie for {name}: {resp.headers.get_list('set-cookie')}")
