"""Security headers on every HTTP answer of the hub (README, "The page's security headers").

The page loads only its own files: one module script and one stylesheet from `/static/`, the client from
`/client/src/`, and it talks to `/api/` and `/ws` on its own origin. So the policy can be strict:

- `Content-Security-Policy`: scripts, styles, connections and images from the hub's own origin only; no inline
  script or style, no `eval`, no plugins, no `<base>`; forms post nowhere else; and `frame-ancestors 'none'`, so no
  site can frame the page to make someone click Approve (clickjacking). An injected `<script>` would not run.
- `X-Content-Type-Options: nosniff`: a JSON answer or an uploaded-looking file is never run as a script.
- `Referrer-Policy: no-referrer`: the page's address (which may carry `#token=`; fragments are never sent, but
  paths and queries would be) does not leak to other sites.
"""

from __future__ import annotations

from typing import Any

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers that predate it
]
_NAMES = {name for name, _ in HEADERS}


class SecurityHeaders:
    """ASGI middleware: adds HEADERS to every HTTP response (a header the app set itself is left as it is)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                message = {
                    **message,
                    "headers": [*message.get("headers", []), *((k, v) for k, v in HEADERS if k not in have)],
                }
            await send(message)

        await self.app(scope, receive, send_with_headers)
