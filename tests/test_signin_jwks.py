"""Tokens signed with a team's own keys (--jwks-url): RS256, ES256 and EdDSA in hello and on the HTTP API, roles and
names from the configured claims, key rotation without a restart, a bounded refetch for unknown kids, and HS256 with
RUNCAST_SECRET beside them. The JWKS is served by a real HTTP server the test changes while the hub runs."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import websockets

from hubtest import ALICE, Cluster
from keyserver import AUDIENCE, ISSUER, KeyServer

REFETCH_S = 1.5


@pytest.fixture(scope="module")
def keys() -> Iterator[KeyServer]:
    ks = KeyServer().start()
    for kid, alg in [("rsa-1", "RS256"), ("ec-1", "ES256"), ("ed-1", "EdDSA")]:
        ks.add(kid, alg)
    yield ks
    ks.stop()


@pytest.fixture(scope="module")
def hub(keys: KeyServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("jwks"),
        "memory",
        env={"RUNCAST_JWKS_MIN_REFETCH_S": str(REFETCH_S)},
        serve_args=[
            "--jwks-url",
            keys.url,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--roles-claim",
            "realm_access.roles",
            "--name-claim",
            "preferred_username",
        ],
    ).start()
    yield cluster
    cluster.stop()


async def hello(hub: Cluster, token: str | None) -> dict[str, Any]:
    async with websockets.connect(hub.ws_url(), subprotocols=["runcast.v1.json"]) as ws:  # type: ignore[list-item]
        await ws.send(json.dumps({"type": "hello", "id": "h", **({"token": token} if token else {})}))
        return json.loads(await asyncio.wait_for(ws.recv(), 10))


def claims(name: str, *roles: str) -> dict[str, Any]:
    return {"preferred_username": name, "realm_access": {"roles": list(roles)}}


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1", "ed-1"])
async def test_each_algorithm_is_welcomed_with_its_name_and_roles(hub: Cluster, keys: KeyServer, kid: str) -> None:
    frame = await hello(hub, keys.sign(kid, "erin", **claims("Erin E.", "approver", "viewer")))
    assert frame["type"] == "welcome", frame
    assert frame["user"] == {"sub": "erin", "name": "Erin E.", "roles": ["approver", "viewer"]}
    r = httpx.get(
        hub.url + "/api/me",
        headers={"Authorization": f"Bearer {keys.sign(kid, 'erin', **claims('Erin E.', 'viewer'))}"},
    )
    assert r.status_code == 200 and r.json()["roles"] == ["viewer"], r.text


@pytest.mark.parametrize(
    "change,message",
    [
        ({"iss": "https://someone-else.test"}, "issuer"),
        ({"aud": "another-app"}, "audience"),
        ({"ttl": -60}, "expired"),
        ({"exp": None}, "exp"),
    ],
)
async def test_wrong_issuer_audience_or_expiry_is_refused(
    hub: Cluster, keys: KeyServer, change: dict[str, Any], message: str
) -> None:
    frame = await hello(hub, keys.sign("rsa-1", **change))
    assert frame["type"] == "error" and frame["code"] == "unauthenticated", frame
    assert message in frame["message"].lower()
    r = httpx.get(hub.url + "/api/me", headers={"Authorization": f"Bearer {keys.sign('rsa-1', **change)}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


async def test_a_key_the_set_does_not_publish_is_refused(hub: Cluster, keys: KeyServer) -> None:
    keys.add("rsa-unpublished", "RS256", publish=False)
    frame = await hello(hub, keys.sign("rsa-unpublished"))
    assert frame["code"] == "unauthenticated" and "rsa-unpublished" in frame["message"], frame
    # a token signed by an unpublished key but naming a published kid: the signature check refuses it
    forged = keys.sign("rsa-unpublished").split(".")
    real = keys.sign("rsa-1").split(".")
    frame = await hello(hub, ".".join([real[0], forged[1], forged[2]]))
    assert frame["code"] == "unauthenticated" and "signature" in frame["message"].lower(), frame


async def test_hs256_with_the_secret_still_works_beside_them(hub: Cluster) -> None:
    frame = await hello(hub, ALICE)
    assert frame["type"] == "welcome" and frame["user"]["sub"] == "alice", frame


async def test_rotation_is_seen_without_a_restart_and_unknown_kids_cannot_hammer_the_issuer(
    hub: Cluster, keys: KeyServer
) -> None:
    assert (await hello(hub, keys.sign("rsa-1")))["type"] == "welcome"  # the set is cached
    before = keys.requests
    for _ in range(5):  # known keys: no request per connection
        assert (await hello(hub, keys.sign("ec-1")))["type"] == "welcome"
    assert keys.requests == before

    keys.add("rsa-2", "RS256")  # the issuer rotates: a new key appears in its JWKS
    await asyncio.sleep(REFETCH_S)  # (past the refetch interval since the last fetch)
    frame = await hello(hub, keys.sign("rsa-2", "frank", **claims("Frank", "operator")))
    assert frame["type"] == "welcome" and frame["user"]["roles"] == ["operator"], frame
    fetched = keys.requests
    assert fetched == before + 1

    # a flood of made-up kids: at most one more fetch per interval, not one per connection
    started = time.monotonic()
    frames = await asyncio.gather(*(hello(hub, _with_kid(keys.sign("rsa-1"), f"made-up-{i}")) for i in range(30)))
    intervals = (time.monotonic() - started) / REFETCH_S
    assert all(f["code"] == "unauthenticated" for f in frames), frames
    assert keys.requests - fetched <= 1 + int(intervals), (keys.requests - fetched, intervals)


def _with_kid(token: str, kid: str) -> str:
    import base64

    head, body, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    new = base64.urlsafe_b64encode(json.dumps(header | {"kid": kid}).encode()).rstrip(b"=").decode()
    return ".".join([new, body, sig])
