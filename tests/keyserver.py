"""A JWKS endpoint for the tests: a real HTTP server (a thread of the test process) whose key set a test changes while
the hub runs, and which counts the requests it gets. It also signs tokens with its keys (RS256, ES256, EdDSA)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://issuer.test"
AUDIENCE = "runcast-tests"


def new_key(alg: str) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(alg)


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algo.to_jwk(key.public_key()))
    return jwk | {"kid": kid, "use": "sig", "alg": alg}


class KeyServer:
    def __init__(self) -> None:
        self.private: dict[str, tuple[Any, str]] = {}  # kid -> (private key, alg)
        self.published: list[str] = []  # the kids the JWKS lists now
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests += 1
                body = json.dumps(
                    {"keys": [public_jwk(server.private[k][0], k, server.private[k][1]) for k in server.published]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def start(self) -> "KeyServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add(self, kid: str, alg: str, publish: bool = True) -> None:
        self.private[kid] = (new_key(alg), alg)
        if publish:
            self.published.append(kid)

    def sign(self, kid: str, sub: str = "erin", ttl: float = 600, **claims: Any) -> str:
        key, alg = self.private[kid]
        now = int(time.time())
        body = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl} | claims
        return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers={"kid": kid})
