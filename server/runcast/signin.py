"""Signing people in on the page: OpenID Connect (authorization code flow with PKCE) or, in the demo only, a dev page
listing the demo's people. Either ends with the hub's own session, a cookie every tab, reload and hub node accepts.

- `GET /login?next=/#run=...` starts it. The flow's state (state, nonce, PKCE verifier, where to go back) is kept in
  a short-lived cookie signed by the hub (`runcast_signin`, path /auth), so any node can finish a flow another began.
- `GET /auth/callback` checks the state against that cookie, trades the code for tokens (with the client secret and
  the PKCE verifier), checks the ID token against the issuer's JWKS (signature, iss, aud, exp, nonce), maps its
  groups to roles, sets `runcast_session` (HttpOnly, SameSite=Lax, Secure behind https) and goes back to `next`.
- `POST /auth/refresh` renews the session (a new cookie) and hands the page a session token for its WebSocket: the
  page's client sends it in a renewing `hello`, so a session nearing its end never drops a subscription.
- `POST /auth/logout` ends it.

Every failure answers a page that says what went wrong and how to retry (never a 500), and nothing here logs a
token, a code or a secret: only what kind of failure it was.
"""

from __future__ import annotations

import base64
import hashlib
import html
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import jwt
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from . import auth
from .protocol import ErrorCode, ProtocolError

log = logging.getLogger("runcast.signin")
COOKIE = "runcast_session"
FLOW_COOKIE = "runcast_signin"
FLOW_TTL_S = 600  # a sign-in at the provider may take this long (a password manager, a second factor)
SESSION_TTL_S = 8 * 3600  # a working day; the page renews it while it is open (POST /auth/refresh)
CLI_SESSION_TTL_S = 7 * 86400  # `runcast login` is good for a week (then sign in again; RUNCAST_TOKEN still wins)
HTTP_TIMEOUT_S = 10.0
DISCOVERY_MAX_AGE_S = 3600.0


@dataclass
class OidcConfig:
    issuer: str
    client_id: str
    client_secret: str | None
    roles_claim: str = "groups"
    role_map: dict[str, list[str]] = field(default_factory=dict)  # provider group -> Runcast roles
    scopes: str = "openid profile email"
    cli_client_id: str | None = None  # a public client for `runcast login` (device flow, or a loopback redirect)

    def roles(self, claims: dict[str, Any]) -> tuple[list[str], list[str]]:
        """(the roles the groups map to, the groups the token named)."""
        groups = auth.strings(auth.claim(claims, self.roles_claim))
        roles: list[str] = []
        for g in groups:
            for r in self.role_map.get(g, []):
                if r not in roles:
                    roles.append(r)
        return roles, groups


def parse_role_map(text: str) -> dict[str, list[str]]:
    """`GROUP=ROLE,GROUP=ROLE` (a group may be named twice for two roles; `GROUP=ROLE+ROLE` also works)."""
    out: dict[str, list[str]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        group, sep, roles = part.rpartition("=")
        if not sep or not group.strip() or not roles.strip():
            raise ValueError(f"--oidc-role-map: {part!r} is not GROUP=ROLE")
        for role in roles.split("+"):
            role = role.strip()
            if role not in auth.ROLES and role != "metrics":
                raise ValueError(f"--oidc-role-map: {role!r} is not a role ({', '.join(auth.ROLES)}, metrics)")
            out.setdefault(group.strip(), []).append(role)
    return out


DEV_PEOPLE = [  # the demo's people (make demo): who they are and what they may do
    auth.Identity("dana", "Dana", ("admin",)),
    auth.Identity("alex", "Alex", ("approver",)),
    auth.Identity("vic", "Vic", ("viewer",)),
]
DEV_WHAT = {"admin": "starts runs, decides", "approver": "decides", "viewer": "only watches"}


@dataclass
class SigninConfig:
    oidc: OidcConfig | None = None
    dev_people: list[auth.Identity] | None = None  # the dev sign-in page (demo only)
    session_ttl_s: float = SESSION_TTL_S
    public_url: str | None = None  # the hub's address as people open it (for redirect_uri); else the request's


class SigninError(Exception):
    """A failure the person can do something about: `what` went wrong, `todo` says how to retry."""

    def __init__(self, what: str, todo: str, status: int = 400) -> None:
        super().__init__(what)
        self.what, self.todo, self.status = what, todo, status


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this hub, never another site (no open redirect). `//evil`,
    `/\\evil`, `https://evil` and anything with a scheme or host fall back to the page."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in value):
        return "/"
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
    """A small page in the hub's style (no inline script or style: the CSP forbids both)."""
    doc = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width,initial-scale=1"><title>{html.escape(title)} · Runcast</title>'
        f'<link rel="icon" href="/static/favicon.svg"><link rel="stylesheet" href="/static/app.css"></head>'
        f'<body class="signin-page"><main class="signin"><h1>{html.escape(title)}</h1>{body}</main></body></html>'
    )
    return HTMLResponse(doc, status_code=status, headers={"Cache-Control": "no-store"})


