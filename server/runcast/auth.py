"""Tokens (PROTOCOL.md, Authentication). The token decides who someone is; no frame can claim another identity.

Three kinds are verified, side by side (`Authenticator`):
- HS256, signed with RUNCAST_SECRET (`runcast token`);
- RS256 / ES256 / EdDSA, signed with a team's own keys and checked against its JWKS (`--jwks-url`, `--jwt-issuer`,
  `--jwt-audience`): apps that embed Runcast sign their users' tokens themselves;
- the hub's own session (signin.py: the cookie set after an OIDC or dev sign-in), HS256 under a key derived from
  the session secret, with `typ: "runcast-session"`, so a session can never pass for an API token or the reverse.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from .approvals import ADMIN, Person
from .protocol import ErrorCode, ProtocolError

ROLES = ("viewer", "approver", "operator", "admin", "auditor")  # auditor: reads GET /api/audit (every run)


@dataclass(frozen=True)
class Identity:
    sub: str
    name: str
    roles: tuple[str, ...]
    runs: tuple[str, ...] = ("*",)
    exp: float | None = None
    claims: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def person(self) -> Person:
        return Person(sub=self.sub, name=self.name, roles=list(self.roles))

    def has(self, *roles: str) -> bool:
        return ADMIN in self.roles or any(r in self.roles for r in roles)

    def can_see(self, run_id: str) -> bool:
        return "*" in self.runs or run_id in self.runs

    def public(self) -> dict[str, Any]:
        return {"sub": self.sub, "name": self.name, "roles": list(self.roles)}


def issue(
    secret: str,
    sub: str,
    name: str | None = None,
    roles: list[str] | None = None,
    runs: list[str] | None = None,
    ttl_s: float | None = 3600,
) -> str:
    claims: dict[str, Any] = {
        "sub": sub,
        "name": name or sub,
        "roles": ["viewer"] if roles is None else roles,
        "runs": runs or ["*"],
        "iat": int(time.time()),
    }
    if ttl_s:
        claims["exp"] = int(time.time() + ttl_s)
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str, require_exp: bool = True) -> Identity:
    """An HS256 token signed with `secret` (RUNCAST_SECRET)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["sub", "exp"] if require_exp else ["sub"]},
            leeway=5,
        )
    except jwt.ExpiredSignatureError:
        raise ProtocolError(ErrorCode.UNAUTHENTICATED, "token expired; ask for a new one") from None
    except jwt.PyJWTError as exc:
        raise ProtocolError(ErrorCode.UNAUTHENTICATED, f"invalid token: {exc}") from None
    roles, runs = claims.get("roles", []), claims.get("runs", ["*"])  # no roles claim: no roles (watching needs one)
    if not isinstance(claims["sub"], str) or not isinstance(roles, list) or not isinstance(runs, list):
        raise ProtocolError(ErrorCode.UNAUTHENTICATED, "invalid token: sub must be a string, roles and runs lists")
    if not claims["sub"].strip():
        raise ProtocolError(ErrorCode.UNAUTHENTICATED, "invalid token: sub is empty (a token must name who it is)")
    return Identity(
        sub=claims["sub"],
        name=str(claims.get("name") or claims["sub"]),
        roles=tuple(str(r) for r in roles),
        runs=tuple(str(r) for r in runs),
        exp=float(claims["exp"]) if "exp" in claims else None,
        claims=claims,
    )


