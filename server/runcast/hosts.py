"""Which Host a request may name, and which browser Origin may open `/ws`: plain rules, and one ASGI middleware.

- **Allowed hosts** (`--allowed-hosts`, like Starlette's TrustedHostMiddleware, which cannot parse an IPv6 Host):
  a request whose Host header names another site is refused with 400 before it reaches the app, HTTP and WebSocket
  alike. That is what stops DNS rebinding: a page on `evil.example` whose name now resolves to 127.0.0.1 still
  sends `Host: evil.example`. `*` allows any host; `*.example.com` any subdomain of it.
- **Origin** (for `/ws`): a browser's Origin must be the hub's own origin (same scheme, host and port, default ports
  filled in) or one of `--allow-origin`. `https://hub` does not match a hub reached over plain `http`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.responses import PlainTextResponse

WILDCARD_BINDS = ("", "0.0.0.0", "::", "[::]")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_DEFAULT_PORT = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def default_allowed_hosts(bind_host: str) -> list[str] | None:
    """The bind host and localhost; None (any host) when bound to every address, where the name is not known."""
    if bind_host in WILDCARD_BINDS:
        return None
    return list(dict.fromkeys([bind_host.strip("[]").lower(), *LOCAL_HOSTS]))


def split_host(value: str) -> tuple[str, int | None] | None:
    """'Example.com:8080' -> ('example.com', 8080); '[::1]:80' -> ('::1', 80); None when it is no host."""
    value = value.strip()
    if not value or any(c in value for c in "/@ \t?#\\"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_s = rest[1:] if rest else ""
    elif value.count(":") == 1:
        host, port_s = value.split(":")
    elif ":" in value:  # a bare IPv6 address
        host, port_s = value, ""
    else:
        host, port_s = value, ""
    if port_s and not (port_s.isdigit() and 0 < int(port_s) < 65536):
        return None
    return host.lower().rstrip("."), int(port_s) if port_s else None


def host_allowed(host_header: str, allowed: list[str] | None) -> bool:
    if allowed is None or "*" in allowed:
        return True
    parsed = split_host(host_header)
    if parsed is None:
        return False
    host = parsed[0]
    for pattern in allowed:
        p = pattern.lower().strip("[]")
        if host == p or (p.startswith("*.") and host.endswith(p[1:])):
            return True
    return False


def origin_matches(origin: str, scheme: str, host_header: str) -> bool:
    """Is `origin` the origin of a request made with `scheme` to `host_header`? Scheme, host and port must agree."""
    try:
        o = urlsplit(origin)
        o_port = o.port
    except ValueError:
        return False
    own = split_host(host_header)
    if not o.scheme or not o.hostname or own is None or o.path not in ("", "/"):
        return False
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    if o.scheme.lower() != scheme:
        return False
    own_host, own_port = own
    return o.hostname.lower().rstrip(".") == own_host and (o_port or _DEFAULT_PORT.get(scheme)) == (
        own_port or _DEFAULT_PORT.get(scheme)
    )


def from_own_page(headers: Any, scheme: str, allowed_origins: list[str]) -> bool:
    """Does this request (with a cookie that could make it act for someone) come from the hub's own page? Its Origin
    is this hub (or one of --allow-origin, never '*'); or, where the browser hides the Origin (`null` under the
    page's Referrer-Policy: no-referrer, for a form POST), its Sec-Fetch-Site says same-origin: browsers set that
    header themselves and no page can forge it."""
    origin = headers.get("origin")
    if origin and origin != "null":
        return origin in allowed_origins or origin_matches(origin, scheme, headers.get("host", ""))
    return headers.get("sec-fetch-site") == "same-origin"


class AllowedHosts:
    """ASGI middleware: 400 for a request (HTTP or WebSocket upgrade) whose Host is not allowed."""

    def __init__(self, app: Any, allowed: list[str] | None) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.allowed is not None:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not host_allowed(host, self.allowed):
                response = PlainTextResponse(
                    "unknown host: this hub answers to its own names only (--allowed-hosts)\n", status_code=400
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
