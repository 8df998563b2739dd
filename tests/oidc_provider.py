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
        self.proc = subprocess.Popen(
            [
                "node",
                str(HERE / "provider.mjs"),
                json.dumps({"redirect_uris": self.redirect_uris, "secret": self.secret}),
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=HERE,
        )
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


def sign_in(
    client: httpx.Client,
    hub: str,
    login: str,
    next_: str | None = None,
    consent: bool = True,
    stop_at_callback: bool = False,
) -> httpx.Response:
    """Sign in as `login` through the provider's own pages. Returns the hub's answer to /auth/callback (or, with
    stop_at_callback, the provider's redirect to it, not yet followed)."""
    r = client.get(hub + "/login", params={"next": next_} if next_ is not None else None)
    return drive(client, r, hub, login, consent, stop_at_callback)


def drive(
    client: httpx.Client,
    r: httpx.Response,
    hub: str,
    login: str,
    consent: bool = True,
    stop_at_callback: bool = False,
    callback: str = "/auth/callback",
) -> httpx.Response:
    """Through the provider's pages from `r` until it redirects to `hub` + `callback` (followed, unless told not)."""
    for _ in range(20):
        if r.is_redirect:
            url = urljoin(str(r.url), r.headers["location"])
            if url.startswith(hub + callback) and stop_at_callback:
                return r
            r = client.get(url)
            if url.startswith(hub + callback):
                return r
            continue
        if r.status_code != 200 or str(r.url).startswith(hub):
            return r  # an error page (the hub's, or the provider's)
        page = r.text
        if 'name="login"' in page:
            r = client.post(
                urljoin(str(r.url), _form(page, "login")), data={"prompt": "login", "login": login, "password": "any"}
            )
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


def _hidden(form_html: str) -> dict[str, str]:
    return {
        m.group(1): unescape(m.group(2))
        for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form_html)
    }


def device_sign_in(
    client: httpx.Client, verification_url: str, user_code: str, login: str, abort: bool = False
) -> httpx.Response:
    """What a person does in a browser for `runcast login`'s device flow: open the address, enter (or confirm) the
    code, sign in, consent. Returns the provider's last page."""
    r = client.get(verification_url)
    for _ in range(20):
        if r.is_redirect:
            r = client.get(urljoin(str(r.url), r.headers["location"]))
            continue
        page = r.text
        auto = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', page, re.S)
        if "document.forms[0].submit()" in page and auto:  # a page that posts itself on load, as a browser would
            r = client.post(urljoin(str(r.url), unescape(auto.group(1))), data=_hidden(auto.group(2)))
            continue
        m = re.search(r'<form id="op\.device(Input|Confirm)Form"[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
        if m:
            data = _hidden(m.group(3))
            if m.group(1) == "Input":
                data["user_code"] = user_code
            elif abort:
                data["abort"] = "yes"
                return client.post(urljoin(str(r.url), unescape(m.group(2))), data=data, follow_redirects=True)
            r = client.post(urljoin(str(r.url), unescape(m.group(2))), data=data)
        elif 'name="login"' in page:
            r = client.post(
                urljoin(str(r.url), _form(page, "login")), data={"prompt": "login", "login": login, "password": "any"}
            )
        elif 'value="consent"' in page:
            r = client.post(urljoin(str(r.url), _form(page, "consent")), data={"prompt": "consent"})
        else:
            return r  # the provider's success (or error) page
    raise AssertionError("too many steps")