class Signin:
    """The routes above, for one hub node. Stateless across nodes: the flow and the session live in signed cookies."""

    def __init__(
        self,
        config: SigninConfig,
        authn: auth.Authenticator,
        flow_secret: str,
        allowed_origins: list[str] | None = None,
    ) -> None:
        self.config = config
        self.auth = authn
        self.flow_key = auth.derive_key(flow_secret, "signin-flow")
        self.allowed_origins = allowed_origins or []
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._jwks: auth.JwksKeys | None = None

    # ------------------------------------------------------------------ helpers
    def _secure(self, request: Request) -> bool:
        if self.config.public_url:
            return self.config.public_url.startswith("https://")
        return request.url.scheme == "https"

    def _base(self, request: Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}"

    def set_session(self, resp: Response, request: Request, who: auth.Identity, token: str | None = None) -> str:
        token = token or self.auth.issue_session(who, self.config.session_ttl_s)
        resp.set_cookie(
            COOKIE,
            token,
            max_age=int(self.config.session_ttl_s),
            path="/",
            httponly=True,
            samesite="lax",
            secure=self._secure(request),
        )
        return token

    def _error(self, err: SigninError, request: Request) -> HTMLResponse:
        nxt = safe_next(request.query_params.get("next"))
        again = "/login" + (f"?{urlencode({'next': nxt})}" if nxt != "/" else "")
        resp = page(
            "Sign-in did not work",
            f'<p class="what">{html.escape(err.what)}</p><p class="todo">{html.escape(err.todo)}</p>'
            f'<p><a class="button" href="{html.escape(again)}">Sign in again</a></p>',
            err.status,
        )
        resp.delete_cookie(FLOW_COOKIE, path="/auth")
        return resp

    def _same_origin(self, request: Request) -> bool:
        from .hosts import from_own_page

        return from_own_page(request.headers, request.url.scheme, [o for o in self.allowed_origins if o != "*"])

    # ------------------------------------------------------------------ GET /login
    async def login(self, request: Request) -> Response:
        nxt = safe_next(request.query_params.get("next"))
        try:
            if self.config.oidc is not None:
                return await self._oidc_start(request, nxt)
            if self.config.dev_people is not None:
                return self._dev_page(nxt)
        except SigninError as err:
            return self._error(err, request)
        return page(
            "No sign-in here",
            "<p>This hub signs no one in on the page: it takes tokens only (ask whoever runs it for one).</p>",
            404,
        )

    async def _discover(self) -> dict[str, Any]:
        import httpx

        cfg = self.config.oidc
        assert cfg is not None
        if self._discovery is not None and time.monotonic() - self._discovered_at < DISCOVERY_MAX_AGE_S:
            return self._discovery
        url = cfg.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                resp = await client.get(url, headers={"Accept": "application/json"})
            resp.raise_for_status()
            doc = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("sign-in: cannot read the provider's discovery document at %s (%s)", url, type(exc).__name__)
            raise SigninError(
                "The hub cannot reach the sign-in provider right now.",
                "Try again in a minute. If it keeps failing, whoever runs this hub should check "
                "--oidc-issuer and that the hub can reach it.",
                502,
            ) from None
        needed = ("authorization_endpoint", "token_endpoint", "jwks_uri", "issuer")
        if not isinstance(doc, dict) or any(not isinstance(doc.get(k), str) for k in needed):
            raise SigninError(
                "The sign-in provider's configuration is incomplete.",
                "Whoever runs this hub should check --oidc-issuer.",
                502,
            )
        if doc["issuer"].rstrip("/") != cfg.issuer.rstrip("/"):
            log.warning("sign-in: the provider says its issuer is %s, not --oidc-issuer %s", doc["issuer"], cfg.issuer)
            raise SigninError(
                "The sign-in provider names another issuer than the one this hub is set up with.",
                "Whoever runs this hub should set --oidc-issuer to the provider's issuer exactly.",
                502,
            )
        if self._jwks is None or self._jwks.url != doc["jwks_uri"]:
            self._jwks = auth.JwksKeys(doc["jwks_uri"])
        self._discovery, self._discovered_at = doc, time.monotonic()
        return doc

    async def _oidc_start(self, request: Request, nxt: str) -> Response:
        cfg = self.config.oidc
        assert cfg is not None
        doc = await self._discover()
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        flow = jwt.encode(
            {"state": state, "nonce": nonce, "verifier": verifier, "next": nxt, "exp": int(time.time()) + FLOW_TTL_S},
            self.flow_key,
            algorithm="HS256",
        )
        query = {
            "response_type": "code",
            "client_id": cfg.client_id,
            "redirect_uri": self._base(request) + "/auth/callback",
            "scope": cfg.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
            "code_challenge_method": "S256",
        }
        sep = "&" if "?" in doc["authorization_endpoint"] else "?"
        resp = RedirectResponse(doc["authorization_endpoint"] + sep + urlencode(query), status_code=302)
        resp.set_cookie(
            FLOW_COOKIE,
            flow,
            max_age=FLOW_TTL_S,
            path="/auth",
            httponly=True,
            samesite="lax",
            secure=self._secure(request),
        )
        resp.headers["Cache-Control"] = "no-store"
        return resp

    # ------------------------------------------------------------------ GET /auth/callback
    async def callback(self, request: Request) -> Response:
        try:
            if self.config.oidc is None:
                raise SigninError("This hub has no sign-in provider.", "Open the page and sign in from there.", 404)
            return await self._callback(request)
        except SigninError as err:
            return self._error(err, request)

    def _flow(self, request: Request) -> dict[str, Any]:
        raw = request.cookies.get(FLOW_COOKIE)
        restart = "Start again from the page (Sign in); it takes a few seconds."
        if not raw:
            raise SigninError("This sign-in was not started in this browser, or it was already used.", restart)
        try:
            flow = jwt.decode(raw, self.flow_key, algorithms=["HS256"], options={"require": ["exp", "state"]})
        except jwt.ExpiredSignatureError:
            raise SigninError("This sign-in took too long (over 10 minutes).", restart) from None
        except jwt.PyJWTError:
            raise SigninError("This sign-in's saved state is not valid.", restart) from None
        if not secrets.compare_digest(str(flow["state"]), request.query_params.get("state", "")):
            log.warning("sign-in: a callback whose state does not match its browser's flow (replayed or forged)")
            raise SigninError(
                "This sign-in answer does not belong to the sign-in this browser started (a replayed or forged link).",
                restart,
            )
        return flow

    async def _callback(self, request: Request) -> Response:
        import httpx

        cfg = self.config.oidc
        assert cfg is not None
        q = request.query_params
        if q.get("error"):
            self._flow(request)  # the state must still be ours: another site cannot show this page in our name
            log.info("sign-in: the provider answered %s", q.get("error"))
            if q["error"] == "access_denied":
                raise SigninError(
                    "Sign-in was declined at the provider (consent denied or cancelled).",
                    "Sign in again and allow Runcast to know who you are; it asks only for your "
                    "name, email and groups.",
                    403,
                )
            raise SigninError(
                f"The sign-in provider refused: {q['error']}"
                f"{(' (' + q['error_description'][:200] + ')') if q.get('error_description') else ''}.",
                "Sign in again; if it keeps failing, whoever runs this hub should check the "
                "client's settings at the provider.",
                400,
            )
        flow = self._flow(request)
        code = q.get("code")
        if not code:
            raise SigninError("The sign-in provider sent no code back.", "Start again from the page (Sign in).")
        doc = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._base(request) + "/auth/callback",
            "code_verifier": flow["verifier"],
            "client_id": cfg.client_id,
        }
        basic = (cfg.client_id, cfg.client_secret) if cfg.client_secret else None
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as client:
                resp = await client.post(
                    doc["token_endpoint"],
                    data=form,
                    auth=basic,  # type: ignore[arg-type]
                    headers={"Accept": "application/json"},
                )
            body = resp.json() if resp.content else {}
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("sign-in: the token endpoint could not be read (%s)", type(exc).__name__)
            raise SigninError(
                "The hub cannot reach the sign-in provider right now.", "Try again in a minute (Sign in again).", 502
            ) from None
        if resp.status_code != 200 or not isinstance(body, dict) or not isinstance(body.get("id_token"), str):
            error = body.get("error") if isinstance(body, dict) else None
            log.warning("sign-in: the token endpoint answered %s %s", resp.status_code, error or "")
            if error == "invalid_client":
                raise SigninError(
                    "The sign-in provider does not accept this hub's client id or secret.",
                    "Whoever runs this hub should check --oidc-client-id and --oidc-client-secret-file "
                    "against the provider's settings; then sign in again.",
                    502,
                )
            if error == "invalid_grant":
                raise SigninError(
                    "The sign-in code was refused: it was already used, has expired, or was not "
                    "issued for this sign-in.",
                    "Start again from the page (Sign in).",
                    400,
                )
            raise SigninError(
                "The sign-in provider did not hand out an ID token.",
                "Sign in again; if it keeps failing, whoever runs this hub should check the client's "
                "settings at the provider.",
                502,
            )
        claims = await self._id_token(body["id_token"], doc, flow["nonce"])
        who = self._person(claims)
        roles = list(who.roles)
        answer = RedirectResponse(flow["next"], status_code=303)
        self.set_session(answer, request, who)
        answer.delete_cookie(FLOW_COOKIE, path="/auth")
        answer.headers["Cache-Control"] = "no-store"
        log.info("sign-in: %s (%s) signed in", who.sub, ",".join(roles))
        return answer

    def _person(self, claims: dict[str, Any]) -> auth.Identity:
        """Who the ID token names, with the roles their groups map to; no role at all is a failure that says why."""
        cfg = self.config.oidc
        assert cfg is not None
        roles, groups = cfg.roles(claims)
        who = auth.identity_from(claims | {"roles": roles}, "roles", "name")
        if not roles:
            log.info("sign-in: %s signed in but their groups map to no role", who.sub)
            shown = ", ".join(groups) if groups else f"none (no '{cfg.roles_claim}' claim)"
            wanted = ", ".join(sorted(cfg.role_map)) or "(no --oidc-role-map is set)"
            raise SigninError(
                f"You signed in as {who.name}, but your groups give you no role on this hub. Your groups: {shown}.",
                f"Ask whoever runs this hub to add you to one of these groups: {wanted}. Then sign in again.",
                403,
            )
        return who

    async def _id_token(
        self, token: str, doc: dict[str, Any], nonce: str | None, audience: str | None = None
    ) -> dict[str, Any]:
        cfg = self.config.oidc
        assert cfg is not None and self._jwks is not None
        retry = "Sign in again."
        try:
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if alg not in auth.ASYMMETRIC:
                raise SigninError(
                    f"The provider signed the ID token with {alg!r}, which this hub does not accept.",
                    "Whoever runs this hub should set the client to sign ID tokens with RS256, ES256 or EdDSA.",
                    502,
                )
            kid = header.get("kid")
            key = await self._jwks.key(kid if isinstance(kid, str) else None)
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=audience or cfg.client_id,
                issuer=doc["issuer"],
                options={"require": ["sub", "exp", "iat", "aud", "iss"]},
                leeway=auth.LEEWAY_S,
            )
        except ProtocolError as err:
            log.warning("sign-in: the ID token's key: %s", err.message)
            raise SigninError("The ID token's key could not be found at the provider.", retry, 502) from None
        except jwt.ExpiredSignatureError:
            log.warning("sign-in: an expired ID token")
            raise SigninError(
                "The provider's ID token had already expired (is this machine's clock right?).", retry, 400
            ) from None
        except jwt.InvalidAudienceError:
            log.warning("sign-in: an ID token for another client")
            raise SigninError(
                "The provider's ID token was issued for another application.",
                "Whoever runs this hub should check --oidc-client-id; then sign in again.",
                400,
            ) from None
        except jwt.PyJWTError as exc:
            log.warning("sign-in: an ID token that does not verify: %s", type(exc).__name__)
            raise SigninError(f"The provider's ID token did not verify ({exc}).", retry, 400) from None
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")), nonce):
            log.warning("sign-in: an ID token whose nonce is not this sign-in's (replayed)")
            raise SigninError("The ID token does not belong to this sign-in (replayed).", retry, 400)
        return claims

    # ------------------------------------------------------------------ the demo's dev sign-in
    def _dev_page(self, nxt: str) -> Response:
        assert self.config.dev_people is not None
        rows = "".join(
            f'<li><form method="post" action="/auth/dev"><input type="hidden" name="sub" value="{html.escape(p.sub)}">'
            f'<input type="hidden" name="next" value="{html.escape(nxt)}"><button type="submit">{html.escape(p.name)}'
            f'</button> <span class="role">{html.escape(", ".join(p.roles))}: '
            f"{html.escape(DEV_WHAT.get(p.roles[0], ''))}</span></form></li>"
            for p in self.config.dev_people
        )
        return page(
            "Sign in to the demo",
            "<p>This hub runs in dev mode (no identity provider): pick who you are. "
            f'With <code>--oidc-issuer</code> people sign in with your company\'s provider.</p><ul class="people">'
            f"{rows}</ul>",
        )

    async def dev(self, request: Request) -> Response:
        if self.config.dev_people is None:
            return page("No dev sign-in", "<p>This hub is not in dev mode.</p>", 404)
        if not self._same_origin(request):
            return self._error(
                SigninError(
                    "This sign-in did not come from this hub's page.", "Open the sign-in page and pick a person there."
                ),
                request,
            )
        form = await request.form()
        person = next((p for p in self.config.dev_people if p.sub == form.get("sub")), None)
        if person is None:
            return self._error(
                SigninError("There is no such person in the demo.", "Pick one on the sign-in page."), request
            )
        resp = RedirectResponse(safe_next(str(form.get("next") or "/")), status_code=303)
        self.set_session(resp, request, person)
        return resp

    # ------------------------------------------------------------------ the session: renew, look, end
    async def refresh(self, request: Request) -> Response:
        """POST /auth/refresh: a new session cookie, and its token for the page's WebSocket (a renewing hello). Only
        for this hub's own page (Origin): another site cannot read the answer, nor make the browser renew."""
        if not self._same_origin(request):
            return JSONResponse(
                {"error": {"code": ErrorCode.FORBIDDEN, "message": "only this hub's page may renew its session"}},
                status_code=403,
            )
        raw = request.cookies.get(COOKIE)
        try:
            if not raw:
                raise ProtocolError(ErrorCode.UNAUTHENTICATED, "not signed in: open /login")
            who = self.auth.session(raw)
        except ProtocolError as err:
            resp = JSONResponse(
                {"error": {"code": err.code, "message": err.message, "login": "/login"}}, status_code=401
            )
            if raw:
                resp.delete_cookie(COOKIE, path="/")
            return resp
        token = self.auth.issue_session(who, self.config.session_ttl_s)
        resp = JSONResponse(
            {"user": who.public(), "token": token, "expires_at": int(time.time() + self.config.session_ttl_s)},
            headers={"Cache-Control": "no-store"},
        )
        self.set_session(resp, request, who, token)
        return resp

    async def logout(self, request: Request) -> Response:
        if not self._same_origin(request):
            return self._error(
                SigninError("This sign-out did not come from this hub's page.", "Use Sign out on the page."), request
            )
        resp = page(
            "Signed out",
            '<p>You are signed out of this hub.</p><p><a class="button" href="/login">Sign in again</a></p>',
        )
        resp.delete_cookie(COOKIE, path="/")
        return resp

    async def status(self, request: Request) -> Response:
        """GET /auth/session: who the cookie is, without renewing (the page asks before it connects)."""
        raw = request.cookies.get(COOKIE)
        modes = {"oidc": self.config.oidc is not None, "dev": self.config.dev_people is not None}
        if raw:
            try:
                who = self.auth.session(raw)
                return JSONResponse(
                    {"user": who.public(), "expires_at": who.exp, "login": "/login", **modes},
                    headers={"Cache-Control": "no-store"},
                )
            except ProtocolError:
                pass
        return JSONResponse({"user": None, "login": "/login", **modes}, headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------ the terminal (runcast login)
    async def cli(self, request: Request) -> Response:
        """GET /auth/cli: how `runcast login` signs in here (the provider's endpoints and the terminal's client)."""
        cfg = self.config.oidc
        if cfg is None or not cfg.cli_client_id:
            return JSONResponse(
                {
                    "error": {
                        "code": ErrorCode.NOT_FOUND,
                        "message": "this hub has no sign-in for the terminal (--oidc-cli-client-id); use RUNCAST_TOKEN",
                    }
                },
                status_code=404,
            )
        try:
            doc = await self._discover()
        except SigninError as err:
            return JSONResponse(
                {"error": {"code": "unavailable", "message": f"{err.what} {err.todo}"}}, status_code=502
            )
        return JSONResponse(
            {
                "issuer": doc["issuer"],
                "client_id": cfg.cli_client_id,
                "scopes": cfg.scopes,
                "authorization_endpoint": doc["authorization_endpoint"],
                "token_endpoint": doc["token_endpoint"],
                "device_authorization_endpoint": doc.get("device_authorization_endpoint"),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def cli_token(self, request: Request) -> Response:
        """POST /auth/token {"id_token"}: the terminal's ID token (for --oidc-cli-client-id) for a hub session token
        that `runcast login` keeps. A page cannot use it to mint sessions: it takes no cookie and gives none."""
        cfg = self.config.oidc

        def refuse(status: int, code: str, message: str) -> JSONResponse:
            return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)

        if cfg is None or not cfg.cli_client_id:
            return refuse(404, ErrorCode.NOT_FOUND, "this hub has no sign-in for the terminal")
        try:
            body = await request.json()
        except ValueError:
            return refuse(400, ErrorCode.BAD_REQUEST, 'send {"id_token": "..."}')
        token = body.get("id_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or len(token) > 16384:
            return refuse(400, ErrorCode.BAD_REQUEST, 'send {"id_token": "..."}')
        try:
            doc = await self._discover()
            who = self._person(await self._id_token(token, doc, None, audience=cfg.cli_client_id))
        except SigninError as err:
            return refuse(403 if err.status == 403 else 401, ErrorCode.UNAUTHENTICATED, f"{err.what} {err.todo}")
        session = self.auth.issue_session(who, CLI_SESSION_TTL_S)
        log.info("sign-in: %s (%s) signed in from a terminal", who.sub, ",".join(who.roles))
        return JSONResponse(
            {"token": session, "user": who.public(), "expires_at": int(time.time() + CLI_SESSION_TTL_S)},
            headers={"Cache-Control": "no-store"},
        )
