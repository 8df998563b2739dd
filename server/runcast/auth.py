"""HS256 tokens (PROTOCOL.md, Authentication). The token decides who someone is; no frame can claim another identity."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from .approvals import ADMIN, Person
from .protocol import ErrorCode, ProtocolError

ROLES = ("viewer", "approver", "operator", "admin")


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


def issue(secret: str, sub: str, name: str | None = None, roles: list[str] | None = None,
          runs: list[str] | None = None, ttl_s: float | None = 3600) -> str:
    claims: dict[str, Any] = {"sub": sub, "name": name or sub, "roles": ["viewer"] if roles is None else roles,
                              "runs": runs or ["*"], "iat": int(time.time())}
    if ttl_s:
        claims["exp"] = int(time.time() + ttl_s)
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str, require_exp: bool = True) -> Identity:
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"] if require_exp else ["sub"]}, leeway=5
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