log = logging.getLogger("runcast.auth")
ASYMMETRIC = ("RS256", "ES256", "EdDSA")  # what --jwks-url verifies
SESSION_TYP = "runcast-session"
LEEWAY_S = 5
# An unknown `kid` refetches the JWKS at most once per this many seconds: a flood of made-up kids costs the provider
# one request per interval, not one per connection (a real rotation is seen within it).
JWKS_MIN_REFETCH_S = 10.0
# Known keys are fetched again after this long, in the background (a removed key stops being accepted).
JWKS_MAX_AGE_S = 300.0
JWKS_TIMEOUT_S = 5.0


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by name, or by a dotted path into nested objects (Keycloak's `realm_access.roles`). A name that is
    itself a key (`https://example.com/roles`, Auth0's namespaced claims) wins over the path."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def strings(value: Any) -> list[str]:
    """A claim that holds one name, a list of names or a space-separated string (`scope`), as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.replace(",", " ").split() if v]
    if isinstance(value, list):
        return [str(v) for v in value if isinstance(v, (str, int))]
    return []


def identity_from(claims: dict[str, Any], roles_claim: str = "roles", name_claim: str = "name") -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise ProtocolError(ErrorCode.UNAUTHENTICATED, "invalid token: sub must be a non-empty string")
    runs = claims.get("runs", ["*"])
    if not isinstance(runs, list):
        raise ProtocolError(ErrorCode.UNAUTHENTICATED, "invalid token: runs must be a list")
    name = claim(claims, name_claim) or claims.get("preferred_username") or claims.get("email") or sub
    return Identity(
        sub=sub,
        name=str(name),
        roles=tuple(strings(claim(claims, roles_claim))),
        runs=tuple(str(r) for r in runs),
        exp=float(claims["exp"]) if "exp" in claims else None,
        claims=claims,
    )


def derive_key(secret: str, purpose: str) -> bytes:
    """A key for one purpose from a shared secret: a session cookie signed with it is no API token, and the reverse."""
    return hashlib.sha256(f"runcast:{purpose}:".encode() + secret.encode()).digest()


class JwksKeys:
    """A JWKS endpoint's keys, cached. A known `kid` is answered from memory (no request per connection); an unknown
    one refetches the set, at most once per `min_refetch_s` (key rotation is seen without a restart, and made-up
    kids cannot hammer the provider); the set is refreshed in the background after `max_age_s`."""

    def __init__(
        self,
        url: str,
        min_refetch_s: float = JWKS_MIN_REFETCH_S,
        max_age_s: float = JWKS_MAX_AGE_S,
        timeout_s: float = JWKS_TIMEOUT_S,
    ) -> None:
        self.url = url
        self.min_refetch_s = min_refetch_s
        self.max_age_s = max_age_s
        self.timeout_s = timeout_s
        self.keys: dict[str, jwt.PyJWK] = {}
        self.unnamed: list[jwt.PyJWK] = []  # keys without a kid: tried when a token names none
        self.fetched_at = -1e18  # monotonic time of the last fetch attempt
        self.fetches = 0  # requests made (tests and the bench read it)
        self._inflight: asyncio.Future[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self.last_error: ProtocolError | None = None  # why the last fetch failed (said again until one succeeds)

    async def key(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        found = self._lookup(kid)
        if found is not None:
            if now - self.fetched_at > self.max_age_s and (self._refresh is None or self._refresh.done()):
                self._refresh = asyncio.create_task(self._fetch_quietly())
            return found
        if now - self.fetched_at >= self.min_refetch_s or self._inflight is not None:
            await self.fetch()
            found = self._lookup(kid)
            if found is not None:
                return found
        if self.last_error is not None and not self.keys and not self.unnamed:
            raise self.last_error
        raise ProtocolError(
            ErrorCode.UNAUTHENTICATED,
            f"invalid token: no key {kid!r} in the issuer's JWKS "
            f"(the hub looks again at most every {self.min_refetch_s:g} s)",
        )

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            if len(self.unnamed) + len(self.keys) == 1:
                return (self.unnamed or list(self.keys.values()))[0]
            return None
        return self.keys.get(kid)

    async def _fetch_quietly(self) -> None:
        try:
            await self.fetch()
        except ProtocolError as err:
            log.warning("JWKS refresh from %s failed: %s", self.url, err.message)

    async def fetch(self) -> None:
        """One request for the set, shared by every caller waiting on it."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        loop = asyncio.get_running_loop()
        self._inflight = fut = loop.create_future()
        self.fetched_at = time.monotonic()
        try:
            self._load(await self._get())
            self.last_error = None
            fut.set_result(None)
        except BaseException as exc:
            if isinstance(exc, ProtocolError):
                self.last_error = exc
            fut.set_exception(exc)
            fut.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            self._inflight = None

    async def _get(self) -> dict[str, Any]:
        import httpx

        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
                resp = await client.get(self.url, headers={"Accept": "application/json"})
            resp.raise_for_status()
            doc = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("cannot read the JWKS at %s: %s", self.url, type(exc).__name__)
            raise ProtocolError(
                ErrorCode.UNAUTHENTICATED,
                "the hub cannot read its token issuer's keys right now; try again in a moment",
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "the token issuer's JWKS has no keys list")
        return doc

    def _load(self, doc: dict[str, Any]) -> None:
        keys: dict[str, jwt.PyJWK] = {}
        unnamed: list[jwt.PyJWK] = []
        for jwk in doc["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                k = jwt.PyJWK(jwk)
            except jwt.PyJWTError:  # a key type or curve this hub cannot use: the others still work
                continue
            if isinstance(jwk.get("kid"), str):
                keys[jwk["kid"]] = k
            else:
                unnamed.append(k)
        self.keys, self.unnamed = keys, unnamed


@dataclass
class JwtConfig:
    """Tokens signed with a team's own keys (--jwks-url, --jwt-issuer, --jwt-audience, --roles-claim, --name-claim)."""

    jwks_url: str
    issuer: str | None = None
    audience: str | None = None
    roles_claim: str = "roles"
    name_claim: str = "name"
    min_refetch_s: float = JWKS_MIN_REFETCH_S


class Authenticator:
    """Every kind of token a hub accepts, side by side. `verify` is what `hello` and the HTTP API call."""

    def __init__(
        self,
        secret: str | None,
        dev: bool = False,
        jwt_config: JwtConfig | None = None,
        session_secret: str | None = None,
    ) -> None:
        self.secret = secret or None  # None: no HS256 tokens (a hub configured with --jwks-url or OIDC only)
        self.dev = dev
        self.jwt = jwt_config
        self.jwks = JwksKeys(jwt_config.jwks_url, jwt_config.min_refetch_s) if jwt_config else None
        self.session_key = derive_key(session_secret, "session") if session_secret else None

    async def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, f"invalid token: {exc}") from None
        alg = header.get("alg")
        if alg == "HS256":
            if header.get("typ") == SESSION_TYP:
                return self.session(token)
            if self.secret is None:
                raise ProtocolError(
                    ErrorCode.UNAUTHENTICATED,
                    "this hub takes no HS256 tokens (no RUNCAST_SECRET): "
                    "sign in, or use a token signed with your issuer's keys",
                )
            return verify(self.secret, token, require_exp=not self.dev)
        if alg in ASYMMETRIC and self.jwks is not None and self.jwt is not None:
            kid = header.get("kid")
            key = await self.jwks.key(kid if isinstance(kid, str) else None)
            return self._asymmetric(token, key, alg)
        accepted = ["HS256"] if self.secret else []
        accepted += list(ASYMMETRIC) if self.jwks else []
        raise ProtocolError(
            ErrorCode.UNAUTHENTICATED,
            f"invalid token: alg {alg!r} is not accepted here "
            f"(this hub verifies {', '.join(accepted) or 'sessions only'})",
        )

    def _asymmetric(self, token: str, key: jwt.PyJWK, alg: str) -> Identity:
        assert self.jwt is not None
        cfg = self.jwt
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=cfg.audience,
                issuer=cfg.issuer,
                options={"require": ["sub", "exp"], "verify_aud": cfg.audience is not None},
                leeway=LEEWAY_S,
            )
        except jwt.ExpiredSignatureError:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "token expired; ask for a new one") from None
        except jwt.PyJWTError as exc:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, f"invalid token: {exc}") from None
        return identity_from(claims, cfg.roles_claim, cfg.name_claim)

    # ------------------------------------------------------------------ the hub's own sessions
    def issue_session(self, who: Identity, ttl_s: float, extra: dict[str, Any] | None = None) -> str:
        if self.session_key is None:
            raise RuntimeError("no session secret")
        now = int(time.time())
        claims = {
            "sub": who.sub,
            "name": who.name,
            "roles": list(who.roles),
            "runs": list(who.runs),
            "iat": now,
            "exp": now + int(ttl_s),
            **(extra or {}),
        }
        return jwt.encode(claims, self.session_key, algorithm="HS256", headers={"typ": SESSION_TYP})

    def session(self, token: str) -> Identity:
        """A session the hub itself issued (its cookie, or the token /auth/session hands the page for renewal)."""
        if self.session_key is None:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "this hub has no sign-in sessions")
        try:
            if jwt.get_unverified_header(token).get("typ") != SESSION_TYP:
                raise ProtocolError(ErrorCode.UNAUTHENTICATED, "invalid session")
            claims = jwt.decode(
                token, self.session_key, algorithms=["HS256"], options={"require": ["sub", "exp"]}, leeway=LEEWAY_S
            )
        except jwt.ExpiredSignatureError:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "your sign-in has expired: sign in again") from None
        except jwt.PyJWTError:
            raise ProtocolError(ErrorCode.UNAUTHENTICATED, "invalid session: sign in again") from None
        return identity_from(claims)
